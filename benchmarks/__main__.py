"""`python -m benchmarks`: per-stage latency, load time, memory and FLOP efficiency of an export, per backend.

    python -m benchmarks --graphs exports/sv3d_u_256 --backends onnxruntime,mindspore,mindspore@AVX2,mslite
    python -m benchmarks --config sv3d_u_tiny --checkpoint tiny.safetensors --resolution 64 --steps 1

The second form exports the config + checkpoint at the given shapes into a cache folder first (reused when its
manifest is already there). Results: <out-dir>/<tag>.jsonl (one JSON record per line) and <tag>.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

from runtime.backends import BACKENDS

DEFAULT_BACKENDS = "onnxruntime,mindspore,mslite"
DEFAULT_OUT = "benchmark_results"
DEFAULT_CACHE = Path.home() / ".cache" / "sv3d_bench"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    src = p.add_argument_group("what to benchmark (an export folder, or a config + checkpoint to export)")
    src.add_argument("--graphs", help="export folder (holds manifest.json)")
    src.add_argument("--config", help="config name or YAML path (with --checkpoint)")
    src.add_argument("--checkpoint", help="safetensors checkpoint in the official layout")
    src.add_argument("--resolution", type=int, help="export resolution (default: the config's)")
    src.add_argument("--unet-batch", default="2T", help="2T (default) or T, as python -m export")
    src.add_argument("--decode-chunk", type=int, help="default: as python -m export (no padding frames)")
    src.add_argument("--dtype", default="fp32", help="fp32 or fp16, as python -m export")
    src.add_argument("--attention-chunk", type=int, default=0, help="memory-bounded attention query chunk")
    src.add_argument("--formats", default="onnx,mindir", help="graph formats to export")
    src.add_argument("--parity", default="auto", help="the export's parity gate (python -m export --help)")
    src.add_argument("--cache", default=str(DEFAULT_CACHE), help="where exports made here are kept")
    run = p.add_argument_group("how")
    run.add_argument("--backends", default=DEFAULT_BACKENDS,
                     help=f"comma-separated: {', '.join(BACKENDS)}; NAME@ISA caps oneDNN's ISA for that run "
                          "(e.g. mindspore@AVX2); openvino@f32 / @bf16 set its precision; onnxruntime@noarena / "
                          "@arena / @reuse / @noreuse set ORT's memory plan (benchmarks/run.py PRECISION_MODS, "
                          "ORT_MEMORY_MODS)")
    run.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = engine default)")
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--steps", type=int, default=2, help="Euler steps of the end-to-end run (0: none)")
    run.add_argument("--e2e-repeats", type=int, default=1)
    run.add_argument("--only", default="", help="graphs to time alone (default all): clip_encoder,vae_encoder,"
                                                 "unet,vae_decoder")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds per backend")
    run.add_argument("--peak-n", type=int, default=2048, help="size of the sgemm peak probe")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", default=DEFAULT_OUT)
    out.add_argument("--tag", default="", help="file name stem (default: <config>_<resolution>_<time>)")
    return p


def resolve_graphs(a: argparse.Namespace) -> Path:
    if a.graphs:
        if a.config or a.checkpoint:
            raise SystemExit("error: give either --graphs, or --config with --checkpoint, not both")
        return Path(a.graphs)
    if not (a.config and a.checkpoint):
        raise SystemExit("error: expected --graphs DIR, or --config NAME --checkpoint FILE")
    from configs import ConfigError
    from models.checkpoint import CheckpointError
    from export import ExportError
    from .exporting import ensure_export

    try:         # the export checks every option itself (python -m export's messages)
        return ensure_export(a.config, a.checkpoint, cache=Path(a.cache), resolution=a.resolution,
                             unet_batch=a.unet_batch, decode_chunk=a.decode_chunk, dtype=a.dtype,
                             attention_chunk=a.attention_chunk, formats=a.formats, parity=a.parity)
    except (ConfigError, CheckpointError, ExportError) as e:
        raise SystemExit(f"error: {e}") from None


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    from runtime import GraphError, Manifest

    from .run import add_efficiency, benchmark, write_results

    graphs = resolve_graphs(a)
    try:
        manifest = Manifest.load(graphs)
    except GraphError as e:
        raise SystemExit(f"error: {e}") from None
    tag = a.tag or f"{manifest.config.get('name') or manifest.variant}_{manifest.shapes.resolution}_" \
                   f"{time.strftime('%Y%m%d-%H%M%S')}"
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    only = tuple(g.strip() for g in a.only.split(",") if g.strip())
    kwargs = dict(threads=a.threads, warmup=a.warmup, repeats=a.repeats, steps=a.steps,
                  e2e_repeats=a.e2e_repeats, timeout=a.timeout, peak_n=a.peak_n,
                  progress=lambda s: print(s, file=sys.stderr, flush=True),
                  on_backend=lambda recs: write_results(add_efficiency(recs), a.out_dir, tag))
    if only:
        kwargs["graphs"] = only
    try:
        records = add_efficiency(benchmark(graphs, backends, **kwargs))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    jsonl, md = write_results(records, a.out_dir, tag)
    print(md.read_text())
    print(f"wrote {jsonl} and {md}", file=sys.stderr)
    failed = [r for r in records if r["record"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
