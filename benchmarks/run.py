"""The benchmark harness: an export folder, several backends side by side, one child process per backend.

Why a child per backend: peak RSS is per process (`ru_maxrss`), engines keep thread pools and allocator caches
that would disturb the next engine, and oneDNN reads its ISA cap (ONEDNN_MAX_CPU_ISA) once at load -- so a
variant such as `mindspore@AVX2` only works in a fresh process.

Method (what every number means), per backend:
  graph      each graph alone: loaded with runtime.backends.load_graph (load time; file sizes verified, sha256
             not timed), run on GraphSpec.example_inputs -- `warmup` calls (the first one reported apart), then
             `repeats` timed ones -- and released (unet_call = one UNet call of the export's batch;
             vae_decoder_chunk = one decoder call);
  e2e        all four graphs loaded again together, then SV3DPipeline.generate on a synthetic image with `steps`
             Euler steps, `e2e_repeats` times: per-step UNet graph time (unet_step), per-step numpy glue
             (numpy_glue_step), and the whole generation (end_to_end). These sessions are new, so their first
             UNet step also carries the engine's first-run work (visible as a slower unet_step);
  memory     RSS at start, after each load and run, with all graphs loaded, and the process peak (ru_maxrss).
Efficiency = counted FLOPs of the call (models.flops, what the graph executes) / median seconds, also given as
a fraction of numpy's fp32 sgemm peak measured in the same run.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from runtime.peak_rss import peak_rss_bytes
from runtime.specs import GRAPH_ROLES

from .stats import summarize, time_calls

GRAPH_STAGES = {name: role.stage for name, role in GRAPH_ROLES.items()}
# Backend variants: "<backend>@<ISA>" runs the backend with oneDNN capped at that ISA (benchmarks/README.md:
# MindSpore's CPU 3x3 convolution takes oneDNN's reference kernel on AVX-512 machines).
ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# onnxruntime@<mod>: its memory plan for every graph, as RunOptions fields (plain onnxruntime = the runtime's
# per-graph plan, onnxruntime_backend.memory_plan); @reuse = buffer reuse on, arena off; @noreuse = the opposite
ORT_MEMORY_MODS = {"noarena": {"cpu_mem_arena": False}, "arena": {"cpu_mem_arena": True},
                   "reuse": {"memory_reuse": True, "cpu_mem_arena": False},
                   "noreuse": {"memory_reuse": False, "cpu_mem_arena": True}}
PRECISION_MODS = ("f32", "bf16", "int8")             # openvino@f32 / @bf16 / @int8 (RunOptions.precision)
CHILD_FLAG = "--child"
SYNTHETIC_IMAGE_SEED = 0


@dataclass
class BackendRun:
    """What one child process measures."""
    graphs_dir: str
    backend: str                       # runtime backend name: onnxruntime | mindspore | mslite
    label: str                         # how the report names it, e.g. "mindspore@AVX2"
    env: Dict[str, str] = field(default_factory=dict)
    threads: int = 0                   # intra-op threads (0 = engine default)
    warmup: int = 1
    repeats: int = 3
    steps: int = 2                     # Euler steps of the end-to-end run (0 = no end-to-end run)
    e2e_repeats: int = 1
    graphs: Tuple[str, ...] = tuple(GRAPH_STAGES)
    ort_memory: Dict[str, bool] = field(default_factory=dict)   # RunOptions fields from ORT_MEMORY_MODS
    precision: str = "auto"            # openvino: f32 | bf16 | auto
    out_jsonl: str = ""


def parse_backend(spec: str) -> Tuple[str, str, Dict[str, str], Dict[str, bool], str]:
    """A backend with optional @modifiers -> (backend, label, environment, ORT memory-plan options, precision).

    '@f32' / '@bf16' / '@int8' set OpenVINO's precision (RunOptions.precision; default auto).

    '@<ISA>' sets oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) for the run: mindspore@AVX2 caps it, mindspore@ALL lifts
    any cap (runtime/backends caps MindSpore at AVX2 unless the variable is set). '@noarena' / '@arena' run ONNX
    Runtime without / with its CPU memory arena, '@reuse' / '@noreuse' with / without its buffer-reuse plan (ORT_MEMORY_MODS)."""
    from runtime.backends import BACKENDS

    name, *mods = spec.split("@")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} in {spec!r}; expected one of {list(BACKENDS)}, optionally "
                         f"with @ISA (e.g. mindspore@AVX2, mindspore@ALL) or @noarena / @arena / @reuse / @noreuse (onnxruntime)")
    env, memory, precision = {}, {}, "auto"
    for mod in mods:
        if mod.lower() in PRECISION_MODS:
            if name != "openvino":
                raise ValueError(f"@{mod} applies to openvino only, got {spec!r}")
            precision = mod.lower()
        elif mod.lower() in ORT_MEMORY_MODS:
            if name != "onnxruntime":
                raise ValueError(f"@{mod} applies to onnxruntime only, got {spec!r}")
            memory.update(ORT_MEMORY_MODS[mod.lower()])
        elif mod:
            env[ISA_ENV] = mod.upper()
    return name, spec, env, memory, precision


def run_options(threads: int, memory: Optional[Dict[str, bool]] = None, precision: str = "auto",
                cache_dir: Optional[str] = None):
    """runtime.backends.RunOptions for a run; `memory` (from the ORT_MEMORY_MODS modifiers) sets memory_reuse /
    cpu_mem_arena, the rest keep the runtime's defaults."""
    from runtime import RunOptions

    return RunOptions(threads=threads, precision=precision, cache_dir=cache_dir, **(memory or {}))


# ---------------------------------------------------------------------------------------------------------------
# child


def _rss() -> Optional[int]:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def synthetic_image(resolution: int):
    """A smooth [-1, 1] test image (1, 3, S, S): the content does not change the work, only the values."""
    import numpy as np

    y, x = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / max(resolution - 1, 1)
    img = np.stack([np.sin(6.0 * x), np.cos(5.0 * y), np.sin(4.0 * (x + y))])[None]
    return (0.9 * img).astype(np.float32)


def _child(run: BackendRun) -> None:
    from runtime import GRAPH_NAMES, Manifest, SV3DPipeline, load_graph
    from runtime.backends import backend_format

    from models.flops import generation_flops_executed, graph_flops

    def emit(rec: dict) -> None:
        with open(run.out_jsonl, "a") as f:
            f.write(json.dumps({"backend": run.label, **rec}) + "\n")

    emit({"record": "memory", "point": "start", "rss_bytes": _rss()})
    manifest = Manifest.load(run.graphs_dir)
    cfg, shapes = manifest.sv3d_config(), manifest.shapes
    manifest.verify_files(backend_format(run.backend, manifest), checksums=False)
    # openvino compiles into a cache that starts empty (cwd is the child's scratch folder): the first load of a
    # graph is a cold compile, a second one ("graph_cached") reads the compiled blob
    cache = os.path.abspath("ov_cache") if run.backend == "openvino" else None
    options = run_options(run.threads, run.ort_memory, run.precision, cache)

    def load(g: str, phase: str):
        t0 = time.perf_counter()
        runner = load_graph(manifest, g, backend=run.backend, options=options, verify=False)
        emit({"record": "load", "graph": g, "phase": phase, "seconds": time.perf_counter() - t0,
              "precision": getattr(runner, "precision", None)})
        return runner

    # 1. each graph alone: loaded, timed, released (the full-size graphs do not all fit in RAM at once on every
    #    machine; this also gives each graph's own memory footprint)
    for g in run.graphs:
        runner = load(g, "graph")
        if cache is not None:
            del runner
            gc.collect()
            runner = load(g, "graph_cached")
        emit({"record": "memory", "point": f"loaded {g}", "rss_bytes": _rss()})
        feeds = runner.spec.example_inputs(seed=0)
        warm, times = time_calls(lambda: runner.run(feeds), run.warmup, run.repeats)
        emit({"record": "memory", "point": f"ran {g}", "rss_bytes": _rss()})
        emit({"record": "stage", "stage": GRAPH_STAGES[g], "graph": g, "times_s": times, "warmup_s": warm,
              "precision": getattr(runner, "precision", None),
              **summarize(times),
              "flops": graph_flops(cfg, g, shapes).total,
              "flops_reference": graph_flops(cfg, g, shapes, mode="reference").total})
        del runner, feeds
        gc.collect()

    # 2. the pipeline with all four graphs loaded, as a deployment runs it
    if run.steps:
        runners = {g: load(g, "e2e") for g in GRAPH_NAMES}
        emit({"record": "memory", "point": "loaded all", "rss_bytes": _rss()})
        pipe = SV3DPipeline(cfg, shapes, runners, backend=run.backend)
        image = synthetic_image(shapes.resolution)
        step_graph, step_glue, total, stage_s = [], [], [], []
        for r in range(run.e2e_repeats):
            res = pipe.generate(image, seed=SYNTHETIC_IMAGE_SEED + r, num_steps=run.steps)
            step_graph += [s.graph_s for s in res.timings.steps]
            step_glue += [s.glue_s for s in res.timings.steps]
            total.append(res.timings.stages["total"])
            stage_s.append(dict(res.timings.stages))
        calls = (2 * shapes.num_frames) // shapes.unet_batch
        unet = graph_flops(cfg, "unet", shapes)
        emit({"record": "stage", "stage": "unet_step", "graph": "unet", "times_s": step_graph,
              **summarize(step_graph), "flops": calls * unet.total,
              "flops_reference": calls * graph_flops(cfg, "unet", shapes, mode="reference").total})
        emit({"record": "stage", "stage": "numpy_glue_step", "graph": None, "times_s": step_glue,
              **summarize(step_glue), "flops": None})
        emit({"record": "stage", "stage": "end_to_end", "graph": None, "steps": run.steps, "times_s": total,
              **summarize(total), "flops": generation_flops_executed(cfg, shapes, run.steps),
              "pipeline_stages_s": stage_s})
    emit({"record": "memory", "point": "peak", "rss_bytes": peak_rss_bytes()})


def child_main(argv: List[str]) -> int:
    run = BackendRun(**json.loads(argv[0]))
    run.graphs = tuple(run.graphs)
    try:
        _child(run)
    except Exception as e:                  # reported as a record: the parent's report shows it
        with open(run.out_jsonl, "a") as f:
            f.write(json.dumps({"backend": run.label, "record": "error", "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()[-2000:]}) + "\n")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parent


def _skip_reason(backend: str, manifest) -> Optional[str]:
    """Why `backend` cannot run this export (the runtime's own answer: resolve_backend), or None."""
    from runtime.backends import BackendError, resolve_backend

    try:
        resolve_backend(backend, manifest)
    except BackendError as e:
        return str(e)
    return None


def run_backend(run: BackendRun, timeout: float) -> List[dict]:
    """Run one backend in a child process; its records (an error/timeout record if it failed)."""
    repo = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(prefix="sv3d_bench_") as scratch:
        run.out_jsonl = os.path.join(scratch, "records.jsonl")
        # a plain backend name means the engine's defaults: an inherited ISA cap (tests/conftest.py sets one) is
        # dropped unless this variant asks for it
        env = {k: v for k, v in os.environ.items() if k != ISA_ENV}
        env.update(run.env)
        env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in [os.environ.get("PYTHONPATH", "")] if p])
        cmd = [sys.executable, "-m", "benchmarks.run", CHILD_FLAG, json.dumps(asdict(run))]
        t0 = time.perf_counter()
        status = "ok"
        try:
            p = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, timeout=timeout)
            if p.returncode != 0:
                status = f"exit {p.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        records = []
        if os.path.exists(run.out_jsonl):
            with open(run.out_jsonl) as f:
                records = [json.loads(line) for line in f if line.strip()]
        if status != "ok" and not any(r["record"] == "error" for r in records):
            tail = p.stderr.strip().splitlines()[-3:] if status.startswith("exit") else []
            detail = (": " + " / ".join(tail)) if tail else ""
            if status == "exit -9":
                detail += " (SIGKILL: on Linux usually the out-of-memory killer)"
            records.append({"backend": run.label, "record": "error", "error": status + detail})
        records.append({"backend": run.label, "record": "backend", "name": run.backend, "env": run.env,
                        "ort_memory": run.ort_memory, "precision": run.precision, "threads": run.threads,
                        "status": status,
                        "wall_s": time.perf_counter() - t0})
        return records


def benchmark(graphs_dir, backends: List[str], *, threads: int = 0, warmup: int = 1, repeats: int = 3,
              steps: int = 2, e2e_repeats: int = 1, graphs: Tuple[str, ...] = tuple(GRAPH_STAGES),
              timeout: float = 3600.0, peak_n: int = 2048, progress=print, on_backend=None) -> List[dict]:
    """All records of one benchmark run: a 'run' header (machine, versions, peak, shapes, method), then each
    backend's records in order (a 'skipped' record where a backend cannot run here).

    on_backend(records so far) is called after every backend, so that partial results can be saved."""
    from runtime import Manifest

    from .peak import machine_info, openvino_peaks, sgemm_peak, versions

    manifest = Manifest.load(graphs_dir)
    unknown = [g for g in graphs if g not in GRAPH_STAGES]
    if unknown:
        raise ValueError(f"unknown graph(s) {unknown}; expected some of {list(GRAPH_STAGES)}")
    parsed = [parse_backend(b) for b in backends]
    peak = sgemm_peak(peak_n, threads=threads or None)
    ov_peaks = openvino_peaks(repeats=3) if any(p[0] == "openvino" for p in parsed) else {}
    bf16_peak = ov_peaks.get("bf16")
    records = [{"record": "run", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
                "versions": versions(), "sgemm_peak": peak, "bf16_peak": bf16_peak,
                "openvino_peaks": ov_peaks, "graphs_dir": str(graphs_dir),
                "variant": manifest.variant, "config_name": manifest.config.get("name", ""),
                "shapes": manifest.shapes.to_dict(),
                "latent_size": manifest.runtime.latent_size(manifest.shapes.resolution),
                "steps": steps, "warmup": warmup, "repeats": repeats,
                "e2e_repeats": e2e_repeats, "threads": threads, "method": (__doc__ or "").split("Method", 1)[-1]}]
    progress(f"sgemm peak {peak['gflops_best']:.0f} GFLOP/s ({peak['threads']} threads)"
             + "".join(f", OpenVINO {k} matmul peak {v['gflops_best']:.0f} GFLOP/s ({v['kernel']})"
                       for k, v in ov_peaks.items() if v)
             + f"; load {records[0]['machine']['loadavg_1_5_15']}")
    for name, label, env, memory, precision in parsed:
        why = _skip_reason(name, manifest)
        if why:
            records.append({"backend": label, "record": "skipped", "reason": why})
            progress(f"{label}: skipped ({why})")
            continue
        progress(f"{label}: running ...")
        run = BackendRun(str(graphs_dir), name, label, env, threads, warmup, repeats, steps, e2e_repeats,
                         tuple(graphs), ort_memory=memory, precision=precision)
        recs = run_backend(run, timeout)
        records += recs
        progress(f"{label}: {recs[-1]['status']} in {recs[-1]['wall_s']:.1f} s")
        if on_backend is not None:
            on_backend(records)
    records.append({"record": "end", "loadavg_1_5_15": list(os.getloadavg())})
    return records


def add_efficiency(records: List[dict]) -> List[dict]:
    """gflops (counted FLOPs / median) and its fraction of the sgemm peak on every stage record with FLOPs."""
    head = next(r for r in records if r["record"] == "run")
    peak = head["sgemm_peak"]["gflops_best"]
    bf16 = (head.get("bf16_peak") or {}).get("gflops_best")
    int8 = ((head.get("openvino_peaks") or {}).get("int8") or {}).get("gflops_best")
    for r in records:
        if r["record"] == "stage" and r.get("flops"):
            r["gflops"] = r["flops"] / r["median_s"] / 1e9
            r["peak_fraction"] = r["gflops"] / peak
            if bf16:
                r["bf16_peak_fraction"] = r["gflops"] / bf16
            if int8:
                r["int8_peak_fraction"] = r["gflops"] / int8
            if r.get("flops_reference"):
                r["gflops_reference"] = r["flops_reference"] / r["median_s"] / 1e9
    return records


def write_results(records: List[dict], out_dir, tag: str) -> Tuple[Path, Path]:
    from .report import to_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl, md = out / f"{tag}.jsonl", out / f"{tag}.md"
    with open(jsonl, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    md.write_text(to_markdown(records))
    return jsonl, md


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == CHILD_FLAG:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("benchmarks.run is the harness's child entry point; run `python -m benchmarks --help`")
