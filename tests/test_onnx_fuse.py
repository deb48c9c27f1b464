"""export/onnx_fuse.py: the fused ONNX form computes what the plain form computes, on both ONNX engines.

One plain ONNX export of the tiny sv3d_u oracle model (64 px, gate off) per module; each graph is fused with
`fuse_file` and both files are run on the spec's example inputs.
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import Manifest
from runtime.specs import GRAPH_NAMES
from tests.helpers import rel_l2

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx_ir")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.export          # the export tier: one plain export per module
FUSED_TOL = 1e-5          # fp32: the fused kernels reorder sums only


@pytest.fixture(scope="module")
def plain_export(oracle, tmp_path_factory):
    pytest.importorskip("mindspore", reason="exporting needs mindspore")
    from export import ExportOptions, export_graphs

    out = tmp_path_factory.mktemp("fuse") / "plain"
    export_graphs(ExportOptions(config="sv3d_u_tiny", checkpoint=str(oracle / "sv3d_u_tiny" / "checkpoint.safetensors"),
                                out=str(out), resolution=64, formats="onnx", parity="off", onnx_form="plain",
                                quiet=True))
    return Manifest.load(out)


@pytest.fixture(scope="module")
def fused(plain_export, tmp_path_factory):
    """{graph: (plain path, fused path, report)}"""
    from export.onnx_fuse import fuse_file

    folder = tmp_path_factory.mktemp("fused")
    out = {}
    for name in GRAPH_NAMES:
        src = plain_export.root / plain_export.entry("onnx", name).model_file
        dst = folder / src.name
        out[name] = (src, dst, fuse_file(src, dst))
    return out


def _ops(path: Path) -> Counter:
    m = onnx.load(str(path), load_external_data=False)
    return Counter((n.domain or "", n.op_type) for n in m.graph.node)


def _ort(path: Path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_the_plain_manifest_says_plain(plain_export):
    assert {plain_export.entry("onnx", n).form for n in GRAPH_NAMES} == {"plain"}


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_every_pattern_is_fused(fused, name):
    src, dst, report = fused[name]
    before, after = _ops(src), _ops(dst)
    # every spelled-out attention, GELU and norm of the plain graph became its fused op
    assert report.fused["attention"] == before[("", "Softmax")] > 0
    assert after[("com.microsoft", "MultiHeadAttention")] == before[("", "Softmax")]
    assert after[("", "Softmax")] == 0
    assert report.fused["gelu"] == before[("", "Abs")] == after[("com.microsoft", "Gelu")]
    assert after[("", "Abs")] == 0 and after[("", "Exp")] == 0
    assert after[("", "ReduceMean")] == 0, "a LayerNorm or GroupNorm was left spelled out"
    assert after[("", "MatMul")] - before[("", "MatMul")] == 4 * report.fused["groupnorm"] - \
        2 * report.fused["attention"]
    assert after[("", "LayerNormalization")] == report.fused["layernorm"]
    assert not report.skipped
    model = onnx.load(str(dst), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    onnx.checker.check_model(model)


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_fused_equals_plain_on_onnxruntime_and_openvino(plain_export, fused, name):
    src, dst, _ = fused[name]
    feeds = plain_export.entry("onnx", name).spec.example_inputs(0)
    plain = _ort(src, feeds)
    assert rel_l2(_ort(dst, feeds), plain) < FUSED_TOL
    from runtime.backends import backend_available

    if backend_available("openvino")[0]:
        from runtime.backends.openvino_backend import core

        got = core().compile_model(str(dst), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feeds)[0]
        assert rel_l2(got, plain) < FUSED_TOL


@pytest.mark.parametrize("only", ["attention", "gelu", "layernorm", "groupnorm"])
def test_one_fusion_alone(plain_export, tmp_path, only):
    """fuse_file(..., fusions=[one]) rewrites that pattern only (what each fusion buys is measured this way) and
    still computes the plain graph's output. The UNet holds all four patterns."""
    from export.onnx_fuse import FUSIONS, fuse_file

    src = plain_export.root / plain_export.entry("onnx", "unet").model_file
    dst = tmp_path / src.name
    report = fuse_file(src, dst, fusions=[only])
    assert report.fused[only] > 0
    assert [k for k in FUSIONS if report.fused[k]] == [only]
    before, after = _ops(src), _ops(dst)
    if only != "attention":
        assert after[("", "Softmax")] == before[("", "Softmax")] > 0
    if only != "gelu":
        assert after[("", "Abs")] == before[("", "Abs")] > 0
    feeds = plain_export.entry("onnx", "unet").spec.example_inputs(0)
    assert rel_l2(_ort(dst, feeds), _ort(src, feeds)) < FUSED_TOL


def test_geglu_split_cuts_each_projection_in_two(plain_export, fused, tmp_path):
    """geglu_split alone on the plain UNet: every GEGLU's (B, L, 2I) projection and its two Slices become two Gemms
    of I outputs each; the arithmetic is the same per output element, so the result is bit-identical. The fused
    form includes it."""
    from export.onnx_fuse import fuse_file

    src = plain_export.root / plain_export.entry("onnx", "unet").model_file
    dst = tmp_path / "unet_geglu.onnx"
    report = fuse_file(src, dst, fusions=["geglu_split"])
    before, after = _ops(src), _ops(dst)
    n = report.fused["geglu_split"]
    assert n == before[("", "Abs")] > 0           # one per GELU, and every GELU of the UNet is a GEGLU's
    assert after[("", "Gemm")] - before[("", "Gemm")] == n
    assert before[("", "Slice")] - after[("", "Slice")] == 2 * n
    feeds = plain_export.entry("onnx", "unet").spec.example_inputs(0)
    np.testing.assert_array_equal(_ort(dst, feeds), _ort(src, feeds))
    assert fused["unet"][2].fused["geglu_split"] == n


def test_unknown_fusion_is_refused(fused, tmp_path):
    from export.onnx_fuse import fuse_file

    with pytest.raises(ValueError, match="unknown fusion.*'flash'.*expected some of"):
        fuse_file(fused["vae_encoder"][0], tmp_path / "x.onnx", fusions=["flash"])


def test_heads_are_folded_where_split_heads_was_used(fused):
    # CLIP's attentions go through split_heads/merge_heads: MHA reads (B, N, heads*d) and the transposes go
    _, _, report = fused["clip_encoder"]
    assert report.fused["attention_heads_folded"] == report.fused["attention"] > 0
    src, dst, _ = fused["clip_encoder"]
    assert _ops(dst)[("", "Transpose")] < _ops(src)[("", "Transpose")]


def test_a_region_that_is_not_gelu_is_left_alone(tmp_path):
    """An Abs-led elementwise region that computes something else (here 0.5 x + 0.5 |x| x) is not replaced."""
    from onnx import TensorProto, helper

    from export.onnx_fuse import fuse_file

    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = [helper.make_node("Abs", ["x"], ["ax"]), helper.make_node("Mul", ["x", "half"], ["hx"]),
             helper.make_node("Mul", ["ax", "half"], ["hax"]), helper.make_node("Mul", ["hax", "x"], ["p"]),
             helper.make_node("Add", ["hx", "p"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [half])
    src = tmp_path / "notgelu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]), str(src))
    report = fuse_file(src, tmp_path / "out.onnx")
    assert report.fused["gelu"] == 0 and report.skipped["gelu"] == 1
    x = np.array([-2.0, -0.5, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(_ort(tmp_path / "out.onnx", {"x": x}), 0.5 * x + 0.5 * np.abs(x) * x, rtol=1e-6)


def test_fuse_file_refuses_to_overwrite_its_source(fused):
    from export.onnx_fuse import fuse_file

    src = fused["vae_encoder"][0]
    with pytest.raises(ValueError, match="must differ"):
        fuse_file(src, src)


def test_fusion_benchmark_measures_each_variant_and_cleans_up(plain_export, tmp_path):
    """benchmarks.fusions: one record per variant, each run in its own process through the runtime's loader, the
    variant written with only its fusion, and nothing left in the work folder."""
    from benchmarks.fusions import measure, table
    from export.onnx_fuse import FUSIONS

    work = tmp_path / "work"
    records = measure(plain_export.root, "unet", "onnxruntime", work, warmup=0, repeats=1,
                      variants=["plain", "gelu", "all"], progress=lambda _: None)
    assert [r["variant"] for r in records] == ["plain", "gelu", "all"]
    assert all(r["median_s"] > 0 and r["peak_rss_bytes"] > 0 and "error" not in r for r in records), records
    assert records[0]["fuse"] is None
    assert {k for k, n in records[1]["fuse"]["fused"].items() if n and k in FUSIONS} == {"gelu"}
    assert records[2]["fuse"]["fused"]["attention"] > 0 and records[2]["fuse"]["fused"]["groupnorm"] > 0
    assert not any(work.iterdir())
    assert "| gelu |" in table(records)


def test_fusion_benchmark_refuses_a_fused_export(plain_export, tmp_path):
    from benchmarks.fusions import measure
    from tests.helpers import edit_manifest

    folder = tmp_path / "export"
    shutil.copytree(plain_export.root, folder)
    edit_manifest(folder, lambda d: d["graphs"]["onnx"]["unet"].update(form="fused"))
    with pytest.raises(ValueError, match="'fused' form.*--onnx-form plain"):
        measure(folder, "unet", "onnxruntime", tmp_path / "work", 0, 1)
