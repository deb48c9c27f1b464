"""The opt-in int8 UNet (export/int8.py, ``--precision int8`` on openvino): what it refuses, and its measured error
on the oracle cases against the official fp32 outputs, beside the official code's own bf16-autocast error."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from runtime import Manifest, SV3DPipeline, sample_image_path
from runtime.backends import BackendError, RunOptions, graph_entry, refuse_unhonoured
from tests.test_pipeline import AUTOCAST_BOUNDS, CASES, reduced_precision_errors

# Measured here (sv3d_*_tiny at 64 px, w8a8, calibrated on 1 image x 4 steps, GroupNorm means in float: latents_4
# 0.540 / 0.544, frames_4 0.27; benchmarks/README.md section 8), with a margin. Far outside the official
# bf16-autocast bounds (AUTOCAST_BOUNDS["bf16"]): the tiny random-weight models quantize badly, which is why int8 is
# opt-in and never chosen by auto. With real weights the error must be measured again before anyone relies on it.
INT8_BOUNDS = {"latents_4": 0.75, "frames_4": 0.40}      # uint8 frames: reported, not bounded (up to 255 off)


def test_int8_needs_openvino():
    for backend in ("onnxruntime", "mindspore", "mslite"):
        with pytest.raises(BackendError, match=f"the {backend} backend cannot honour precision='int8'"):
            refuse_unhonoured(backend, RunOptions(precision="int8"))
    refuse_unhonoured("openvino", RunOptions(precision="int8"))


def test_int8_needs_the_int8_graph(toy_export):
    folder, _ = toy_export
    manifest = Manifest.load(folder)
    with pytest.raises(BackendError, match="has no int8 unet.*python -m export.int8 --graphs"):
        graph_entry(manifest, "openvino", "unet", RunOptions(precision="int8"))
    # the graphs that are not quantized load as they are
    assert graph_entry(manifest, "openvino", "vae_decoder", RunOptions(precision="int8")).format == "onnx"


def test_cli_offers_int8():
    from runtime.cli import Options

    from dataclasses import fields

    choices = next(f for f in fields(Options) if f.name == "precision").metadata["choices"]
    assert "int8" in choices


@pytest.fixture(scope="module")
def int8_exports(oracle_export, tmp_path_factory):
    """{case: a copy of the oracle export with its int8 UNet added (calibrated on the sample image, 4 steps)}."""
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    from export.int8 import add_int8

    out = {}
    for case, cfg in CASES.items():
        folder = tmp_path_factory.mktemp("int8") / cfg
        shutil.copytree(oracle_export(cfg), folder)
        add_int8(folder, steps=4, mode="w8a8", check=False, progress=lambda _: None)
        out[case] = folder
    return out


@pytest.mark.export
def test_the_int8_graph_is_recorded(int8_exports):
    m = Manifest.load(int8_exports["sv3d_u_64"])
    entry = m.entry("openvino_int8", "unet")
    assert entry.form == "nncf-w8a8" and entry.model_file == "openvino_int8/unet.xml"
    assert entry.spec == m.entry("onnx", "unet").spec
    m.verify_files("openvino_int8", names=("unet",))
    assert m.parity["int8"]["samples"] == 4 and m.tools["nncf"]


@pytest.mark.export
@pytest.mark.parametrize("case", list(CASES))
def test_int8_error_on_the_oracle_cases(int8_exports, case_data, case, tmp_path):
    from runtime.backends.openvino_backend import cpu_supports_bf16

    _, inputs, ref = case_data(case)
    pipe = SV3DPipeline.from_export(int8_exports[case], backend="openvino", precision="int8",
                                    cache_dir=str(tmp_path / "cache"))
    rest = "bf16" if cpu_supports_bf16() else "f32"
    assert pipe.precisions == {"clip_encoder": "f32", "vae_encoder": "f32", "unet": "int8", "vae_decoder": rest}
    runtime_model = pipe.runners["unet"].compiled.get_runtime_model()
    int8_kernels = [op for op in runtime_model.get_ordered_ops()
                    if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "Convolution")
                    and op.get_rt_info()["runtimePrecision"].astype(str) in ("u8", "i8")]
    assert int8_kernels, "no matmul or convolution of the int8 UNet runs in int8"
    errors = reduced_precision_errors(pipe, inputs, ref)
    print(f"\nint8 {case} openvino: " + ", ".join(f"{k}={v:.3g}" for k, v in errors.items())
          + f" (official bf16 autocast: {AUTOCAST_BOUNDS['bf16']})")
    assert errors["latents_4"] > AUTOCAST_BOUNDS["bf16"]["latents_4"] / 10   # it is not the f32 or bf16 UNet
    for k, bound in INT8_BOUNDS.items():
        if k in errors:
            assert errors[k] <= bound, f"{case} int8 {k} = {errors[k]:.3g} > {bound} (measured bound)"


def test_the_exporter_does_not_write_the_int8_format():
    from export.api import parse_formats
    from export.errors import ExportError

    with pytest.raises(ExportError, match="subset of mindir,onnx,mslite.*added to an export by python -m export.int8"):
        parse_formats("onnx,openvino_int8")


# -- carrying a reduced-resolution twin's quantization to the full-size graph (export/int8_twin.py) ---------------

def _toy_unet(folder, resolution):
    from tests.toy_graphs import write_toy_export

    m = Manifest.load(write_toy_export(folder, resolution=resolution).folder)
    entry = m.entry("onnx", "unet")
    return str(m.path_of(entry.model_file)), entry.spec


def _quantized(onnx_path, spec, seed=0, n=3):
    import nncf
    import openvino as ov
    from export.int8_twin import canonical_names

    rng = np.random.default_rng(seed)
    feeds = [{t.name: rng.standard_normal(t.shape).astype(np.float32) for t in spec.inputs} for _ in range(n)]
    model = nncf.quantize(canonical_names(ov.Core().read_model(onnx_path)), nncf.Dataset(feeds), subset_size=n,
                          model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED)
    return model, feeds


def _run(model, feeds):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feeds)[0]


def _count(model, kind):
    return sum(op.get_type_name() == kind for op in model.get_ordered_ops())


def test_a_twin_at_the_same_size_carries_over_exactly(tmp_path):
    """Carried into an unquantized copy of the same graph, the twin's quantization gives the twin's own outputs,
    bit for bit: every inserted node (FakeQuantize, SmoothQuant scale, int8 weights) is rebuilt, none is missed."""
    pytest.importorskip("nncf")
    import openvino as ov
    from export.int8_twin import carry_quantization

    path, spec = _toy_unet(tmp_path / "t64", 64)
    twin, feeds = _quantized(path, spec)
    carried, rerouted = carry_quantization(twin, ov.Core().read_model(path))
    assert rerouted > 0 and _count(carried, "FakeQuantize") == _count(twin, "FakeQuantize") > 0
    np.testing.assert_array_equal(_run(carried, feeds[0]), _run(twin, feeds[0]))
    assert np.abs(_run(carried, feeds[0]) - _run(path, feeds[0])).max() > 0      # and it is quantized


def test_a_lower_resolution_twin_carries_to_the_full_size(tmp_path):
    """Calibrated at 32 px, carried to the 64 px graph: the 64 px graph keeps its own shapes and runs int8, within
    the int8 error of a direct calibration at 64 px (both against the f32 graph, on the same 64 px inputs)."""
    pytest.importorskip("nncf")
    import openvino as ov
    from export.int8_twin import carry_quantization

    small, small_spec = _toy_unet(tmp_path / "t32", 32)
    full, full_spec = _toy_unet(tmp_path / "t64", 64)
    twin, _ = _quantized(small, small_spec)
    direct, feeds = _quantized(full, full_spec, seed=1)
    carried, _ = carry_quantization(twin, ov.Core().read_model(full))
    assert [tuple(p.get_shape()) for p in carried.inputs] == [t.shape for t in full_spec.inputs]
    ref = _run(full, feeds[0])

    def err(m):
        return float(np.linalg.norm(_run(m, feeds[0]) - ref) / np.linalg.norm(ref))

    assert 0 < err(carried) < max(3 * err(direct), 0.05), (err(carried), err(direct))


def test_a_twin_of_another_graph_is_refused(tmp_path):
    pytest.importorskip("nncf")
    import openvino as ov
    from export.int8_twin import carry_quantization
    from runtime.errors import GraphError

    path, spec = _toy_unet(tmp_path / "t64", 64)
    twin, _ = _quantized(path, spec)
    other = ov.Core().read_model(path)
    op = next(o for o in other.get_ordered_ops() if o.get_type_name() == "Convolution")
    op.set_friendly_name("renamed_conv")
    with pytest.raises(GraphError, match=r"not the same graph.*1 operator\(s\) missing from the twin.*renamed_conv"):
        carry_quantization(twin, other)



def test_a_twin_must_match_identity_and_unet_batch():
    """check_twin compares the ONNX UNet's recorded identity and the UNet batch, and nothing about the resolution."""
    from types import SimpleNamespace

    from export.int8 import INT8_GRAPH, TWIN_IDENTITY, check_twin
    from runtime.errors import GraphError

    def manifest(root, resolution, unet_batch, **changed):
        identity = {**{k: "same" for k in TWIN_IDENTITY}, **changed}
        parity = {"graphs": {INT8_GRAPH: {"formats": {"onnx": {"identity": identity}}}}}
        return SimpleNamespace(root=root, parity=parity,
                               shapes=SimpleNamespace(resolution=resolution, unet_batch=unet_batch))

    check_twin(manifest("e576", 576, 21), manifest("e256", 256, 21))
    with pytest.raises(GraphError, match=r"unet_batch 42 there, 21 here"):
        check_twin(manifest("e576", 576, 21), manifest("e256", 256, 42))
    with pytest.raises(GraphError, match=r"weights_sha256 'other' there, 'same' here"):
        check_twin(manifest("e576", 576, 21), manifest("e256", 256, 21, weights_sha256="other"))
    with pytest.raises(GraphError, match="records no identity"):
        check_twin(manifest("e576", 576, 21), SimpleNamespace(root="old", parity={}, shapes=None))

def _int8_output(folder, feeds):
    import openvino as ov

    m = Manifest.load(folder)
    return _run(ov.Core().read_model(str(m.path_of(m.entry("openvino_int8", "unet").model_file))), feeds)


@pytest.mark.export
def test_int8_through_a_twin_on_the_oracle_case(oracle_export, case_data, tmp_path):
    """export.int8 --twin on real exported graphs (the mechanics; a lower-resolution twin is the next test): with a
    twin of the same shapes, the carried int8 UNet is the directly quantized one bit for bit, its oracle error is
    within the int8 bound, and a twin of another checkpoint is refused, naming what differs."""
    pytest.importorskip("nncf")
    from export.int8 import add_int8
    from runtime.errors import GraphError

    cfg = CASES["sv3d_u_64"]
    folders = {k: tmp_path / k for k in ("carried", "twin", "direct")}
    for f in folders.values():
        shutil.copytree(oracle_export(cfg), f)
    with pytest.raises(GraphError, match="is not an export of the same UNet.*config_sha256"):
        add_int8(folders["carried"], steps=1, twin=oracle_export(CASES["sv3d_p_64_default"]), progress=lambda _: None)
    m = add_int8(folders["carried"], steps=4, twin=folders["twin"], progress=lambda _: None)
    add_int8(folders["direct"], steps=4, progress=lambda _: None)
    record = m.parity["int8"]
    assert record["twin"]["resolution"] == 64 and record["twin"]["rerouted_inputs"] > 0
    feeds = m.entry("onnx", "unet").spec.example_inputs(seed=0)
    np.testing.assert_array_equal(_int8_output(folders["carried"], feeds), _int8_output(folders["direct"], feeds))
    _, inputs, ref = case_data("sv3d_u_64")
    pipe = SV3DPipeline.from_export(folders["carried"], backend="openvino", precision="int8",
                                    cache_dir=str(tmp_path / "c"))
    errors = reduced_precision_errors(pipe, inputs, ref)
    for k, bound in INT8_BOUNDS.items():
        if k in errors:
            assert errors[k] <= bound, f"twin int8 {k} = {errors[k]:.3g} > {bound}"


@pytest.mark.export
def test_int8_calibrated_on_a_lower_resolution_twin(export_cache, oracle, tmp_path):
    """A 128 px export of the tiny sv3d_u checkpoint, its UNet quantized through a 96 px export: it keeps its own
    shapes, runs int8, and a 2-step generation stays within the int8 bound of the f32 one (latents). (The tiny
    UNet's graph at 64 px or less is not the same graph: MindSpore simplifies a few reshapes there.)"""
    pytest.importorskip("nncf")
    from benchmarks.exporting import ensure_export
    from export.int8 import add_int8

    cfg = CASES["sv3d_u_64"]

    def export(resolution):
        return ensure_export(cfg, oracle / cfg / "checkpoint.safetensors", cache=export_cache,
                             resolution=resolution, parity="off")

    folder = tmp_path / "e128"
    shutil.copytree(export(128), folder)
    m = add_int8(folder, steps=2, twin=export(96), progress=lambda _: None)
    assert m.parity["int8"]["twin"]["resolution"] == 96 and m.shapes.resolution == 128
    image = str(sample_image_path())
    latents = {}
    for precision in ("f32", "int8"):
        pipe = SV3DPipeline.from_export(folder, backend="openvino", precision=precision,
                                        cache_dir=str(tmp_path / "c"))
        latents[precision] = pipe.generate(image, num_steps=2, seed=0).latents
    assert latents["int8"].shape == latents["f32"].shape and latents["f32"].shape[-1] == 128 // 8
    err = float(np.linalg.norm(latents["int8"] - latents["f32"]) / np.linalg.norm(latents["f32"]))
    print(f"\nint8 at 128 px calibrated at 96 px: latents_2 rel L2 against f32 {err:.3g}")
    assert 0 < err <= INT8_BOUNDS["latents_4"]
