"""`python -m export` on the tiny configs: every graph, run by its own engine, matches the official reference.

Two exports run once per module (64 px, decode chunk 2): sv3d_u_tiny in fp32 through the API with the default
gate (auto -> full at this size), and sv3d_p_tiny in fp16 through the CLI's main() with the gate off. Their
graphs are then fed the oracle's inputs with ONNX Runtime and MindSpore's GraphCell directly (not through
runtime.backends, which the export's own checks use) and compared with the official implementation's outputs: 1e-4 relative L2 in
fp32, 1e-2 in fp16 (oracle/README.md). Error paths run the CLI in a subprocess: exit status 2, one `error:`
line, no traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs import load_config
from runtime.errors import GraphError
from runtime.manifest import MANIFEST_NAME, Manifest
from runtime.specs import GRAPH_NAMES, ExportShapes, graph_specs
from tests.helpers import REPO, rel_l2

pytestmark = pytest.mark.export          # the export tier: every test exports or runs `python -m export`
RESOLUTION = 64
DECODE_CHUNK = 2
TOL = {"float32": 1e-4, "float16": 1e-2}       # oracle/README.md "How close is close enough"
CASES = {"sv3d_u": "sv3d_u_64", "sv3d_p": "sv3d_p_64_default"}


def checkpoint(oracle: Path, variant: str) -> Path:
    return oracle / f"{variant}_tiny" / "checkpoint.safetensors"


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------- the two exports


@pytest.fixture(scope="module")
def exports(oracle, tmp_path_factory):
    """{variant: export folder}: sv3d_u fp32 through the API (gate auto -> full), sv3d_p fp16 through
    `main(argv)` with the gate off (its eager references would double its time; the twin test below gates fp16,
    and every graph is compared with the official outputs here anyway)."""
    from export import ExportOptions, export_graphs
    from export.__main__ import main

    root = tmp_path_factory.mktemp("exports")
    u = root / "sv3d_u_fp32"
    export_graphs(ExportOptions(config="sv3d_u_tiny", checkpoint=str(checkpoint(oracle, "sv3d_u")), out=str(u),
                                resolution=RESOLUTION, decode_chunk=DECODE_CHUNK))
    p = root / "sv3d_p_fp16"
    rc = main(["-c", "sv3d_p_tiny", "-k", str(checkpoint(oracle, "sv3d_p")), "-o", str(p), "--resolution",
               str(RESOLUTION), "--decode-chunk", str(DECODE_CHUNK), "--dtype", "fp16", "--parity", "off",
               "--quiet"])
    assert rc == 0
    return {"sv3d_u": u, "sv3d_p": p}


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_manifest_is_the_spec_contract(exports, oracle, variant):
    m = Manifest.load(exports[variant])
    cfg = load_config(f"{variant}_tiny")
    dtype = "float16" if variant == "sv3d_p" else "float32"
    assert m.variant == variant and m.config_sha256 == cfg.sha256()
    assert m.shapes == ExportShapes(RESOLUTION, cfg.num_frames, 2 * cfg.num_frames, DECODE_CHUNK, dtype, 0)
    specs = graph_specs(cfg, m.shapes)
    assert m.formats() == ("mindir", "onnx")
    for fmt in m.formats():
        assert sorted(m.graphs[fmt]) == sorted(GRAPH_NAMES)
        for name in GRAPH_NAMES:
            assert m.entry(fmt, name).spec == specs[name]
        m.verify_files(fmt)                                   # sizes and sha256 of every file
    assert m.runtime == cfg.runtime_config() and m.runtime.scale_factor == cfg.scale_factor
    assert m.runtime.latent_size(m.shapes.resolution) == RESOLUTION // cfg.latent_factor
    assert {"mindspore", "onnx", "onnxruntime", "numpy", "python"} <= set(m.tools)
    assert m.source["bytes"] == checkpoint(oracle, variant).stat().st_size
    assert not list(exports[variant].rglob(".scratch")), "scratch files were published"


def test_parity_gate_recorded(exports):
    """auto picks the full-size gate at 64 px; every graph and format measured within tolerance."""
    m = Manifest.load(exports["sv3d_u"])
    assert m.parity["gate"] == "auto"
    for name in GRAPH_NAMES:
        g = m.parity["graphs"][name]
        assert g["gate"] == "full", g["reason"]
        assert set(g["results"]) == {"mindir", "onnx"}
        for r in g["results"].values():
            assert r["passed"] and r["rel_l2"] <= TOL["float32"]
            assert r["tolerance"] == TOL["float32"]
    off = Manifest.load(exports["sv3d_p"]).parity
    assert off["gate"] == "off" and all("results" not in g for g in off["graphs"].values())


# ------------------------------------------------------------------- every graph against the official outputs


def run_graph(manifest: Manifest, fmt: str, name: str, feeds: dict) -> np.ndarray:
    """One call of an exported graph in its engine, inputs bound by name."""
    entry = manifest.entry(fmt, name)
    path = str(manifest.root / entry.model_file)
    feeds = {t.name: np.asarray(feeds[t.name], dtype=t.dtype) for t in entry.spec.inputs}
    entry.spec.check_feeds(feeds)
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == list(entry.spec.input_names)
        assert [o.name for o in sess.get_outputs()] == list(entry.spec.output_names)
        return sess.run(None, feeds)[0]
    import mindspore as ms
    from mindspore import nn

    names = [i.name.rsplit(":", 1)[-1] for i in ms.load_mindir(path).graph.input]
    assert names == list(entry.spec.input_names)             # GraphCell binds by position: this order
    out = nn.GraphCell(ms.load(path))(*[ms.Tensor(feeds[n]) for n in names])
    return out.asnumpy()


def oracle_feeds(case_data, variant: str, chunk: int):
    """{graph: (feeds, expected, postprocess)} from the official run of the tiny model at 64 px."""
    case, inputs, ref = case_data(CASES[variant])
    image = inputs["image_m11"].astype(np.float64)
    out = {
        "clip_encoder": ({"image": image}, ref["clip_embedding"].reshape(1, -1), None),
        "vae_encoder": ({"image": image + float(inputs["cond_aug"]) * inputs["cond_noise"]}, ref["cond_latent"],
                        None),
    }
    # one denoiser call, CFG batch [uc ; c] (SV3D_REFERENCE.md: VScalingWithEDMcNoise, OpenAIWrapper)
    s = float(ref["den_sigmamid_sigma"])
    x = np.concatenate([ref["den_sigmamid_x"]] * 2).astype(np.float64)
    c_skip, c_out, c_in, c_noise = 1 / (s * s + 1), -s / np.sqrt(s * s + 1), 1 / np.sqrt(s * s + 1), 0.25 * np.log(s)
    unet_feeds = {
        "x": np.concatenate([c_in * x, np.concatenate([ref["uc_concat"], ref["c_concat"]])], axis=1),
        "timesteps": np.full(x.shape[0], c_noise),
        "context": np.concatenate([ref["uc_crossattn"], ref["c_crossattn"]]),
        "y": np.concatenate([ref["uc_vector"], ref["c_vector"]]),
    }
    out["unet"] = (unet_feeds, ref["den_sigmamid_out"], lambda f: c_out * f + c_skip * x)
    latents = {"latent": ref["latents_50"][:chunk]}
    if "decoded_raw_50" in ref:
        out["vae_decoder"] = (latents, ref["decoded_raw_50"][:chunk], None)
    else:   # frames = clamp((decoded + 1) / 2, 0, 1); only the last frame is replaced by the input image
        out["vae_decoder"] = (latents, ref["frames_50"][:chunk], lambda d: np.clip((d + 1) / 2, 0, 1))
    return out


@pytest.mark.parametrize("fmt", ["onnx", "mindir"])
@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_graphs_match_official_reference(exports, case_data, variant, fmt):
    m = Manifest.load(exports[variant])
    tol = TOL[m.shapes.dtype]
    errors = {}
    for name, (feeds, expected, post) in oracle_feeds(case_data, variant, m.shapes.decode_chunk).items():
        got = run_graph(m, fmt, name, feeds)
        assert got.dtype == np.dtype(m.shapes.dtype) and np.isfinite(got).all()
        got = got.astype(np.float64)
        errors[name] = rel_l2(post(got) if post else got, expected)
    assert max(errors.values()) <= tol, errors


def test_decoder_reference_formula(case_data):
    """The sv3d_p decoder check above relies on frames = clamp((decoded + 1) / 2): true in the sv3d_u case."""
    _, _, ref = case_data("sv3d_u_64")
    assert rel_l2(np.clip((ref["decoded_raw_50"][:-1] + 1) / 2, 0, 1), ref["frames_50"][:-1]) < 1e-6


# -------------------------------------------------------------------------------------------------- the gate


def test_gate_catches_the_padding_trap(tmp_path):
    """MINDSPORE_NOTES.md: per-axis conv padding is written into ONNX `pads` in the wrong order. The gate must
    refuse such a graph even where it is not run numerically (the twin gate's real-size check)."""
    import mindspore as ms
    from mindspore import nn

    from export import ParityError, mindir, onnx_io
    from export.checks import check_graph
    from runtime.specs import GraphSpec, TensorSpec

    class TallConv(nn.Cell):                      # kernel (3, 1), padding (top, bottom, left, right) = (1, 1, 0, 0)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, (3, 1), pad_mode="pad", padding=(1, 1, 0, 0), has_bias=True)

        def construct(self, x):
            return self.conv(x)

    spec = GraphSpec("tall", (TensorSpec("x", (2, 4, 7, 5)),), (TensorSpec("y", (2, 4, 7, 5)),))
    feeds = spec.example_inputs()
    assert TallConv()(ms.Tensor(feeds["x"])).shape == (2, 4, 7, 5)      # eager is right
    model, _ = mindir.write(TallConv, spec, feeds, tmp_path / "mindir")
    path, _ = onnx_io.write(lambda: mindir.graph_cell(model), spec, feeds, tmp_path / "onnx", tmp_path / "s",
                            positional_inputs=True)
    assert onnx_io.shape_problems(path, spec, tmp_path / "s")
    with pytest.raises(ParityError, match="does not match its spec"):
        check_graph("onnx", "tall", path, spec, tmp_path / "s")
    check_graph("mindir", "tall", model, spec, tmp_path / "s")          # the MindIR itself is fine


@pytest.mark.parametrize("source", ["graphcell", "cell"])
def test_large_graph_packs_one_external_data_file(oracle, tmp_path, monkeypatch, source):
    """Over 2 GB (forced here by lowering both limits) the exporter writes one raw file per tensor; the graph is
    repacked into <name>.onnx + <name>.onnx.data, which ONNX Runtime loads and which computes the same. Both ONNX
    sources: the MindIR's GraphCell (inputs renamed by position) and a fresh Cell (inputs already named)."""
    import mindspore.onnx.onnx_export as ms_onnx_export

    from export import mindir, onnx_io
    from export.checks import check_graph
    from export.wrappers import build_graph_cell
    from models.checkpoint import CheckpointReader

    monkeypatch.setattr(ms_onnx_export, "PROTO_LIMIT_SIZE", 1)           # KiB
    monkeypatch.setattr(onnx_io, "INLINE_LIMIT_BYTES", 1)
    cfg = load_config("sv3d_u_tiny")
    spec = graph_specs(cfg, ExportShapes(RESOLUTION, 21, 42, DECODE_CHUNK))["clip_encoder"]
    feeds = spec.example_inputs()
    reader = CheckpointReader(checkpoint(oracle, "sv3d_u"), cfg)
    def make_cell():
        return build_graph_cell("clip_encoder", reader, resolution=RESOLUTION, num_frames=21,
                                attention_chunk=0, dtype="float32", spec=spec)

    model, _ = mindir.write(make_cell, spec, feeds, tmp_path / "mindir")
    make_source = (lambda: mindir.graph_cell(model)) if source == "graphcell" else make_cell
    path, files = onnx_io.write(make_source, spec, feeds, tmp_path / "onnx", tmp_path / "scratch",
                                positional_inputs=source == "graphcell")
    assert [f.name for f in files] == ["clip_encoder.onnx", "clip_encoder.onnx.data"]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["clip_encoder.onnx", "clip_encoder.onnx.data"]
    assert not (tmp_path / "scratch" / "onnx_clip_encoder").exists()
    assert files[1].stat().st_size > files[0].stat().st_size
    got = check_graph("onnx", "clip_encoder", path, spec, tmp_path / "scratch").run(feeds)["embedding"]
    want = check_graph("mindir", "clip_encoder", model, spec, tmp_path / "scratch").run(feeds)["embedding"]
    assert rel_l2(got, want) < 1e-5


def test_graph_registry_is_checked_against_the_specs(monkeypatch):
    """export/registry.py: one entry per GRAPH_NAMES graph, each naming a models/ component and an
    export/wrappers.py class; a missing or extra graph, or an unknown component, fails at import."""
    from export import registry, wrappers
    from models.components import COMPONENTS

    assert tuple(registry.GRAPHS) == GRAPH_NAMES
    assert {g.component for g in registry.GRAPHS.values()} == set(COMPONENTS)
    assert all(isinstance(getattr(wrappers, g.wrapper), type) for g in registry.GRAPHS.values())
    full = dict(registry.GRAPHS)
    for broken, needle in (({k: v for k, v in full.items() if k != "unet"}, r"missing \['unet'\]"),
                           ({**full, "extra": full["unet"]}, r"unexpected \['extra'\]"),
                           ({**full, "unet": registry.GraphExport("unet", "vae", "UNetGraph")}, "components")):
        monkeypatch.setattr(registry, "GRAPHS", broken)
        with pytest.raises(RuntimeError, match=needle):
            registry._check()
    monkeypatch.setattr(registry, "GRAPHS", {**full, "unet": registry.GraphExport("unet", "unet", "NoSuchCell")})
    monkeypatch.setattr(wrappers, "GRAPHS", registry.GRAPHS)
    with pytest.raises(RuntimeError, match="NoSuchCell"):
        wrappers._check_registry()


def test_twin_shapes_and_auto_gate():
    from export import parity

    full = load_config("sv3d_u")
    shapes = ExportShapes(576, 21, 42, 14, "float16", 1024)
    twin = parity.twin_shapes(full, shapes)
    twin.validate(full.latent_factor, full.unet.downsample_factor)
    assert (twin.resolution, twin.num_frames, twin.unet_batch, twin.decode_chunk) == (64, 3, 3, 2)
    assert twin.dtype == "float16" and twin.attention_chunk == 22      # 64 latent tokens: 22 + 22 + 20
    assert parity.choose_gate("auto", full, "unet", shapes, 10.0)[0] == "twin"
    tiny = load_config("sv3d_u_tiny")
    small = ExportShapes(RESOLUTION, 21, 42, DECODE_CHUNK)
    assert all(parity.choose_gate("auto", tiny, g, small, 10.0)[0] == "full" for g in GRAPH_NAMES)
    assert parity.choose_gate("twin", tiny, "unet", small, 10.0) == ("twin", "requested")


def test_twin_gate_runs_in_fp16(oracle, tmp_path):
    """The reduced-shape twin of two graphs, exported and compared in fp16, with chunked attention."""
    from export import ExportOptions, plan
    from export.api import Exporter

    p = plan(ExportOptions(config="sv3d_u_tiny", checkpoint=str(checkpoint(oracle, "sv3d_u")),
                           out=str(tmp_path / "out"), resolution=RESOLUTION, dtype="fp16", parity="twin",
                           attention_chunk=20))
    root = tmp_path / "staging"
    root.mkdir()
    exporter = Exporter(p, root)
    for name in ("clip_encoder", "vae_decoder"):
        report = exporter.twin_gate(name)
        # 32 px: 4x4 = 16 latent tokens in the VAE's mid attention, chunked 6 + 6 + 4
        assert report["check_shapes"]["resolution"] == 32 and report["check_shapes"]["attention_chunk"] == 6
        for r in report["results"].values():
            assert r["passed"] and r["rel_l2"] <= TOL["float16"]
            assert r["rel_l2"] > 0        # fp16 graph vs fp32 eager Cell: a real comparison
    assert not (root / ".scratch" / "twin").exists()


def test_worker_process_steps(oracle, tmp_path):
    """--isolate runs weight-holding steps in spawned workers (MindSpore never frees compiled weights): same
    results as in-process, errors re-raised in the parent, a worker that dies becomes an ExportError."""
    from export import ExportError, ExportOptions, ParityError, plan, workers

    p = plan(ExportOptions(config="sv3d_u_tiny", checkpoint=str(checkpoint(oracle, "sv3d_u")),
                           out=str(tmp_path / "out"), resolution=RESOLUTION))
    here = workers.eager_output(p, "clip_encoder", p.shapes)
    there = workers.call(True, workers.eager_output, p, "clip_encoder", p.shapes)
    np.testing.assert_array_equal(there, here)
    spec = graph_specs(p.cfg, p.shapes)["clip_encoder"]
    with pytest.raises(ParityError, match="does not load"):
        workers.call(True, workers.check, "onnx", "clip_encoder", tmp_path / "missing.onnx", spec, tmp_path)
    with pytest.raises(ExportError, match="died"):
        workers.call(True, os.abort)


def test_failed_gate_publishes_nothing(oracle, tmp_path, monkeypatch):
    from export import ExportOptions, ParityError, export_graphs, parity

    monkeypatch.setitem(parity.TOLERANCE, "float32", -1.0)          # nothing can pass
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="clip_encoder"):
        export_graphs(ExportOptions(config="sv3d_u_tiny", checkpoint=str(checkpoint(oracle, "sv3d_u")),
                                    out=str(out), resolution=RESOLUTION, formats="onnx"))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "the staging folder was left behind"


# ------------------------------------------------------------------------------------------- --reuse (per graph)


def _export(oracle, out: Path, **options):
    from export import ExportOptions, export_graphs

    return export_graphs(ExportOptions(config="sv3d_u_tiny", checkpoint=str(checkpoint(oracle, "sv3d_u")),
                                       out=str(out), resolution=RESOLUTION, formats="onnx", reuse=True, **options))


def test_reuse_re_exports_only_the_changed_graph(oracle, tmp_path, caplog, capsys):
    """export/reuse.py: a second export with another decode chunk re-exports the decoder only (the other graphs'
    files are the same inodes, their recorded gates kept); a third, unchanged, leaves the export as it is; a
    graph file corrupted in place (same size) is found by its sha256 and exported again."""
    import logging

    caplog.set_level(logging.INFO, logger="export")
    out = tmp_path / "out"
    first = _export(oracle, out, decode_chunk=DECODE_CHUNK)
    assert first.reused == () and first.published
    old = Manifest.load(out)
    inode = {n: (out / old.entry("onnx", n).model_file).stat().st_ino for n in GRAPH_NAMES}

    second = _export(oracle, out, decode_chunk=DECODE_CHUNK + 1)
    m = Manifest.load(out)
    assert second.reused == ("clip_encoder", "vae_encoder", "unet") and second.published
    assert m.shapes.decode_chunk == DECODE_CHUNK + 1
    for name in second.reused:
        assert (out / m.entry("onnx", name).model_file).stat().st_ino == inode[name]     # linked, not rewritten
        assert m.parity["graphs"][name]["reused"] == {"exported": old.created}
        assert m.parity["graphs"][name]["results"] == old.parity["graphs"][name]["results"]   # the gate kept
        assert m.entry("onnx", name).files == old.entry("onnx", name).files
    decoder = m.parity["graphs"]["vae_decoder"]
    assert "reused" not in decoder and decoder["results"]["onnx"]["passed"]
    assert "vae_decoder: exported again: its onnx inputs or outputs changed" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]          # no staging or aside folder left
    m.verify_files("onnx")

    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    third = _export(oracle, out, decode_chunk=DECODE_CHUNK + 1)
    assert third.reused == GRAPH_NAMES and not third.published
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == stamp
    from export.__main__ import main                                        # the CLI says so
    assert main(["-c", "sv3d_u_tiny", "-k", str(checkpoint(oracle, "sv3d_u")), "-o", str(out), "--resolution",
                 str(RESOLUTION), "--formats", "onnx", "--decode-chunk", str(DECODE_CHUNK + 1), "--reuse",
                 "--quiet"]) == 0
    assert "up to date (--reuse)" in capsys.readouterr().out
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == stamp

    unet = m.entry("onnx", "unet")
    target = out / max(unet.files, key=lambda f: f.bytes).path              # the weights: same size, one byte off
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    caplog.clear()
    fourth = _export(oracle, out, decode_chunk=DECODE_CHUNK + 1)
    assert "unet" not in fourth.reused and set(fourth.reused) == set(GRAPH_NAMES) - {"unet"}
    assert "unet: exported again: its old files do not verify" in caplog.text and "sha256" in caplog.text
    Manifest.load(out).verify_files("onnx")                                 # the new UNet files are whole


def test_failed_decoder_gate_does_not_cost_the_unet_again(oracle, tmp_path, monkeypatch):
    """A --reuse export whose decoder fails its gate publishes nothing, but keeps the graphs it completed beside
    the destination (never loadable as an export); the next --reuse export exports the decoder only."""
    from export import ParityError, staging
    from export.api import Exporter

    gate = Exporter.numeric_gate

    def decoder_fails(self, name, checks, spec, ref):
        if name == "vae_decoder":
            raise ParityError("graph vae_decoder: made to fail")
        return gate(self, name, checks, spec, ref)

    out = tmp_path / "out"
    monkeypatch.setattr(Exporter, "numeric_gate", decoder_fails)
    with pytest.raises(ParityError, match="made to fail"):
        _export(oracle, out)
    kept = staging.unfinished_folder(out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    assert not (kept / MANIFEST_NAME).exists()
    assert not list(kept.rglob("vae_decoder*")) and list(kept.rglob("unet*"))     # the failed graph's files go
    with pytest.raises(GraphError):
        Manifest.load(kept)                                   # nothing takes it for an export

    monkeypatch.setattr(Exporter, "numeric_gate", gate)
    result = _export(oracle, out)
    assert result.reused == ("clip_encoder", "vae_encoder", "unet") and result.published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]          # the kept graphs are gone with it
    m = Manifest.load(out)
    m.verify_files("onnx")
    assert all(m.parity["graphs"][n]["results"]["onnx"]["passed"] for n in GRAPH_NAMES)


# ------------------------------------------------------------------------------------------------ user errors


@pytest.fixture()
def u_args(oracle, tmp_path):
    return ["-c", "sv3d_u_tiny", "-k", str(checkpoint(oracle, "sv3d_u")), "-o", str(tmp_path / "out"),
            "--resolution", str(RESOLUTION)]


def assert_user_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_missing_checkpoint(u_args, tmp_path):
    u_args[3] = str(tmp_path / "nope.safetensors")
    assert_user_error(cli(*u_args), "checkpoint not found", "nope.safetensors")
    assert not (tmp_path / "out").exists()


def test_variant_mismatch(oracle, u_args, tmp_path):
    u_args[3] = str(checkpoint(oracle, "sv3d_p"))
    assert_user_error(cli(*u_args), "does not match config", "adm_in_channels")


def test_unwritable_output(u_args, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    u_args[5] = str(blocker / "out")
    assert_user_error(cli(*u_args), "not a folder")
    if os.geteuid() != 0:                         # root writes anywhere; permissions only bind other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        u_args[5] = str(ro / "out")
        assert_user_error(cli(*u_args), "not writable")


@pytest.mark.parametrize("flags, needle", [
    (["--resolution", "60"], "multiple of 32"),
    (["--decode-chunk", "0"], "decode_chunk must be in [1, 21]"),
    (["--formats", "onnx,tflite"], "--formats"),
    (["--attention-chunk", "-1"], "attention_chunk"),
])
def test_unsupported_options(u_args, flags, needle):
    assert_user_error(cli(*u_args, *flags), needle)


def test_existing_folder_needs_overwrite(u_args, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(cli(*u_args), "already exists", "--overwrite")
    assert_user_error(cli(*u_args, "--overwrite"), "not an export")       # never deletes a foreign folder
    assert (out / "keep.txt").read_text() == "mine"


def test_publish_replaces_an_old_export(tmp_path):
    from export import staging

    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{}")
    (out / "old.onnx").write_text("old")
    new = staging.begin(out)
    (new / "new.onnx").write_text("new")
    staging.publish(new, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["new.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------------------------------- interrupted export


def staging_folders(out: Path) -> list:
    """Staging folders of exports to `out` that exist now (export/staging.py names them)."""
    from export import staging

    return sorted(p for p in out.parent.glob(f".{out.name}{staging.PARTIAL}*") if p.is_dir())


def test_killed_export_leaves_nothing_that_looks_complete(oracle, tmp_path):
    from export import staging

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "export", "-c", "sv3d_u_tiny", "-k",
                             str(checkpoint(oracle, "sv3d_u")), "-o", str(out), "--resolution", str(RESOLUTION)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        first = []
        while not first and time.monotonic() < deadline and proc.poll() is None:
            first = [f for d in staging_folders(out) for f in d.rglob("*")
                     if f.suffix in (".mindir", ".onnx")]
            time.sleep(0.05)
        assert first, "no graph file appeared"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    with pytest.raises(GraphError):
        Manifest.load(out)
    leftovers = staging_folders(out)
    assert leftovers and not any((d / MANIFEST_NAME).exists() for d in leftovers)
    for d in leftovers:                           # nor does anything in it load as an export
        with pytest.raises(GraphError):
            Manifest.load(d)
    assert staging.remove_stale(out) == leftovers                # the next export clears them
    assert not staging_folders(out)
