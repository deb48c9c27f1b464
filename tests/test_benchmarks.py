"""benchmarks/: FLOP counts against SV3D_FLOPS.md's exact full-size figures, the peak probe, the harness."""
from __future__ import annotations

import pytest

from models.flops import (attention_flops, clip_flops, clip_resize_flops, generation_flops, unet_flops,
                          vae_decoder_flops, vae_encoder_flops)
from configs import load_config

# shared/reference/SV3D_FLOPS.md (torch flop_counter on the official modules, 576x576, 21 frames)
UNET_576_B42 = {"sv3d_u": 69_157_605_826_560, "sv3d_p": 69_157_715_927_040}
UNET_P_BY_KIND = {"conv": 26_724_875_304_960, "linear": 34_135_418_142_720,
                  "attention": 8_243_391_098_880 + 54_031_380_480}
UNET_P_BY_GROUP = {
    "resblock conv3x3": 17_356_927_795_200, "downsample/upsample conv3x3": 3_912_833_433_600,
    "skip conv1x1": 958_699_929_600, "conv_in/out": 15_049_359_360, "temporal conv": 4_481_364_787_200,
    "temporal ff_in": 8_160_097_075_200, "temporal ff": 8_160_097_075_200,
    "temporal attn1 q,k,v,out": 2_720_032_358_400, "temporal attn2 q,k,v,out": 1_479_774_044_160,
    "spatial ff": 8_160_097_075_200, "spatial attn1 q,k,v,out": 2_720_032_358_400,
    "spatial attn2 q,k,v,out": 1_362_163_138_560, "proj_in/proj_out": 1_360_016_179_200,
    "time_pos_embed": 8_326_348_800, "resblock emb_layers": 4_335_206_400, "time_embed/label_emb": 447_283_200,
    "spatial attn1": 8_240_935_127_040, "spatial attn2": 2_455_971_840,
    "temporal attn1": 51_575_408_640, "temporal attn2": 2_455_971_840,
}
UNET_P_BY_BLOCK = {
    "time_embed": 172_032_000, "label_emb": 275_251_200, "input_blocks.0": 10_032_906_240,
    "input_blocks.1": 4_764_642_017_280, "input_blocks.2": 4_764_642_017_280, "input_blocks.3": 100_329_062_400,
    "input_blocks.4": 3_312_463_626_240, "input_blocks.5": 3_490_826_403_840, "input_blocks.6": 100_329_062_400,
    "input_blocks.7": 3_150_518_968_320, "input_blocks.8": 3_328_881_745_920, "input_blocks.9": 100_329_062_400,
    "input_blocks.10": 267_819_417_600, "input_blocks.11": 267_819_417_600, "middle_block": 1_097_004_564_480,
    "output_blocks.0": 390_443_827_200, "output_blocks.1": 390_443_827_200, "output_blocks.2": 791_760_076_800,
    "output_blocks.3": 3_819_379_384_320, "output_blocks.4": 3_819_379_384_320,
    "output_blocks.5": 5_201_690_910_720, "output_blocks.6": 4_427_230_986_240,
    "output_blocks.7": 3_981_324_042_240, "output_blocks.8": 5_363_635_568_640,
    "output_blocks.9": 5_701_046_599_680, "output_blocks.10": 5_255_139_655_680,
    "output_blocks.11": 5_255_139_655_680, "out": 5_016_453_120,
}
DECODER_FRAME = 3_193_988_972_544
DECODER_BY_GROUP = {"resblock conv3x3": 2_201_506_283_520, "upsample conv3x3": 880_602_513_408,
                    "nin_shortcut conv1x1": 43_486_543_872, "attention conv1x1": 10_871_635_968,
                    "conv_in/out": 2_484_338_688, "mid attention": 55_037_657_088}
ENCODER = 1_424_821_985_280
CLIP = 334_590_279_680
CLIP_BY_GROUP = {"patch conv": 385_351_680, "attn in_proj/out_proj": 107_793_612_800,
                 "attention": 10_821_468_160, "mlp": 215_587_225_600, "proj": 2_621_440}
GENERATION_50 = {"sv3d_p": 3_528_478_389_305_344, "sv3d_u": 3_528_472_884_281_344}


@pytest.fixture(scope="module")
def full():
    return {v: load_config(v) for v in ("sv3d_u", "sv3d_p")}


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_unet_reference_total_is_exact(full, variant):
    assert unet_flops(full[variant], 576, 42).total == UNET_576_B42[variant]


def test_unet_reference_breakdowns_are_exact(full):
    f = unet_flops(full["sv3d_p"], 576, 42)
    assert dict(f.by_kind()) == UNET_P_BY_KIND
    assert dict(f.by_group()) == UNET_P_BY_GROUP
    assert dict(f.by_block()) == UNET_P_BY_BLOCK


def test_unet_executed_drops_only_the_single_key_cross_attention_work(full):
    cfg = full["sv3d_p"]
    ref, exe = unet_flops(cfg, 576, 42), unet_flops(cfg, 576, 42, mode="executed")
    r, e = ref.by_group(), exe.by_group()
    # untouched: every conv, self-attention, feed-forward
    for g in ("resblock conv3x3", "temporal conv", "spatial attn1", "temporal attn1", "spatial ff", "temporal ff"):
        assert e[g] == r[g]
    assert "spatial attn2" not in e and "temporal attn2" not in e     # softmax over one key: no matmuls
    u, T, B = cfg.unet, cfg.num_frames, 42
    widths = [320] * 5 + [640] * 5 + [1280] * 6                      # C of the 16 transformers
    # to_v + to_out once per frame row (spatial) / per video (temporal)
    assert e["spatial attn2 v,out"] == sum(2 * B * (u.context_dim * c + c * c) for c in widths)
    assert e["temporal attn2 v,out"] == sum(2 * (B // T) * (u.context_dim * c + c * c) for c in widths)
    assert e["time_pos_embed"] * B == r["time_pos_embed"] * T
    assert exe.total < ref.total


def test_unet_one_branch_batch_is_half_of_both(full):
    cfg = full["sv3d_u"]
    assert 2 * unet_flops(cfg, 256, 21).total == unet_flops(cfg, 256, 42).total


def test_vae_decoder_exact(full):
    d = vae_decoder_flops(full["sv3d_u"], 576)
    assert d.total == DECODER_FRAME
    assert dict(d.by_group()) == DECODER_BY_GROUP
    assert vae_decoder_flops(full["sv3d_u"], 576, 21).total == 67_073_768_423_424


def test_vae_encoder_exact(full):
    e = vae_encoder_flops(full["sv3d_u"], 576)
    assert e.total == ENCODER
    assert e.by_kind()["conv"] == 1_369_784_328_192 and e.by_kind()["attention"] == 55_037_657_088
    assert e.by_group()["downsample conv3x3"] == 73_383_542_784


def test_clip_exact(full):
    c = clip_flops(full["sv3d_p"])
    assert c.total == CLIP
    assert dict(c.by_group()) == CLIP_BY_GROUP


@pytest.mark.parametrize("variant", ["sv3d_u", "sv3d_p"])
def test_generation_total_exact(full, variant):
    assert generation_flops(full[variant], 576, 50)["total"] == GENERATION_50[variant]


def test_clip_resize_counts_two_matmuls_per_channel(full):
    assert clip_resize_flops(full["sv3d_u"], 576).total == 3 * (2 * 224 * 576 * 576 + 2 * 224 * 576 * 224)


def test_attention_flops_drop_the_head_count():
    # 5 heads x 64 == 1 head x 320: 4 N^2 C either way
    assert attention_flops(1, 5184, 5184, 320) == 4 * 5184 ** 2 * 320


def test_bad_shapes_are_refused(full):
    cfg = full["sv3d_u"]
    with pytest.raises(ValueError, match="multiple of num_frames"):
        unet_flops(cfg, 576, 40)
    with pytest.raises(ValueError, match="down-sampling"):
        unet_flops(cfg, 520, 42)
    with pytest.raises(ValueError, match="mode"):
        unet_flops(cfg, 576, 42, mode="fast")


# ---------------------------------------------------------------------------------------------------------------
# graph-level counts (what the exported graphs execute)


def test_graph_flops_follow_the_export_shapes(full):
    from models.flops import generation_flops_executed, graph_flops
    from runtime.specs import ExportShapes

    cfg = full["sv3d_u"]
    sh = ExportShapes(resolution=576, num_frames=21, unet_batch=42, decode_chunk=14)
    assert graph_flops(cfg, "unet", sh, mode="reference").total == UNET_576_B42["sv3d_u"]
    assert graph_flops(cfg, "vae_decoder", sh).total == 14 * DECODER_FRAME
    assert graph_flops(cfg, "vae_encoder", sh).total == ENCODER
    assert graph_flops(cfg, "clip_encoder", sh, mode="reference").total == CLIP
    # the CLIP graph resizes with two constant matmuls per channel (models/clip.py)
    assert graph_flops(cfg, "clip_encoder", sh).total == CLIP + clip_resize_flops(cfg, 576).total
    # one generation: 50 x UNet, 2 decoder chunks of 14 (the 7-frame tail is padded), CLIP + encoder once
    want = (50 * unet_flops(cfg, 576, 42, "executed").total + 2 * 14 * DECODER_FRAME + ENCODER + CLIP
            + clip_resize_flops(cfg, 576).total)
    assert generation_flops_executed(cfg, sh, 50) == want
    with pytest.raises(ValueError, match="unknown graph"):
        graph_flops(cfg, "text_encoder", sh)


# ---------------------------------------------------------------------------------------------------------------
# helpers of the harness


def test_summarize_and_time_calls():
    from benchmarks.stats import summarize, time_calls

    s = summarize([3.0, 1.0, 2.0, 4.0])
    assert (s["n"], s["median_s"], s["min_s"], s["max_s"]) == (4, 2.5, 1.0, 4.0)
    assert 3.0 < s["p90_s"] <= 4.0
    calls = []
    warm, timed = time_calls(lambda: calls.append(1), warmup=2, repeats=3)
    assert (len(warm), len(timed), len(calls)) == (2, 3, 5)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, repeats=0)


def test_backend_variants_parse():
    from benchmarks.run import ISA_ENV, parse_backend

    assert parse_backend("onnxruntime") == ("onnxruntime", "onnxruntime", {}, {}, "auto")
    assert parse_backend("mindspore@avx2") == ("mindspore", "mindspore@avx2", {ISA_ENV: "AVX2"}, {}, "auto")
    assert parse_backend("mindspore@ALL") == ("mindspore", "mindspore@ALL", {ISA_ENV: "ALL"}, {}, "auto")
    assert parse_backend("onnxruntime@noarena") == ("onnxruntime", "onnxruntime@noarena", {},
                                                    {"cpu_mem_arena": False}, "auto")
    assert parse_backend("onnxruntime@arena") == ("onnxruntime", "onnxruntime@arena", {}, {"cpu_mem_arena": True},
                                                  "auto")
    assert parse_backend("onnxruntime@reuse")[3] == {"memory_reuse": True, "cpu_mem_arena": False}
    assert parse_backend("onnxruntime@noreuse")[3] == {"memory_reuse": False, "cpu_mem_arena": True}
    assert parse_backend("openvino@bf16") == ("openvino", "openvino@bf16", {}, {}, "bf16")
    assert parse_backend("openvino@f32") == ("openvino", "openvino@f32", {}, {}, "f32")
    with pytest.raises(ValueError, match="openvino only"):
        parse_backend("onnxruntime@bf16")
    with pytest.raises(ValueError, match="unknown backend"):
        parse_backend("tensorrt")
    with pytest.raises(ValueError, match="onnxruntime only"):
        parse_backend("mindspore@noarena")


def test_machine_info_and_peak_probe():
    from benchmarks.peak import machine_info, sgemm_peak, versions

    info = machine_info()
    assert info["cpus_usable"] >= 1 and info["ram_bytes"] > 0 and isinstance(info["flags"]["avx2"], bool)
    v = versions()
    import numpy as np
    assert v["numpy"] == np.__version__
    p = sgemm_peak(n=128, repeats=2, threads=1)
    assert p["flops"] == 2 * 128 ** 3 and p["threads"] == 1 and p["gflops_best"] >= p["gflops_median"] > 0
    if "avx512f" in open("/proc/cpuinfo").read():
        # the record names OpenBLAS's kernel; an old one (this guest read as "Prescott") is measured again with
        # the AVX-512 core type and said so
        assert p["kernel"] and ("default_kernel" in p or any(c in p["kernel"] for c in
                                                              ("SkylakeX", "Cooperlake", "SapphireRapids")))


def test_openvino_peaks_name_the_kernel_that_ran():
    pytest.importorskip("openvino")
    from benchmarks.peak import openvino_peaks

    peaks = openvino_peaks(n=256, repeats=2)
    assert set(peaks) == {"f32", "bf16", "int8"}
    assert peaks["f32"]["kernel"].endswith("(f32)")
    assert peaks["int8"]["kernel"].endswith("(u8)") or peaks["int8"]["kernel"].endswith("(i8)")
    flags = open("/proc/cpuinfo").read()
    if "amx_bf16" in flags:
        assert "amx" in peaks["bf16"]["kernel"] and "amx" in peaks["int8"]["kernel"].lower()


def _peak(op, gflops):
    return {"op": op, "threads": 2, "repeats": 3, "gflops_best": gflops, "gflops_median": gflops}


def _records(bf16_peak):
    run = {"record": "run", "variant": "sv3d_u", "graphs_dir": "g", "created": "now", "warmup": 0, "repeats": 1,
           "e2e_repeats": 0, "steps": 0, "threads": 0, "latent_size": 4,
           "machine": {"cpu_model": "cpu", "cpus_usable": 2, "ram_bytes": 2 ** 34, "flags": {"avx512_bf16": True},
                       "loadavg_1_5_15": [0.1, 0.2, 0.3]},
           "versions": {"python": "3"}, "shapes": {"resolution": 32, "num_frames": 21, "unet_batch": 21,
                                                   "decode_chunk": 7, "dtype": "float32", "attention_chunk": 0},
           "sgemm_peak": _peak("numpy sgemm", 200.0), "bf16_peak": bf16_peak}
    stage = {"record": "stage", "stage": "unet_call", "backend": "openvino@bf16", "n": 1, "times_s": [2.0],
             "median_s": 2.0, "min_s": 2.0, "p90_s": 2.0, "max_s": 2.0, "flops": 800e9}
    return [run, stage, {"record": "end", "loadavg_1_5_15": [0.1, 0.2, 0.3]}]


def test_report_gives_efficiency_against_both_measured_peaks():
    """400 GFLOP/s is 200 % of a 200 GFLOP/s sgemm peak and 50 % of an 800 GFLOP/s bf16 peak; without a bf16
    probe (no openvino run) the column is absent rather than empty."""
    from benchmarks.report import to_markdown
    from benchmarks.run import add_efficiency

    md = to_markdown(add_efficiency(_records(_peak("openvino matmul bf16", 800.0))))
    assert "bf16 matmul peak measured in this run: openvino matmul bf16" in md and "**800.0 GFLOP/s**" in md
    header = next(line for line in md.splitlines() if line.startswith("| stage |"))
    row = next(line for line in md.splitlines() if line.startswith("| unet_call |"))
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|")))
    cells = {k.strip(): v.strip() for k, v in cells.items()}
    assert (cells["GFLOP/s"], cells["% peak"], cells["% bf16 peak"]) == ("400.0", "200.0", "50.0")

    md = to_markdown(add_efficiency(_records(None)))
    assert "bf16 peak" not in md and "| 400.0 | 200.0 |" in md


# ---------------------------------------------------------------------------------------------------------------
# the harness end to end on a tiny export (well-formed output; no timing assertions)

SMOKE_BACKENDS = ("onnxruntime@noarena", "mindspore@AVX2", "mslite")
STAGES = ("clip_encoder", "vae_encoder", "unet_call", "vae_decoder_chunk", "unet_step", "numpy_glue_step",
          "end_to_end")


@pytest.fixture(scope="module")
def tiny_export(oracle, oracle_export, export_cache):
    """The session's sv3d_u_tiny export (tests/conftest.py), then found again in its cache by ensure_export."""
    from benchmarks.exporting import ensure_export

    cache = export_cache
    ckpt = oracle / "sv3d_u_tiny" / "checkpoint.safetensors"
    out = oracle_export("sv3d_u_tiny")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert ensure_export("sv3d_u_tiny", ckpt, cache=cache, resolution=64, parity="off") == out   # cache hit
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    return out


@pytest.mark.export
def test_harness_smoke(tiny_export, tmp_path):
    import json

    from benchmarks.__main__ import main
    from models.flops import graph_flops
    from benchmarks.run import _skip_reason
    from runtime import Manifest

    rc = main(["--graphs", str(tiny_export), "--backends", ",".join(SMOKE_BACKENDS), "--steps", "1",
               "--repeats", "1", "--warmup", "0", "--peak-n", "256", "--out-dir", str(tmp_path), "--tag", "smoke"])
    assert rc == 0
    records = [json.loads(line) for line in (tmp_path / "smoke.jsonl").read_text().splitlines()]
    assert records[0]["record"] == "run" and records[-1]["record"] == "end"
    run = records[0]
    for key in ("machine", "versions", "sgemm_peak", "shapes", "steps", "repeats", "method"):
        assert key in run
    assert run["shapes"]["resolution"] == 64 and run["steps"] == 1

    m = Manifest.load(tiny_export)
    cfg, shapes = m.sv3d_config(), m.shapes
    graph_of = {"clip_encoder": "clip_encoder", "vae_encoder": "vae_encoder", "unet_call": "unet",
                "vae_decoder_chunk": "vae_decoder"}
    for label in SMOKE_BACKENDS:
        recs = [r for r in records if r.get("backend") == label]
        name = label.split("@")[0]
        if _skip_reason(name, m):                       # not installed, or cannot read this export's formats
            assert [r["record"] for r in recs] == ["skipped"] and recs[0]["reason"] == _skip_reason(name, m)
            continue
        assert next(r for r in recs if r["record"] == "backend")["status"] == "ok"
        for phase in ("graph", "e2e"):       # each graph loaded alone, then all four for the pipeline
            loads = [r["graph"] for r in recs if r["record"] == "load" and r["phase"] == phase]
            assert sorted(loads) == sorted(graph_of.values())
        points = {r["point"] for r in recs if r["record"] == "memory"}
        assert {"start", "loaded all", "peak"} | {f"loaded {g}" for g in graph_of.values()} <= points
        stages = {r["stage"]: r for r in recs if r["record"] == "stage"}
        assert set(stages) == set(STAGES)
        for stage, r in stages.items():
            assert r["n"] == len(r["times_s"]) >= 1
            assert r["min_s"] <= r["median_s"] <= r["p90_s"] <= r["max_s"]
            if stage in graph_of:
                assert r["flops"] == graph_flops(cfg, graph_of[stage], shapes).total
                assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        assert stages["end_to_end"]["steps"] == 1

    md = (tmp_path / "smoke.md").read_text()
    assert "## Backends" in md and "## Latency per stage (seconds)" in md
    # every markdown table row has as many cells as its header
    table, cols = None, 0
    for line in md.splitlines():
        if line.startswith("|"):
            if table is None:
                table, cols = line, line.count("|")
            assert line.count("|") == cols, line
        else:
            table = None
    for label in SMOKE_BACKENDS:
        assert f"| {label} |" in md


def test_every_graph_stage_has_a_place_in_the_report():
    """The benchmark stages come from runtime.specs.GRAPH_ROLES; each must be one the report knows how to order
    (a stage missing from STAGE_ORDER would drop out of the tables)."""
    from benchmarks.report import STAGE_ORDER
    from benchmarks.run import GRAPH_STAGES
    from runtime.backends.openvino_backend import REDUCED_PRECISION_GRAPHS
    from runtime.specs import GRAPH_NAMES

    assert list(GRAPH_STAGES) == list(GRAPH_NAMES)
    assert all(stage in STAGE_ORDER for stage in GRAPH_STAGES.values()), (GRAPH_STAGES, STAGE_ORDER)
    assert REDUCED_PRECISION_GRAPHS == ("unet", "vae_decoder")      # the graphs that run many times per video


def test_openvino_profile_sums_the_kernels_of_a_call(toy_export, tmp_path):
    pytest.importorskip("openvino")
    from benchmarks.openvino_profile import main, profile
    from runtime import Manifest

    folder, _ = toy_export
    m = Manifest.load(folder)
    entry = m.entry("onnx", "unet")
    feeds = entry.spec.example_inputs(seed=0)
    r = profile(str(m.root / entry.model_file), "unet", feeds, precision="f32", calls=2)
    assert len(r["call_wall_s"]) == 2 and not r["blob_imported"]
    assert r["kernel_seconds_last_call"] == pytest.approx(sum(f["seconds"] for f in r["families"]))
    assert r["properties"]["INFERENCE_PRECISION_HINT"] == "f32" and "CACHE_DIR" not in r["properties"]
    assert any(f["family"].startswith(("FullyConnected", "Convolution")) for f in r["families"])
    # through the runtime's cache: the first run writes the blob, the second imports it
    cache = tmp_path / "cache"
    assert not profile(str(m.root / entry.model_file), "unet", feeds, "f32", 1, cache_dir=str(cache))["blob_imported"]
    assert profile(str(m.root / entry.model_file), "unet", feeds, "f32", 1, cache_dir=str(cache))["blob_imported"]
    out = tmp_path / "p.json"
    assert main(["--graphs", str(folder), "--precision", "f32", "--calls", "1", "--json", str(out)]) == 0
    import json

    assert json.loads(out.read_text())["graph"] == "unet"


def test_openvino_profile_in_the_loop(toy_exports, tmp_path, capsys):
    """--loop: every UNet call of a real generate is profiled (one per step at batch 2T, two at batch T)."""
    pytest.importorskip("openvino")
    from benchmarks.openvino_profile import main, profile_loop
    from configs import load_config
    from tests.toy_graphs import write_toy_export

    t = load_config("sv3d_u_tiny").num_frames
    for batch, per_step in ((2 * t, 1), (t, 2)):
        folder = write_toy_export(tmp_path / f"b{batch}", unet_batch=batch).folder
        r = profile_loop(str(folder), steps=3, precision="f32")
        assert len(r["loop_steps"]) == 3 and len(r["calls"]) == 3 * per_step
        for c in r["calls"]:
            assert c["kernel_seconds_last_call"] == pytest.approx(sum(f["seconds"] for f in c["families"]))
            assert c["wall_s"] > 0 and c["families"]
        assert "unet" in r["stages"] and "vae_decoder" in r["stages"]
    out = tmp_path / "loop.json"
    assert main(["--graphs", str(folder), "--loop", "2", "--precision", "f32", "--json", str(out)]) == 0
    assert "UNet calls inside a 2-step generate" in capsys.readouterr().out
    import json

    assert len(json.loads(out.read_text())["calls"]) == 4
    with pytest.raises(SystemExit):
        main(["--graphs", str(folder), "--loop", "2", "--model", "other.onnx"])
