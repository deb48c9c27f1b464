"""export/reuse.py's decisions without exporting anything: a fake export of empty graph files (a valid, empty
protobuf message) and the identities a real export records, written through the exporter's own manifest code.
The export tier (tests/test_export.py) runs the same path with real graphs."""
from __future__ import annotations

import pytest

from configs import load_config
from export import reuse, staging
from export.api import graph_entry, write_manifest
from runtime.manifest import MANIFEST_NAME, Manifest
from runtime.specs import GRAPH_NAMES, ExportShapes, graph_specs

CFG = load_config("sv3d_u_tiny")
SHAPES = ExportShapes(64, CFG.num_frames, 2 * CFG.num_frames, 2)


def ident(**change) -> dict:
    base = reuse.identity("onnx", tools={"mindspore": "2.10", "onnx": "1.17", "onnxruntime": "1.20",
                                         "numpy": "1.26", "python": "3.11"},
                          config_sha256=CFG.sha256(), weights_sha256="w" * 64, num_frames=CFG.num_frames,
                          attention_chunk=0, form="fused", onnx_source="auto", gate="full", tolerance=1e-4, seed=0)
    return {**base, **change}


@pytest.fixture()
def old(tmp_path):
    """An export of four empty onnx graph files whose reports record ident()."""
    out = tmp_path / "out"
    (out / "onnx").mkdir(parents=True)
    specs = graph_specs(CFG, SHAPES)
    graphs, reports = {"onnx": {}}, {}
    for name in GRAPH_NAMES:
        f = out / "onnx" / f"{name}.onnx"
        f.write_bytes(b"")
        graphs["onnx"][name] = graph_entry(specs[name], "onnx", f, [f], out, "fused")
        reports[name] = {"gate": "full", "formats": {"onnx": {"identity": ident()}},
                         "results": {"onnx": {"rel_l2": 1e-7, "passed": True}}}
    write_manifest(out, CFG, SHAPES, graphs, created="then", parity={"gate": "auto", "graphs": reports})
    return Manifest.load(out)


def test_an_unchanged_graph_is_reused_with_its_recorded_gate(old, tmp_path):
    spec = old.entry("onnx", "unet").spec
    assert reuse.why_not(old, "unet", spec, {"onnx": ident()}) is None
    root = tmp_path / "staging"
    entries, report = reuse.carry_over(old, "unet", ("onnx",), root)
    linked = root / "onnx" / "unet.onnx"
    assert linked.stat().st_ino == (old.root / "onnx" / "unet.onnx").stat().st_ino       # a link, not a copy
    assert entries["onnx"] == old.entry("onnx", "unet")
    assert report["results"] == old.parity["graphs"]["unet"]["results"]
    assert report["reused"] == {"exported": "then"}


@pytest.mark.parametrize("change, needle", [
    (dict(weights_sha256="x" * 64), "onnx: weights_sha256 changed"),
    (dict(gate="twin", seed=1), "onnx: gate, seed changed"),
    (dict(exporter_sha256="0" * 64), "onnx: exporter_sha256 changed"),
    (dict(tools={"onnx": "1.18"}), "onnx: tools changed"),
])
def test_a_changed_identity_field_is_named(old, change, needle):
    assert reuse.why_not(old, "unet", old.entry("onnx", "unet").spec, {"onnx": ident(**change)}) == needle


def test_other_shapes_formats_or_files_are_exported_again(old):
    spec = old.entry("onnx", "vae_decoder").spec
    other = graph_specs(CFG, ExportShapes(64, CFG.num_frames, 2 * CFG.num_frames, 3))["vae_decoder"]
    assert reuse.why_not(old, "vae_decoder", other, {"onnx": ident()}) == \
        "its onnx inputs or outputs changed (shapes or dtype)"
    assert reuse.why_not(old, "vae_decoder", spec, {"onnx": ident(), "mindir": ident()}) == \
        "the old export has no mindir graph"
    (old.root / "onnx" / "vae_decoder.onnx").write_bytes(b"\x08\x01")       # 2 bytes where 0 were recorded
    assert "do not verify" in reuse.why_not(old, "vae_decoder", spec, {"onnx": ident()})


def test_sources_and_the_kept_graphs(old, tmp_path, caplog):
    """sources(): the export at `out`, then the graphs a failed --reuse export kept (keep_unfinished), which no
    runtime loads as an export; one that does not load is skipped with a warning."""
    from runtime.errors import GraphError

    out = old.root
    root = tmp_path / "staging"
    for name in GRAPH_NAMES:
        reuse.carry_over(old, name, ("onnx",), root)
    reuse.keep_unfinished(root, out, old)
    kept = staging.unfinished_folder(out)
    assert not root.exists() and sorted(p.name for p in kept.iterdir()) == ["onnx", reuse.RECORD]
    with pytest.raises(GraphError, match="holds no manifest.json"):
        Manifest.load(kept)
    assert [m.root for m in reuse.sources(out)] == [out, kept]
    (out / MANIFEST_NAME).write_text("[]")
    assert [m.root for m in reuse.sources(out)] == [kept]
    assert "does not load" in caplog.text


def test_the_int8_unet_goes_with_the_onnx_unet_it_was_made_from(old, tmp_path, caplog):
    """export/int8.py adds openvino_int8/unet.xml to an export later: an update carries it over (with its
    calibration record and tools) when the ONNX UNet is reused, and drops it, saying so, when the UNet is not."""
    from runtime.manifest import INT8_FORMAT

    folder = old.root / INT8_FORMAT
    folder.mkdir()
    (folder / "unet.xml").write_text("<net/>")
    graphs = {**old.graphs, INT8_FORMAT: {"unet": graph_entry(old.entry("onnx", "unet").spec, INT8_FORMAT,
                                                               folder / "unet.xml", [folder / "unet.xml"],
                                                               old.root, "nncf-w8a8")}}
    write_manifest(old.root, CFG, SHAPES, graphs, created="then", tools={"nncf": "2.1"},
                   parity={**old.parity, "int8": {"mode": "w8a8"}})
    with_int8 = Manifest.load(old.root)

    graphs, parity, tools = reuse.derived(with_int8, {n: with_int8 for n in GRAPH_NAMES}, ("onnx",),
                                          tmp_path / "a")
    assert graphs[INT8_FORMAT]["unet"].form == "nncf-w8a8" and parity == {"int8": {"mode": "w8a8"}}
    assert tools == {"nncf": "2.1"} and (tmp_path / "a" / INT8_FORMAT / "unet.xml").read_text() == "<net/>"

    others = {n: with_int8 for n in GRAPH_NAMES if n != "unet"}
    assert reuse.derived(with_int8, others, ("onnx",), tmp_path / "b") == ({}, {}, {})
    assert "openvino_int8 graphs" in caplog.text and "python -m export.int8" in caplog.text
