"""MindSpore Lite: the native engine's set-up and its errors, the mslite ONNX form, and the oracle cases end to end.

The engine runs in fresh processes (tests/fresh_process.py): its libmindspore_core.so cannot share a process with
MindSpore's, which this session imports for its exports. Where the engine is not set up the engine tests skip with
the reason, except in CI, which sets it up (.ci/run) and must run them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime.backends import BackendError, backend_available
from runtime.backends.mslite_native import build
from tests.fresh_process import REPO, run as run_fresh
from tests.helpers import rel_l2

FP32_TOL = 1e-4            # oracle/README.md: fp32, every float key
UINT8_TOL = 1
# cond_576: the official cond_latent within 1e-5 on ONNX Runtime, OpenVINO and MindSpore (tests/test_vae_576.py).
# MindSpore Lite 2.0's CPU kernels reach 1.96e-5-2.03e-5 on it (ORT on the same mslite-form graph: 5.3e-6): its
# error grows ~3x faster along the encoder's conv/GroupNorm chain and is amplified by the mid-block softmax over
# 5184 keys; 3x3 Winograd (10x less precise than direct conv per layer) explains only 4% of it. Not met for Lite;
# this bound is what it measures, with margin (benchmarks/README.md, MindSpore Lite).
LITE_COND_576_TOL = 2.5e-5


def needs_engine() -> None:
    ok, why = backend_available("mslite")
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the MindSpore Lite tests, but the engine is not set up: {why}")
    pytest.skip(f"mslite: {why}")


def _fresh_python(code: str, env=None, args=()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=str(REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, timeout=300)


# ----------------------------------------------------------------------------------------------- set-up, errors


def test_missing_engine_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SV3D_CACHE_DIR", str(tmp_path))
    why = build.problem()
    if build.platform_problem():
        assert "x86-64 Linux" in why
        return
    assert "not set up" in why and build.SETUP_COMMAND in why and str(tmp_path) in why
    ok, reason = backend_available("mslite")
    assert not ok and build.SETUP_COMMAND in reason


def test_missing_compiler_is_named_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("SV3D_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-sv3d")
    if build.platform_problem():
        pytest.skip(build.platform_problem())
    with pytest.raises(BackendError, match="no C\\+\\+ compiler.*apt-get install g\\+\\+"):
        build.setup()
    assert not any(tmp_path.iterdir()), "nothing may be downloaded or left when the compiler is missing"


def test_a_changed_shim_needs_a_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("SV3D_CACHE_DIR", str(tmp_path))
    lay = build.layout()
    lay.lib.mkdir(parents=True)
    lay.library.write_bytes(b"")
    lay.stamp.write_text(json.dumps({"shim_sha256": "0" * 64}))
    if build.platform_problem():
        pytest.skip(build.platform_problem())
    assert "another shim.cc" in build.problem()
    lay.stamp.write_text(json.dumps({"shim_sha256": build._sha256(build.SHIM_SOURCE)}))
    assert build.problem() is None


def test_status_command_exits_1_when_not_ready(tmp_path):
    env = {**os.environ, "SV3D_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "runtime.backends.mslite_native", "status"], cwd=str(REPO),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "not ready" in done.stdout


def test_engine_refuses_a_process_with_mindspore():
    needs_engine()
    done = _fresh_python("import mindspore\nfrom runtime.backends.mslite_native import engine\n"
                         "try:\n    engine()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    assert "BackendError" in done.stdout and "cannot load in a process where MindSpore is loaded" in done.stdout


def test_native_engine_needs_the_mslite_format_and_the_cpu():
    from runtime.backends.base import DeviceSpec, RunOptions
    from runtime.backends.mslite_backend import build_model, binding

    if binding() != "native":
        pytest.skip("the official mindspore_lite package is installed")
    with pytest.raises(BackendError, match="reads MindIR version 1.*--formats mslite"):
        build_model("unet.mindir", DeviceSpec("cpu"), RunOptions(), "mindir")
    with pytest.raises(BackendError, match="runs on the CPU only"):
        build_model("unet.ms", DeviceSpec("cuda"), RunOptions(), "mslite")


# ------------------------------------------------------------------------------- the engine on a small ONNX graph

SMALL_GRAPH = r'''
import numpy as np, onnx, onnx.helper as h, onnxruntime as ort, sys
from onnx import TensorProto as TP, numpy_helper as nh
from runtime.backends.mslite_native import engine
rng = np.random.default_rng(0)
W = nh.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
M = nh.from_array(rng.standard_normal((16, 8)).astype(np.float32), "M")
shape = nh.from_array(np.array([1, 4, 16], np.int64), "shape")
nodes = [h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),   # no strides/dilations
         h.make_node("Reshape", ["c", "shape"], ["r"]),
         h.make_node("MatMul", ["r", "M"], ["m"]),
         h.make_node("Softmax", ["m"], ["s"], axis=-1),
         h.make_node("Gelu", ["s"], ["y"], domain="com.microsoft")]
g = h.make_graph(nodes, "small", [h.make_tensor_value_info("x", TP.FLOAT, [1, 3, 4, 4])],
                 [h.make_tensor_value_info("y", TP.FLOAT, [1, 4, 8])], [W, M, shape])
model = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
d = sys.argv[1]
onnx.save(model, d + "/raw.onnx")
from pathlib import Path
from export.onnx_fuse import FORMS, fuse_file
report = fuse_file(Path(d + "/raw.onnx"), Path(d + "/small.onnx"), None, FORMS["mslite"])
lite = engine()
path = lite.convert_onnx(d + "/small.onnx", d + "/small.ms")
m = lite.build(path, threads=1)
x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
y = m.predict([x])[0]
ref = ort.InferenceSession(d + "/raw.onnx").run(None, {"x": x})[0]
print("IO", m.inputs, m.outputs)
print("REL", float(np.linalg.norm(y - ref) / np.linalg.norm(ref)), "CONV", report.fused["conv_attributes"])
'''


def test_native_engine_converts_and_runs_an_onnx_graph(tmp_path):
    """Conv without strides/dilations (written out by the mslite form), Reshape, MatMul, Softmax and
    com.microsoft.Gelu: converted to .ms by Lite's converter, built and run on Lite against ONNX Runtime; the
    declared I/O keeps the ONNX names, shapes (NCHW) and dtypes."""
    needs_engine()
    done = subprocess.run([sys.executable, "-c", SMALL_GRAPH, str(tmp_path)], cwd=str(REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    io = next(line for line in done.stdout.splitlines() if line.startswith("IO "))
    assert "('x', (1, 3, 4, 4), 'float32')" in io and "('y', (1, 4, 8), 'float32')" in io
    rel = next(line for line in done.stdout.splitlines() if line.startswith("REL ")).split()
    assert float(rel[1]) < 1e-5 and rel[3] == "1"


# Lite's CPU tanh differs from float64 numpy by up to ~1e-4 on the toy graphs (as MindSpore's does)
TOY_LITE_TOL = 3e-4
TOY_ON_LITE = r'''
import sys, numpy as np
from runtime.backends import load_graphs
from runtime.manifest import Manifest
from tests.toy_graphs import write_toy_export
folder, ref = write_toy_export(sys.argv[1], formats=("mslite",))
for name, runner in load_graphs(Manifest.load(folder), backend="mslite").items():
    feeds = runner.spec.example_inputs(seed=1)
    got = runner.run(feeds)[runner.spec.output_names[0]]
    want = ref[name](**{k: v.astype(np.float64) for k, v in feeds.items()})
    print("ERR", name, float(np.abs(got - want).max()))
'''


def test_toy_export_runs_on_the_native_engine(tmp_path):
    """The toy export (tests/toy_graphs.py) converted by the exporter's own Lite step, in a process without
    MindSpore: every graph like numpy, then `python -m runtime --backend mslite` end to end."""
    needs_engine()
    pytest.importorskip("onnx_ir", reason="the exporter's mslite form is written with onnx_ir")
    from runtime.sample_data import sample_image_path
    from runtime.specs import GRAPH_NAMES

    export, out = tmp_path / "export", tmp_path / "out"
    done = _fresh_python(TOY_ON_LITE, args=[export])
    assert done.returncode == 0, done.stdout[-3000:]
    errors = {w[1]: float(w[2]) for w in (line.split() for line in done.stdout.splitlines()) if w[:1] == ["ERR"]}
    assert set(errors) == set(GRAPH_NAMES) and max(errors.values()) < TOY_LITE_TOL, errors
    run = subprocess.run([sys.executable, "-m", "runtime", "--graphs", str(export), str(sample_image_path()), "-o",
                          str(out), "--backend", "mslite", "--steps", "2", "--quiet"], cwd=str(REPO),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((out / "object" / "info.json").read_text())
    assert info["backend"] == "mslite" and info["num_steps"] == 2


# ----------------------------------------------------------------------------------------- the oracle cases

CASES = {"sv3d_u_64": "sv3d_u_tiny", "sv3d_p_64_default": "sv3d_p_tiny"}


@pytest.fixture(scope="module")
def mslite_exports(oracle, export_cache):
    """{case: export folder}: the oracle's tiny checkpoints exported at 64 px in the mslite format (gate on)."""
    needs_engine()
    pytest.importorskip("mindspore", reason="exporting needs mindspore")
    from benchmarks.exporting import ensure_export

    return {case: ensure_export(cfg, oracle / cfg / "checkpoint.safetensors", cache=export_cache, resolution=64,
                                formats="mslite", parity="auto")
            for case, cfg in CASES.items()}


@pytest.mark.export
@pytest.mark.parametrize("case", list(CASES))
def test_end_to_end_parity_on_mslite(mslite_exports, oracle, case_data, case, tmp_path):
    """The public API on the mslite backend, the oracle's inputs and noise: latents after 4 and 50 steps, frames
    and uint8 frames against the official code's outputs."""
    from runtime.manifest import Manifest

    _, inputs, ref = case_data(case)
    m = Manifest.load(mslite_exports[case])
    assert m.formats() == ("mslite",)
    assert {m.entry("mslite", g).form for g in m.graphs["mslite"]} == {"mslite"}
    np.savez(tmp_path / "inputs.npz", **inputs)
    got = run_fresh(["generate", mslite_exports[case], "mslite", tmp_path / "inputs.npz", tmp_path / "out.npz",
                     "4,50"], tmp_path / "out.npz")
    assert str(got["backend"]) == "mslite"
    errors = {}
    for steps in (4, 50):
        errors[f"latents_{steps}"] = rel_l2(got[f"latents_{steps}"], ref[f"latents_{steps}"])
        if f"frames_{steps}" in ref:
            errors[f"frames_{steps}"] = rel_l2(got[f"frames_{steps}"], ref[f"frames_{steps}"])
        diff = np.abs(got[f"frames_{steps}_uint8"].astype(np.int16) - ref[f"frames_{steps}_uint8"].astype(np.int16))
        errors[f"frames_{steps}_uint8_maxdiff"] = int(diff.max())
    print(f"\nparity {case} mslite: " + ", ".join(f"{k}={v:.3g}" for k, v in errors.items()))
    for k, v in errors.items():
        assert v <= (UINT8_TOL if k.endswith("maxdiff") else FP32_TOL), f"{case} mslite {k} = {v}"


@pytest.mark.export
def test_cond_576_latent_on_mslite(oracle, case_data, tmp_path):
    """The VAE encoder written by the exporter at 576 px in the mslite form, run on Lite, against the official
    cond_latent (331,776-value GroupNorm groups): within LITE_COND_576_TOL."""
    needs_engine()
    pytest.importorskip("mindspore", reason="exporting needs mindspore")
    from export import ExportOptions
    from export.api import Exporter, graph_entry, plan, write_manifest
    from runtime.specs import graph_specs

    out = tmp_path / "export"
    p = plan(ExportOptions(config="sv3d_u_tiny", checkpoint=str(oracle / "sv3d_u_tiny" / "checkpoint.safetensors"),
                           out=str(out), resolution=576, formats="mslite", parity="off", isolate="off", quiet=True))
    out.mkdir(parents=True)
    written = Exporter(p, out).write_graph("vae_encoder", p.shapes, out, iso=False)
    spec = graph_specs(p.cfg, p.shapes)["vae_encoder"]
    model, files, _ = written["mslite"]
    write_manifest(out, p.cfg, p.shapes, {"mslite": {"vae_encoder": graph_entry(spec, "mslite", model, files, out,
                                                                                "mslite")}})
    _, inputs, ref = case_data("cond_576")
    x = (inputs["image_m11"] + inputs["cond_aug"] * inputs["cond_noise"]).astype(np.float32)
    np.savez(tmp_path / "feeds.npz", image=x)
    got = run_fresh(["graph", out, "vae_encoder", "mslite", tmp_path / "feeds.npz", tmp_path / "out.npz"],
                    tmp_path / "out.npz")["latent"]
    err = rel_l2(got, ref["sv3d_u_tiny__cond_latent"])
    print(f"\ncond_576 mslite: rel_l2 {err:.3g}")
    assert err <= LITE_COND_576_TOL
