"""Where an ONNX Runtime graph spends its time: per operator type, with the FLOP rate of matmuls and convs.

    python -m benchmarks.ort_profile --graphs DIR --graph unet [--runs 1] [--threads 0]

Runs the graph (optimisation level ALL, as runtime/backends does; memory arena off unless --arena) once to warm
up, then `runs` times with ORT's profiler on, and sums the kernel time of every node by operator type. FLOPs of
Conv / MatMul / Gemm nodes (and ORT's fused variants) come from the input/output shapes the profiler records (2 per
MAC; the profiler omits some nodes' shapes, so the table says how much of the counted total it saw); other
operators (normalisation, activation, elementwise, layout) are reported by time only. This is what answers "what limits
the engine": the share of time outside the FLOP-bearing kernels, and how fast those kernels run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Optional

MATMUL_OPS = ("MatMul", "FusedMatMul", "Gemm", "MatMulNBits")
CONV_OPS = ("Conv", "FusedConv", "NchwcConv")


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _shapes(entries) -> List[List[int]]:
    """The profiler's [{'float': [dims]}, ...] -> [[dims], ...]."""
    out = []
    for e in entries or []:
        out.append(list(next(iter(e.values()))) if isinstance(e, dict) and e else [])
    return out


def node_flops(op: str, inputs: List[List[int]], outputs: List[List[int]]) -> int:
    """2 x MACs of one Conv/MatMul/Gemm node from its recorded shapes (0 for other ops or missing shapes)."""
    if not outputs or not outputs[0]:
        return 0
    out = outputs[0]
    if op in MATMUL_OPS and len(inputs) >= 2 and inputs[0]:
        k = inputs[0][-1]                      # A (..., M, K) @ B (K, N); Gemm without transA
        return 2 * _prod(out) * k
    if op in CONV_OPS and len(inputs) >= 2 and len(inputs[1]) >= 3:
        w = inputs[1]                          # (Co, Ci/groups, *kernel); NCHWc weights are reordered but
        return 2 * _prod(out) * _prod(w[1:])   # keep Ci/g x kernel per output element
    return 0


def profile(model_path: str, graph: str, feeds: Dict[str, "object"], runs: int = 1, threads: int = 0) -> dict:
    """Profiles the graph in a session opened with the runtime's own options (runtime/backends/onnxruntime_backend)."""
    import onnxruntime as ort

    from runtime.backends.base import RunOptions
    from runtime.backends.onnxruntime_backend import session_options

    so = session_options(RunOptions(threads=threads), graph)
    with tempfile.TemporaryDirectory(prefix="ort_prof_") as d:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "prof")
        sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)                              # warm-up (first-run allocations): not counted
        for _ in range(runs):
            sess.run(None, feeds)
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    # drop the first (unmeasured) run's nodes: every run has the same number of kernel events
    per_run = len(node_events) // (runs + 1) if node_events else 0
    node_events = node_events[per_run:] if per_run else node_events
    by_op: Dict[str, dict] = defaultdict(lambda: {"calls": 0, "us": 0.0, "flops": 0})
    for e in node_events:
        a = e.get("args", {})
        op = a.get("op_name", "?")
        d = by_op[op]
        d["calls"] += 1
        d["us"] += float(e.get("dur", 0))
        d["flops"] += node_flops(op, _shapes(a.get("input_type_shape")), _shapes(a.get("output_type_shape")))
    total_us = sum(d["us"] for d in by_op.values())
    rows = []
    for op, d in sorted(by_op.items(), key=lambda kv: -kv[1]["us"]):
        sec = d["us"] / 1e6 / runs
        rows.append({"op": op, "calls_per_run": d["calls"] // runs, "seconds_per_run": sec,
                     "share": d["us"] / total_us if total_us else 0.0, "flops_per_run": d["flops"] // runs,
                     "gflops": (d["flops"] / runs) / sec / 1e9 if d["flops"] and sec else None})
    return {"model": model_path, "runs": runs, "threads": threads,
            "kernel_seconds_per_run": total_us / 1e6 / runs,
            "flops_seen_per_run": sum(r["flops_per_run"] for r in rows), "by_op": rows}


def to_markdown(result: dict, counted_flops: Optional[int] = None) -> str:
    seen = result["flops_seen_per_run"]
    cover = (f"; the recorded shapes account for {seen / 1e9:.1f} of the {counted_flops / 1e9:.1f} GFLOP "
             f"models.flops counts (nodes whose shapes the profiler omits add nothing)" if counted_flops else "")
    lines = [f"ORT per-operator profile of {result['model']} ({result['runs']} run(s), kernel time "
             f"{result['kernel_seconds_per_run']:.3f} s per run{cover})", "",
             "| op type | calls | s per run | share | GFLOP | GFLOP/s |", "|---|---|---|---|---|---|"]
    for r in result["by_op"]:
        gf = f"{r['flops_per_run'] / 1e9:.1f}" if r["flops_per_run"] else "-"
        rate = f"{r['gflops']:.1f}" if r["gflops"] else "-"
        lines.append(f"| {r['op']} | {r['calls_per_run']} | {r['seconds_per_run']:.4f} | {100 * r['share']:.1f}% | "
                     f"{gf} | {rate} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    from runtime import Manifest

    p = argparse.ArgumentParser(prog="python -m benchmarks.ort_profile", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", required=True, help="export folder (manifest.json)")
    p.add_argument("--graph", default="unet", help="clip_encoder | vae_encoder | unet | vae_decoder")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="", help="also write the result here")
    a = p.parse_args(argv)
    m = Manifest.load(a.graphs)
    entry = m.entry("onnx", a.graph)
    result = profile(str(m.root / entry.model_file), a.graph, entry.spec.example_inputs(seed=0), a.runs, a.threads)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    from models.flops import graph_flops

    print(to_markdown(result, graph_flops(m.sv3d_config(), a.graph, m.shapes).total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
