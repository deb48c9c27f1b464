"""The opt-in int8 UNet (export/int8.py, ``--precision int8`` on openvino): what it refuses, and its measured error
on the oracle cases against the official fp32 outputs, beside the official code's own bf16-autocast error."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from runtime import Manifest, SV3DPipeline
from runtime.backends import BackendError, RunOptions, graph_entry, refuse_unhonoured
from tests.test_pipeline import AUTOCAST_BOUNDS, CASES, reduced_precision_errors

# Measured here (sv3d_*_tiny at 64 px, w8a8, calibrated on 1 image x 4 steps; benchmarks/README.md section 8), with
# a margin. Far outside the official bf16-autocast bounds (AUTOCAST_BOUNDS["bf16"]): the tiny random-weight models
# quantize badly, which is why int8 is opt-in and never chosen by auto. With real weights the error must be
# measured again before anyone relies on it.
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
