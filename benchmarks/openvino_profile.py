"""Where an OpenVINO graph spends its time: per kernel family (layer type x primitive), call after call.

    python -m benchmarks.openvino_profile --graphs DIR --graph unet [--precision bf16] [--calls 2]
        [--model OTHER.onnx] [--prop KEY=VALUE ...] [--json OUT]
    python -m benchmarks.openvino_profile --graphs DIR --loop STEPS [--precision bf16] [--json OUT]

Compiles the graph with the runtime's properties (runtime/backends/openvino_backend.compile_properties) plus
PERF_COUNT (from the file, or through the runtime's model cache with --cache-dir), runs it `calls` times on the spec's example inputs, and sums OpenVINO's per-node real time of the last
call by layer type and primitive (e.g. "FullyConnected brgemm_avx512_amx_bf16", "Subgraph jit_avx512_amx_bf16",
"VariadicSplit ref"): what answers "how much of a call is the arithmetic AMX accelerates". Every call's wall time
is kept, so a first-call or drift effect shows. --model profiles another ONNX file with the same inputs (a graph
variant under test); --prop adds or overrides a compile property (a variant of the engine's settings).

--loop STEPS profiles the UNet inside the runtime's own sampling loop instead (``SV3DPipeline.generate`` on the
sample image, ``--memory sequential``, the decoder left out): every UNet call of the run is profiled the same way,
so what a call costs in the loop, next to the numpy work and the other graphs, is measured rather than inferred
from isolated calls.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

# the kernel families that run the matmul arithmetic of a UNet call (what AMX accelerates)
MATMUL_LAYERS = ("FullyConnected", "Convolution", "MatMul", "Deconvolution", "ScaledDotProductAttention")


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def profile(model_path: str, graph: str, feeds: Dict[str, "object"], precision: str = "bf16", calls: int = 2,
            threads: int = 0, extra: Optional[dict] = None, cache_dir: str = "") -> dict:
    """cache_dir: "" compiles from the file (no cache), else through the runtime's compiled-model cache there (the
    first run writes the blob, later runs import it, as `python -m runtime` does)."""
    from runtime.backends.base import RunOptions
    from runtime.backends.openvino_backend import compile_properties, core

    props = compile_properties(graph, RunOptions(threads=threads, precision=precision, cache_dir=cache_dir))
    if "CACHE_DIR" in props:
        Path(props["CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    cached = "CACHE_DIR" in props and any(Path(props["CACHE_DIR"]).glob("*.blob"))
    props.update(extra or {})
    props["PERF_COUNT"] = True
    t0 = time.perf_counter()
    compiled = core().compile_model(model_path, "CPU", props)
    compile_s = time.perf_counter() - t0
    request = compiled.create_infer_request()
    wall = []
    for _ in range(calls):
        t0 = time.perf_counter()
        request.infer(feeds)
        wall.append(time.perf_counter() - t0)
    summary = kernel_summary(request)
    return {"model": model_path, "graph": graph, "precision": precision, "blob_imported": cached,
            "properties": {k: str(v) for k, v in props.items()}, "compile_s": compile_s, "call_wall_s": wall,
            **summary}


def kernel_summary(request) -> dict:
    """The last inference of `request` (compiled with PERF_COUNT), summed per kernel family."""
    families: Dict[str, dict] = defaultdict(lambda: {"nodes": 0, "seconds": 0.0})
    nodes = []                                      # (seconds, family, node name)
    for info in request.get_profiling_info():
        if str(info.status).endswith("EXECUTED"):
            key = f"{info.node_type} {info.exec_type}"
            families[key]["nodes"] += 1
            families[key]["seconds"] += info.real_time.total_seconds()
            nodes.append((info.real_time.total_seconds(), key, info.node_name))
    nodes.sort(reverse=True)
    total = sum(f["seconds"] for f in families.values())
    rows = [{"family": k, "nodes": f["nodes"], "seconds": f["seconds"], "share": f["seconds"] / total if total else 0}
            for k, f in sorted(families.items(), key=lambda kv: -kv[1]["seconds"])]
    # attention runs as a Snippets "Subgraph" named after the ScaledDotProductAttention it replaced
    attention = sum(t for t, k, n in nodes if k.startswith("Subgraph") and "ScaledDotProductAttention" in n)
    matmul = sum(r["seconds"] for r in rows if r["family"].split(" ")[0] in MATMUL_LAYERS) + attention
    return {"kernel_seconds_last_call": total, "matmul_seconds_last_call": matmul,
            "attention_seconds_last_call": attention, "families": rows,
            "slowest_nodes": [{"seconds": t, "family": k, "name": n} for t, k, n in nodes[:40]]}


class _ProfiledRunner:
    """The UNet as the runtime compiles it, plus PERF_COUNT: runs the loop's calls and keeps each one's profile."""

    def __init__(self, spec, model_path: str, props: dict):
        from runtime.backends.openvino_backend import core

        self.spec = spec
        t0 = time.perf_counter()
        self.compiled = core().compile_model(model_path, "CPU", {**props, "PERF_COUNT": True})
        self.compile_s = time.perf_counter() - t0
        self.request = self.compiled.create_infer_request()
        self.names = [o.get_any_name() for o in self.compiled.outputs]
        self.calls: List[dict] = []

    def run(self, feeds):
        t0 = time.perf_counter()
        self.request.infer(dict(feeds))
        wall = time.perf_counter() - t0
        self.calls.append({"wall_s": wall, **kernel_summary(self.request)})
        return {n: self.request.get_output_tensor(i).data.copy() for i, n in enumerate(self.names)}


def profile_loop(folder: str, steps: int, precision: str = "bf16", threads: int = 0, cache_dir: str = "") -> dict:
    """Every UNet call of a `steps`-step `generate` on the sample image, profiled (module docstring)."""
    from export.int8 import ZeroDecoder
    from runtime import SV3DPipeline, sample_image_path
    from runtime.backends import graph_entry
    from runtime.backends.base import RunOptions
    from runtime.backends.openvino_backend import compile_properties

    pipe = SV3DPipeline.from_export(folder, backend="openvino", precision=precision, memory="sequential",
                                    threads=threads, cache_dir=cache_dir)
    options = RunOptions(backend="openvino", threads=threads, precision=precision, cache_dir=cache_dir)
    unet = graph_entry(pipe.manifest, "openvino", "unet", options)     # the int8 graph at precision int8
    props = compile_properties("unet", options)
    runner = _ProfiledRunner(unet.spec, str(pipe.manifest.path_of(unet.model_file)), props)
    pipe.runners["unet"] = runner
    pipe.runners["vae_decoder"] = ZeroDecoder(pipe.runners["vae_decoder"].spec)
    result = pipe.generate(str(sample_image_path()), num_steps=steps, seed=0)
    return {"graphs": folder, "precision": precision, "unet_file": unet.model_file, "steps": steps,
            "unet_compile_s": runner.compile_s,
            "stages": result.timings.stages,
            "loop_steps": [{"graph_s": t.graph_s, "glue_s": t.glue_s} for t in result.timings.steps],
            "calls": runner.calls}


def to_markdown(result: dict, flops: Optional[int] = None, top: int = 15) -> str:
    wall = result["call_wall_s"]
    rate = f", {flops / wall[-1] / 1e9:.1f} GFLOP/s executed" if flops else ""
    lines = [f"OpenVINO per-kernel profile of {result['model']} ({result['precision']}"
             f"{', imported from the cache' if result.get('blob_imported') else ''}): compile "
             f"{result['compile_s']:.1f} s, calls {', '.join(f'{w:.2f}' for w in wall)} s{rate}; last call's kernels "
             f"{result['kernel_seconds_last_call']:.2f} s, of which matmul/conv/attention "
             f"{result['matmul_seconds_last_call']:.2f} s (attention Subgraphs "
             f"{result['attention_seconds_last_call']:.2f} s)", "",
             "| layer type, primitive | nodes | s | share |", "|---|---|---|---|"]
    for r in result["families"][:top]:
        lines.append(f"| {r['family']} | {r['nodes']} | {r['seconds']:.2f} | {100 * r['share']:.1f}% |")
    rest = result["families"][top:]
    if rest:
        lines.append(f"| {len(rest)} other families | {sum(r['nodes'] for r in rest)} | "
                     f"{sum(r['seconds'] for r in rest):.2f} | {100 * sum(r['share'] for r in rest):.1f}% |")
    return "\n".join(lines) + "\n"


def loop_markdown(result: dict, top: int = 12) -> str:
    """Per call of the loop: wall, kernel sum, matmul share; then the families summed over the loop's calls."""
    calls = result["calls"]
    lines = [f"UNet calls inside a {result['steps']}-step generate ({result['precision']}, compile "
             f"{result['unet_compile_s']:.1f} s):", "", "| call | wall s | kernels s | matmul/conv/attention s |",
             "|---|---|---|---|"]
    for i, c in enumerate(calls):
        lines.append(f"| {i} | {c['wall_s']:.2f} | {c['kernel_seconds_last_call']:.2f} | "
                     f"{c['matmul_seconds_last_call']:.2f} |")
    totals: Dict[str, float] = defaultdict(float)
    for c in calls:
        for r in c["families"]:
            totals[r["family"]] += r["seconds"]
    whole = sum(totals.values()) or 1.0
    lines += ["", f"Summed over the {len(calls)} calls:", "", "| layer type, primitive | s per call | share |",
              "|---|---|---|"]
    for fam, sec in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {fam} | {sec / len(calls):.2f} | {100 * sec / whole:.1f}% |")
    glue = [s["glue_s"] for s in result["loop_steps"]]
    lines += ["", f"numpy work between calls: {1000 * min(glue):.1f}-{1000 * max(glue):.1f} ms per step"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    from runtime import Manifest

    p = argparse.ArgumentParser(prog="python -m benchmarks.openvino_profile", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", required=True, help="export folder (manifest.json)")
    p.add_argument("--graph", default="unet", help="clip_encoder | vae_encoder | unet | vae_decoder")
    p.add_argument("--model", default="", help="profile this ONNX/IR file instead (same inputs as the graph)")
    p.add_argument("--precision", default="bf16", choices=("f32", "bf16", "int8"),
                   help="int8: the export's int8 UNet (python -m export.int8), with --loop only")
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE", help="extra compile property")
    p.add_argument("--cache-dir", default="", help="compile through the runtime's model cache in this folder "
                                                   "(default: no cache, a compile from the file)")
    p.add_argument("--json", default="", help="also write the result here")
    p.add_argument("--loop", type=int, default=0, metavar="STEPS",
                   help="profile the UNet's calls inside a STEPS-step generate instead (module docstring)")
    a = p.parse_args(argv)
    if a.calls < 1:
        p.error(f"--calls must be >= 1, got {a.calls}")
    if a.loop < 0:
        p.error(f"--loop must be >= 1 steps, got {a.loop}")
    if a.precision == "int8" and not a.loop:
        p.error("--precision int8 profiles the export's int8 UNet in the loop: add --loop STEPS")
    if a.loop and (a.model or a.prop or a.graph != "unet"):
        p.error("--loop profiles the export's own UNet as the runtime compiles it: no --model, --prop or --graph")
    extra = {}
    for kv in a.prop:
        if "=" not in kv:
            p.error(f"--prop expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        extra[k] = _value(v)
    if a.loop:
        result = profile_loop(a.graphs, a.loop, a.precision, a.threads, a.cache_dir)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(result, f, indent=1)
        print(loop_markdown(result))
        return 0
    m = Manifest.load(a.graphs)
    entry = m.entry("onnx", a.graph)
    path = a.model or str(m.root / entry.model_file)
    result = profile(path, a.graph, entry.spec.example_inputs(seed=0), a.precision, a.calls, a.threads, extra,
                     a.cache_dir)
    try:
        from models.flops import graph_flops
        flops = graph_flops(m.sv3d_config(), a.graph, m.shapes).total
    except ImportError:                 # models/ needs mindspore only for the cells, not for counting; be safe
        flops = None
    result["flops"] = flops
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    print(to_markdown(result, flops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
