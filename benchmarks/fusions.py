"""`python -m benchmarks.fusions`: what each ONNX fusion buys, in time and peak memory per graph call.

    python -m benchmarks.fusions --graphs exports/sv3d_u_256_plain --backend onnxruntime --graph unet

Takes an export written with ``--onnx-form plain``, and for each variant (the plain graph; each rewrite of the
fused form, export/onnx_fuse.FORMS["fused"], alone; all of them) writes the variant beside ``--work``, then loads and
runs it in a fresh child process (peak RSS is per process) through the runtime's own loader and session settings
(runtime.backends.load_file): load time, ``--warmup`` untimed calls, ``--repeats`` timed calls, ``ru_maxrss``.
One JSON record per variant goes to stdout, then a table. Each variant's files are deleted once it is measured,
so the disk holds the plain export plus one variant at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from runtime.peak_rss import peak_rss_bytes
from runtime.specs import GRAPH_NAMES

from .stats import summarize, time_calls

ALL = "all"
ONNX_BACKENDS = ("onnxruntime", "openvino")     # the backends that load the ONNX files being rewritten


def variants_of(fusions: Sequence[str]) -> List[str]:
    """plain, each fusion alone, all of them."""
    return ["plain", *fusions, ALL]


def _child(path: str, graph: str, graphs: str, backend: str, form: str, warmup: int, repeats: int) -> dict:
    from runtime.backends import load_file
    from runtime.backends.base import RunOptions
    from runtime.manifest import Manifest

    spec = Manifest.load(graphs).entry("onnx", graph).spec
    feeds = spec.example_inputs(0)
    t0 = time.perf_counter()
    runner = load_file(path, spec, backend=backend, options=RunOptions(precision="f32"), form=form)
    load_s = time.perf_counter() - t0
    warm, times = time_calls(lambda: runner.run(feeds), warmup, repeats)
    return {"load_s": load_s, "warmup_s": warm, "times_s": times, **summarize(times),
            "peak_rss_bytes": peak_rss_bytes()}


def measure(graphs: Path, graph: str, backend: str, work: Path, warmup: int, repeats: int,
            variants: Optional[Sequence[str]] = None, progress=print) -> List[dict]:
    """One record per variant (module docstring). `graphs` must be a plain-form export."""
    from export.onnx_fuse import FORMS, fuse_file
    from runtime.manifest import Manifest

    manifest = Manifest.load(graphs)
    entry = manifest.entry("onnx", graph)
    if entry.form != "plain":
        raise ValueError(f"{graphs}: graph {graph} is in the {entry.form!r} form; this measures fusions from the "
                         f"plain form (python -m export ... --onnx-form plain)")
    variants = list(variants or variants_of(FORMS["fused"]))
    unknown = [v for v in variants if v not in variants_of(FORMS["fused"])]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected some of {variants_of(FORMS['fused'])}")
    src = manifest.root / entry.model_file
    records = []
    for v in variants:
        folder = work / v
        if v == "plain":
            path, fuse = src, None
        else:
            folder.mkdir(parents=True, exist_ok=False)
            path = folder / src.name
            t0 = time.perf_counter()
            data = [Path(f.path).name for f in entry.files if f.path != entry.model_file]
            report = fuse_file(src, path, data[0] if data else None, FORMS["fused"] if v == ALL else [v])
            fuse = {"seconds": time.perf_counter() - t0, **report.to_dict()}
        try:
            cmd = [sys.executable, "-m", "benchmarks.fusions", "--child", str(path), "--graph", graph, "--graphs",
                   str(graphs), "--backend", backend, "--form", "plain" if v == "plain" else "fused",
                   "--warmup", str(warmup), "--repeats", str(repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            rec = {"variant": v, "graph": graph, "backend": backend, "fuse": fuse,
                   "load_average": list(os.getloadavg())}
            if proc.returncode == 0:
                rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                rec["error"] = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        finally:
            if v != "plain":
                shutil.rmtree(folder, ignore_errors=True)
        progress(json.dumps(rec))
        records.append(rec)
    return records


def table(records: Sequence[dict]) -> str:
    base = next((r for r in records if r["variant"] == "plain" and "median_s" in r), None)
    rows = ["| variant | load (s) | call median (s) | vs plain | peak RSS (GiB) |", "|---|---|---|---|---|"]
    for r in records:
        if "median_s" not in r:
            rows.append(f"| {r['variant']} | - | {r.get('error', '-')} | - | - |")
            continue
        ratio = f"{base['median_s'] / r['median_s']:.2f}x" if base else "-"
        rows.append(f"| {r['variant']} | {r['load_s']:.1f} | {r['median_s']:.2f} | {ratio} | "
                    f"{r['peak_rss_bytes'] / 2 ** 30:.2f} |")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusions", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", required=True, help="a plain-form export folder (python -m export --onnx-form plain)")
    p.add_argument("--graph", default="unet", choices=list(GRAPH_NAMES))
    p.add_argument("--backend", default="onnxruntime", choices=ONNX_BACKENDS)
    p.add_argument("--work", default=None, help="where variants are written (default: <graphs>/../fusion_variants)")
    p.add_argument("--variants", default=None, help="comma-separated subset of plain, each fusion, all")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--form", default="plain", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child, a.graph, a.graphs, a.backend, a.form, a.warmup, a.repeats)))
        return 0
    graphs = Path(a.graphs)
    work = Path(a.work) if a.work else graphs.resolve().parent / "fusion_variants"
    try:
        records = measure(graphs, a.graph, a.backend, work, a.warmup, a.repeats,
                          a.variants.split(",") if a.variants else None)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
