"""Backends over the toy export (tests/helpers.py, the session's `toy_export`): four small graphs with the real SV3D
graph contracts (names, shapes), exported by MindSpore to MindIR and ONNX with a manifest, plus the same functions
in numpy as the reference.
"""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import (BackendError, DeviceSpec, RunOptions, backend_available, check_engine_io,
                              graph_input_name, load_graph, load_graphs, resolve_backend)
from runtime.errors import GraphError, SV3DError
from runtime.manifest import Manifest
from runtime.specs import GRAPH_NAMES
from tests.helpers import REPO, edit_manifest

# MindSpore's CPU tanh/matmul kernels differ from float64 numpy by up to ~1e-4 on the toy graphs; ORT by ~1e-6.
TOY_TOL = {"onnxruntime": 1e-5, "mindspore": 3e-4}
LOCAL_BACKENDS = ("onnxruntime", "mindspore")


@pytest.fixture(scope="module")
def toy(toy_export):
    """(folder, numpy reference functions): the session's toy export; tests that edit it work on a _copy."""
    return toy_export


def _copy(folder, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "export"
    shutil.copytree(folder, dst)
    return dst


# ----------------------------------------------------------------------------------------------------------------
# import hygiene


def test_import_runtime_needs_numpy_only():
    code = ("import sys, runtime, runtime.backends, runtime.pipeline, runtime.outputs, runtime.cli;"
            "heavy = ('mindspore', 'mindspore_lite', 'onnxruntime', 'onnx', 'PIL', 'imageio', 'tqdm', 'torch',"
            " 'models', 'export');"
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ----------------------------------------------------------------------------------------------------------------
# running graphs


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_backend_runs_every_graph_like_numpy(toy, backend):
    folder, ref = toy
    runners = load_graphs(Manifest.load(folder), backend=backend)
    assert set(runners) == set(GRAPH_NAMES)
    for name, runner in runners.items():
        assert runner.spec == Manifest.load(folder).entry("onnx", name).spec
        feeds = runner.spec.example_inputs(seed=1)
        out = runner.run(feeds)
        assert list(out) == list(runner.spec.output_names)
        got = out[runner.spec.output_names[0]]
        assert got.dtype == np.float32 and got.shape == runner.spec.outputs[0].shape
        want = ref[name](**{k: v.astype(np.float64) for k, v in feeds.items()})
        err = np.abs(got - want).max()
        assert err < TOY_TOL[backend], f"{backend} {name}: max abs error {err}"


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_inputs_bind_by_name_not_order(toy, backend):
    folder, ref = toy
    runner = load_graph(Manifest.load(folder), "unet", backend=backend)
    feeds = runner.spec.example_inputs(seed=2)
    reordered = dict(reversed(list(feeds.items())))
    a, b = runner.run(feeds)["out"], runner.run(reordered)["out"]
    np.testing.assert_array_equal(a, b)
    # float64 feeds are cast to the spec's float32
    c = runner.run({k: v.astype(np.float64) for k, v in feeds.items()})["out"]
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_feeds_are_checked_against_the_spec(toy, backend):
    folder, _ = toy
    runner = load_graph(Manifest.load(folder), "unet", backend=backend)
    feeds = runner.spec.example_inputs()
    with pytest.raises(GraphError, match=r"missing \['y'\]"):
        runner.run({k: v for k, v in feeds.items() if k != "y"})
    with pytest.raises(GraphError, match=r"unexpected \['vector'\]"):
        runner.run({**feeds, "vector": feeds["y"]})
    with pytest.raises(GraphError, match=r"'x' must have shape \(42, 8, 8, 8\), got \(21, 8, 8, 8\)"):
        runner.run({**feeds, "x": feeds["x"][:21]})


def test_engine_failures_become_graph_errors(toy):
    runner = load_graph(Manifest.load(toy[0]), "unet", backend="onnxruntime")

    class Exploding:
        def run(self, names, feeds):
            raise RuntimeError("Failed to allocate memory for requested buffer of size 123\nstack ...")

    runner.session = Exploding()
    with pytest.raises(GraphError, match=r"graph unet failed on onnxruntime: RuntimeError: Failed to allocate "
                                         r"memory for requested buffer of size 123 \["):
        runner.run(runner.spec.example_inputs())


# ----------------------------------------------------------------------------------------------------------------
# the graph file against the manifest


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_graph_inputs_differing_from_manifest_are_refused(toy, tmp_path, backend):
    folder = _copy(toy[0], tmp_path)
    fmt = "onnx" if backend == "onnxruntime" else "mindir"

    def rename(d):
        d["graphs"][fmt]["unet"]["inputs"][3]["name"] = "vector"
    edit_manifest(folder, rename)
    # refused when the manifest is read: its spec no longer matches the one its shapes define
    with pytest.raises(GraphError, match=r"does not match the export's shapes.*'vector'"):
        load_graph(Manifest.load(folder), "unet", backend=backend)

    folder2 = _copy(toy[0], tmp_path / "b")

    def reshape(d):
        d["graphs"][fmt]["unet"]["inputs"][2]["shape"] = [42, 1, 16]
    edit_manifest(folder2, reshape)
    with pytest.raises(GraphError, match=r"does not match the export's shapes.*context.*\(42, 1, 16\)"):
        load_graph(Manifest.load(folder2), "unet", backend=backend)


def test_mindspore_checks_argument_order(toy, tmp_path):
    """GraphCell binds by position: a manifest listing the inputs in another order than the graph is refused."""
    folder = _copy(toy[0], tmp_path)

    def swap(d):
        ins = d["graphs"]["mindir"]["unet"]["inputs"]
        ins[2], ins[3] = ins[3], ins[2]
    edit_manifest(folder, swap)
    with pytest.raises(GraphError, match="does not match the export's shapes|order matters"):
        load_graph(Manifest.load(folder), "unet", backend="mindspore")


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_checksum_and_size_are_verified_at_load(toy, tmp_path, backend):
    folder = _copy(toy[0], tmp_path)
    m = Manifest.load(folder)
    fmt = "onnx" if backend == "onnxruntime" else "mindir"
    path = folder / m.entry(fmt, "unet").model_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                                  # one flipped byte, same size
    path.write_bytes(bytes(data))
    with pytest.raises(GraphError, match=r"sha256 .* does not match the manifest"):
        load_graphs(m, backend=backend)
    m.verify_files(fmt, checksums=False)                          # size-only check passes: the flip is invisible
    path.write_bytes(bytes(data[:-10]))                           # truncated: caught even without hashing
    with pytest.raises(GraphError, match="truncated or replaced"):
        load_graphs(m, backend=backend, verify_checksums=False)


# ----------------------------------------------------------------------------------------------------------------
# selection and devices


def test_auto_order_per_device(toy, monkeypatch):
    """cpu: openvino, onnxruntime, mslite, mindspore; cuda: onnxruntime first; ascend: mslite first (AUTO_ORDER).
    The toy export has MindIR and ONNX: mslite takes MindIR only through an official mindspore_lite package (the
    native 2.0 engine reads the mslite format alone)."""
    import runtime.backends as B

    m = Manifest.load(toy[0])
    installed = {"mslite": True, "openvino": True, "onnxruntime": True, "mindspore": True}
    official_lite = {"yes": True}
    monkeypatch.setattr(B, "backend_available",
                        lambda n, try_import=False: (installed[n], "" if installed[n] else "not installed"))
    monkeypatch.setattr(B, "is_importable", lambda package: official_lite["yes"] or package != "mindspore_lite")
    assert resolve_backend("auto", m) == "openvino"
    assert resolve_backend("auto", m, "cuda") == "onnxruntime"          # openvino runs on the CPU only
    assert resolve_backend("auto", m, "ascend") == "mslite"
    installed["openvino"] = False
    assert resolve_backend("auto", m) == "onnxruntime"
    installed["onnxruntime"] = False
    assert resolve_backend("auto", m) == "mslite"
    official_lite["yes"] = False                                         # native engine: no MindIR
    assert resolve_backend("auto", m) == "mindspore"
    installed["onnxruntime"] = True
    assert resolve_backend("auto", m, "ascend") == "onnxruntime"
    installed["onnxruntime"] = False
    installed["mindspore"] = False
    with pytest.raises(BackendError, match="no backend can run this export.*native engine reads the mslite format"):
        resolve_backend("auto", m)


def test_auto_skips_an_engine_that_is_found_but_does_not_import(toy, monkeypatch):
    import runtime.backends as B

    if B.is_importable("mindspore_lite"):
        pytest.skip("mindspore_lite imports here")
    monkeypatch.setattr(B, "is_importable", lambda package: True)      # e.g. a wheel for another CPU/ABI
    assert B.backend_available("mslite")[0]
    ok, why = B.backend_available("mslite", try_import=True)
    assert not ok and "installed but does not import" in why
    assert resolve_backend("auto", Manifest.load(toy[0])) in ("openvino", "onnxruntime")


def test_auto_follows_the_formats_present(toy, tmp_path):
    import runtime.backends as B

    folder = _copy(toy[0], tmp_path)
    edit_manifest(folder, lambda d: d["graphs"].pop("onnx"))
    m = Manifest.load(folder)
    # MindIR only: an official mindspore_lite package would take it; the native Lite 2.0 engine cannot
    expected = "mslite" if backend_available("mslite", try_import=True)[0] and B.is_importable("mindspore_lite") \
        else "mindspore"
    assert resolve_backend("auto", m) == expected
    with pytest.raises(BackendError, match="reads onnx graphs, and the export .* has none"):
        resolve_backend("onnxruntime", m)


def test_unknown_backend_and_device_are_refused(toy):
    m = Manifest.load(toy[0])
    with pytest.raises(BackendError, match="unknown backend"):
        resolve_backend("tensorrt", m)
    with pytest.raises(BackendError, match="unknown device"):
        DeviceSpec("tpu")
    with pytest.raises(BackendError, match="invalid device_id"):
        DeviceSpec("cuda", -1)


def test_onnxruntime_cuda_requested_but_missing_is_a_clear_error(toy):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the missing-provider error cannot occur")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        load_graph(Manifest.load(toy[0]), "clip_encoder", backend="onnxruntime", device="cuda")


def test_onnxruntime_on_cuda_matches_cpu(toy):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with a CUDA device")
    m = Manifest.load(toy[0])
    cpu = load_graph(m, "unet", backend="onnxruntime")
    gpu = load_graph(m, "unet", backend="onnxruntime", device="cuda")
    feeds = cpu.spec.example_inputs(3)
    np.testing.assert_allclose(gpu.run(feeds)["out"], cpu.run(feeds)["out"], atol=1e-4)


def test_mindspore_device_it_was_not_built_for_is_a_clear_error(toy):
    m = Manifest.load(toy[0])
    try:
        load_graph(m, "clip_encoder", backend="mindspore", device="cuda")
    except BackendError as e:
        assert "mindspore cannot run on cuda:0 (GPU)" in str(e) and "--device cpu" in str(e)
    else:
        pytest.skip("this mindspore runs on GPU")
    runner = load_graph(m, "clip_encoder", backend="mindspore")            # the process still works on CPU
    assert runner.run(runner.spec.example_inputs())["embedding"].shape == (1, 32)


def test_threads_option_reaches_onnxruntime(toy):
    runner = load_graph(Manifest.load(toy[0]), "clip_encoder", backend="onnxruntime",
                        options=RunOptions(threads=1))
    assert runner.session.get_session_options().intra_op_num_threads == 1


def test_threads_and_cache_reach_openvino(toy, tmp_path):
    """What openvino declares it honours it applies: the thread count to the compiled model, the cache folder
    gets its compiled blob (and a second load reads it)."""
    if not backend_available("openvino")[0]:
        pytest.skip("openvino is not installed")
    m = Manifest.load(toy[0])
    runner = load_graph(m, "clip_encoder", backend="openvino", threads=1, cache_dir=str(tmp_path / "ov"),
                        precision="f32")
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1 and not runner.cached
    assert list((tmp_path / "ov").rglob("*.blob"))
    assert load_graph(m, "clip_encoder", backend="openvino", threads=1, cache_dir=str(tmp_path / "ov"),
                      precision="f32").cached


def test_on_demand_precision_asks_the_backend_not_openvino(toy):
    """A sequential pipeline reports each graph's precision before loading it, from its own backend's
    graph_precision: on onnxruntime that imports no openvino (and the precision is the export's)."""
    code = ("import sys; from runtime import SV3DPipeline;"
            f"p = SV3DPipeline.from_export({str(toy[0])!r}, backend='onnxruntime', memory='sequential');"
            "print(sorted(set(p.precisions.values())), 'openvino' in sys.modules, "
            "any(r.loaded for r in p.runners.values()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['f32']", "False", "False"], out.stdout + out.stderr


@pytest.mark.parametrize("graph, options, reuse, arena", [
    ("unet", RunOptions(), False, True),                       # the default per-graph plan
    ("vae_decoder", RunOptions(), True, False),
    ("clip_encoder", RunOptions(), True, False),
    ("unet", RunOptions(memory_reuse=True), True, False),      # RunOptions override it; the arena follows
    ("clip_encoder", RunOptions(memory_reuse=False, cpu_mem_arena=False), False, False)])
def test_memory_plan_reaches_onnxruntime(toy, graph, options, reuse, arena):
    """The UNet runs without onnxruntime's buffer-reuse plan and with its CPU arena (11.9 GiB instead of 20.75 GiB
    on the 576 px call), the straight graphs with reuse and no arena; RunOptions set either."""
    runner = load_graph(Manifest.load(toy[0]), graph, backend="onnxruntime", options=options)
    so = runner.session.get_session_options()
    assert (so.enable_mem_reuse, so.enable_cpu_mem_arena) == (reuse, arena)
    feeds = runner.spec.example_inputs(0)
    again = load_graph(Manifest.load(toy[0]), graph, backend="onnxruntime",
                       options=RunOptions(memory_reuse=not reuse, cpu_mem_arena=not arena))
    for name, out in runner.run(feeds).items():               # the memory plan changes no result
        np.testing.assert_array_equal(out, again.run(feeds)[name])


# ----------------------------------------------------------------------------------------------------------------
# MindSpore Lite


def test_graph_input_names_lose_their_prefix():
    assert graph_input_name("24_1___main___Net_construct_17:timesteps") == "timesteps"
    assert graph_input_name("x") == "x"


def test_mslite_binds_engine_tensors_by_name():
    from runtime.backends.mslite_backend import bind_inputs
    from runtime.specs import ExportShapes, graph_specs
    from configs import load_config

    spec = graph_specs(load_config("sv3d_u_tiny"), ExportShapes(64, 21, 42, 14))["unet"]
    declared = {t.name: (t.shape, t.dtype) for t in spec.inputs}

    def engine(names):
        return [(n, *declared.get(n.split(":")[-1], ((1,), "float32"))) for n in names]

    assert bind_inputs(spec, engine(["g:y", "g:x", "g:context", "g:timesteps"])) == [3, 0, 2, 1]


def _engine_io(spec):
    """The EngineTensors an engine that matches `spec` exactly reports: (inputs, outputs)."""
    return ([(t.name, t.shape, t.dtype) for t in spec.inputs], [(t.name, t.shape, t.dtype) for t in spec.outputs])


@pytest.mark.parametrize("change, message", [
    (lambda i, o: i.__setitem__(0, ("input_0",) + i[0][1:]),
     r"graph unet \(mslite\): the loaded graph's inputs \['input_0', .* do not match the manifest's \['x'"),
    (lambda i, o: i.__setitem__(0, ("x", i[0][1][::-1], "float32")),          # NHWC where NCHW was expected
     r"input 'x' has shape \(8, 8, 8, 42\) in the graph file but \(42, 8, 8, 8\) in the manifest"),
    (lambda i, o: i.__setitem__(1, ("timesteps", i[1][1], "float16")),
     r"input 'timesteps' is float16 in the graph file but float32 in the manifest"),
    (lambda i, o: o.__setitem__(0, ("output_0",) + o[0][1:]),
     r"outputs \['output_0'\] in the graph file, the manifest expects \['out'\]"),
    (lambda i, o: o.__setitem__(0, ("out", (42, 4, 8, 16), "float32")),
     r"output 'out' has shape \(42, 4, 8, 16\) in the graph file but \(42, 4, 8, 8\)"),
    (lambda i, o: o.__setitem__(0, ("out", o[0][1], "float16")),
     r"output 'out' is float16 in the graph file but float32 in the manifest")])
def test_one_io_check_names_what_differs(change, message):
    """check_engine_io, the one load-time check every backend runs: names (prefixes stripped), shapes (dynamic
    axes match anything) and dtypes of inputs and outputs, each difference named with both sides."""
    from runtime.specs import ExportShapes, graph_specs
    from configs import load_config

    spec = graph_specs(load_config("sv3d_u_tiny"), ExportShapes(64, 21, 42, 14))["unet"]
    ins, outs = _engine_io(spec)
    check_engine_io(spec, [("g:" + n, d, t) for n, d, t in ins], outs, backend="mslite", path="p")
    check_engine_io(spec, [(n, ("batch",) + d[1:], t) for n, d, t in ins], outs, backend="mslite", path="p")
    check_engine_io(spec, ins, None, backend="mslite", path="p")          # outputs not reported: not checked
    change(ins, outs)
    with pytest.raises(GraphError, match=message):
        check_engine_io(spec, ins, outs, backend="mslite", path="p")


def test_positional_engines_check_order_and_output_count():
    """MindSpore binds inputs by position and names its outputs after ops: order and output count checked."""
    from runtime.specs import ExportShapes, graph_specs
    from configs import load_config

    spec = graph_specs(load_config("sv3d_u_tiny"), ExportShapes(64, 21, 42, 14))["unet"]
    ins, outs = _engine_io(spec)
    unnamed = [("Tanh-op12", d, t) for _, d, t in outs]
    check_engine_io(spec, ins, unnamed, backend="mindspore", path="p", ordered=True, output_names=False)
    check_engine_io(spec, ins, [("o", (), None)], backend="mindspore", path="p", ordered=True, output_names=False)
    with pytest.raises(GraphError, match="order matters"):
        check_engine_io(spec, ins[::-1], unnamed, backend="mindspore", path="p", ordered=True, output_names=False)
    with pytest.raises(GraphError, match=r"2 outputs in the graph file, the manifest expects 1 \['out'\]"):
        check_engine_io(spec, ins, unnamed * 2, backend="mindspore", path="p", ordered=True, output_names=False)


def test_mslite_context_sets_target_and_device_id():
    """The documented Context layout (target list; cpu/gpu/ascend sub-contexts), checked on a stand-in object."""
    from runtime.backends.mslite_backend import make_context

    def fake_module():
        ctx = types.SimpleNamespace(target=None, cpu=types.SimpleNamespace(thread_num=0),
                                    gpu=types.SimpleNamespace(device_id=0), ascend=types.SimpleNamespace(device_id=0))
        return types.SimpleNamespace(Context=lambda: ctx)

    ctx = make_context(fake_module(), DeviceSpec("ascend", 3), RunOptions(threads=1))
    assert ctx.target == ["ascend"] and ctx.ascend.device_id == 3 and ctx.cpu.thread_num == 1
    ctx = make_context(fake_module(), DeviceSpec("cuda", 1), RunOptions())
    assert ctx.target == ["gpu"] and ctx.gpu.device_id == 1 and ctx.cpu.thread_num == 0
    assert make_context(fake_module(), DeviceSpec("cpu"), RunOptions()).target == ["cpu"]


def test_mslite_unavailable_is_a_clear_error(toy, tmp_path, monkeypatch):
    import runtime.backends as B

    if B.is_importable("mindspore_lite"):
        pytest.skip("mindspore_lite is installed here")
    monkeypatch.setenv("SV3D_CACHE_DIR", str(tmp_path))                 # no native engine set up there
    with pytest.raises(BackendError, match="backend 'mslite' is not available: no 'mindspore_lite' package, and "
                                           ".*python -m runtime.backends.mslite_native setup"):
        load_graphs(Manifest.load(toy[0]), backend="mslite")


def test_mslite_runs_every_graph_like_numpy(toy):
    try:
        import mindspore_lite  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the official mindspore_lite package is not importable here ({e}); the native engine runs "
                    "in tests/test_mslite.py")
    folder, ref = toy
    for name, runner in load_graphs(Manifest.load(folder), backend="mslite").items():
        feeds = runner.spec.example_inputs(seed=1)
        got = runner.run(feeds)[runner.spec.output_names[0]]
        want = ref[name](**{k: v.astype(np.float64) for k, v in feeds.items()})
        assert np.abs(got - want).max() < TOY_TOL["mindspore"]


# ----------------------------------------------------------------------------------------------------------------
# memory modes


def test_sequential_memory_loads_each_graph_for_its_stage_only(toy):
    """memory="sequential": every graph is loaded just before its stage and released after it; the result is the
    resident pipeline's, bit for bit, and the load time shows up as load_<graph> stages."""
    from runtime import SV3DPipeline

    folder, _ = toy
    resident = SV3DPipeline.from_export(folder, backend="onnxruntime", memory="resident")
    seq = SV3DPipeline.from_export(folder, backend="onnxruntime", memory="sequential")
    assert resident.memory == "resident" and seq.memory == "sequential"
    assert not any(r.loaded for r in seq.runners.values())               # nothing loaded up front
    image = np.zeros((1, 3, 64, 64), np.float32)
    a = resident.generate(image, seed=3, num_steps=2)
    b = seq.generate(image, seed=3, num_steps=2)
    np.testing.assert_array_equal(a.frames_uint8, b.frames_uint8)
    np.testing.assert_array_equal(a.latents, b.latents)
    assert not any(r.loaded for r in seq.runners.values())               # each released after its stage
    assert all(r.loads == 1 for r in seq.runners.values())
    assert {f"load_{g}" for g in seq.runners} <= set(b.timings.stages)
    assert not any(k.startswith("load_") for k in a.timings.stages)
    seq.generate(image, seed=3, num_steps=1)
    assert all(r.loads == 2 for r in seq.runners.values())               # the trade-off: reloads per image


def test_memory_auto_follows_the_export_size(toy, monkeypatch):
    from configs import limits
    from runtime.pipeline import resolve_memory_mode

    m = Manifest.load(toy[0])
    assert resolve_memory_mode("auto", m, "onnx") == "resident"                    # a few MB of graphs
    monkeypatch.setattr(limits, "LIMITS", limits.Limits(resident_ram_fraction=1e-12))
    assert resolve_memory_mode("auto", m, "onnx") == "sequential"
    assert resolve_memory_mode("resident", m, "onnx") == "resident"
    with pytest.raises(SV3DError, match=r"unknown memory: expected one of \['auto', 'resident', 'sequential'\]"):
        RunOptions(memory="swap")
