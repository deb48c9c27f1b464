"""Markdown for a list of benchmark records (benchmarks/run.py): the setting first, then one table per topic."""
from __future__ import annotations

from typing import Dict, List, Optional

STAGE_ORDER = ("clip_encoder", "vae_encoder", "unet_call", "unet_step", "numpy_glue_step", "vae_decoder_chunk",
               "end_to_end")
GIB = 1024 ** 3


def _cell(text: str, limit: int = 200) -> str:
    """Free text made safe for a markdown table cell."""
    return " ".join(str(text).replace("|", "/").split())[:limit]


def _fmt_s(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if x < 10 else f"{x:.1f}"


def _fmt_bytes(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / GIB:.2f} GiB"


def _fmt_flops(f: Optional[int]) -> str:
    if not f:
        return "-"
    return f"{f / 1e12:.3f} T" if f >= 1e11 else f"{f / 1e9:.3f} G"


def _pct(fraction: Optional[float]) -> str:
    return f"{100 * fraction:.1f}" if fraction else "-"


def _peak_line(kind: str, p: dict) -> str:
    default = p.get("default_kernel")
    return (f"- {kind} matmul peak measured in this run: {p['op']}, {p['threads']} threads, best of {p['repeats']}: "
            f"**{p['gflops_best']:.1f} GFLOP/s** (median {p['gflops_median']:.1f})"
            + (f", kernel {p['kernel']}" if p.get("kernel") else "")
            + (f"; OpenBLAS's own choice, {default['kernel']}, ran {default['gflops_best']:.1f}" if default else ""))


def header_lines(run: dict) -> List[str]:
    m, v, p, s = run["machine"], run["versions"], run["sgemm_peak"], run["shapes"]
    b = run.get("bf16_peak")                 # OpenVINO's bf16 MatMul, measured when an openvino run is benchmarked
    flags = ", ".join(k for k, on in m["flags"].items() if on) or "none of interest"
    engines = ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "python")
    return [
        f"# SV3D benchmark: {run.get('config_name') or run['variant']} ({run['graphs_dir']})",
        "",
        f"- created {run['created']}; machine: {m['cpu_model']}, {m['cpus_usable']} usable CPUs, "
        f"{_fmt_bytes(m['ram_bytes'])} RAM{' (VM)' if m.get('hypervisor') else ''}; flags: {flags}",
        f"- load average at start (1/5/15 min): {', '.join(f'{x:.2f}' for x in m['loadavg_1_5_15'] or [])}",
        f"- Python {v['python']}; {engines}",
        _peak_line("fp32", p),
        *[_peak_line(f"OpenVINO {k}", q) for k, q in (run.get("openvino_peaks") or {"bf16": b}).items() if q],
        f"- shapes: resolution {s['resolution']} (latent {run.get('latent_size', '?')}), {s['num_frames']} frames, "
        f"UNet "
        f"batch {s['unet_batch']}, decode chunk {s['decode_chunk']}, dtype {s['dtype']}, attention_chunk "
        f"{s['attention_chunk']}",
        f"- method: {run['warmup']} warm-up + {run['repeats']} timed calls per graph on random inputs; end-to-end "
        f"{run['e2e_repeats']} x generate({run['steps']} steps) after the warm-ups; intra-op threads "
        f"{run['threads'] or 'engine default'}. FLOPs: models/flops.py (2 per MAC, matmul + conv only), what "
        f"the graph executes; GFLOP/s = FLOPs / median; '% peak' = that over the sgemm peak"
        + ("; '% bf16 peak' = that over the bf16 matmul peak." if b else "."),
        "",
    ]


def to_markdown(records: List[dict]) -> str:
    run = next(r for r in records if r["record"] == "run")
    end = next((r for r in records if r["record"] == "end"), None)
    lines = header_lines(run)
    backends: List[str] = []
    for r in records:
        if r.get("backend") and r["backend"] not in backends:
            backends.append(r["backend"])

    # status and memory
    lines += ["## Backends", "", "| backend | status | graph load (s) | max RSS, one graph loaded | RSS, all "
              "loaded | peak RSS |", "|---|---|---|---|---|---|"]
    for b in backends:
        recs = [r for r in records if r.get("backend") == b]
        skipped = next((r for r in recs if r["record"] == "skipped"), None)
        if skipped:
            lines.append(f"| {b} | skipped: {_cell(skipped['reason'])} | - | - | - | - |")
            continue
        status = next((r["status"] for r in recs if r["record"] == "backend"), "?")
        errors = [r["error"] for r in recs if r["record"] == "error"]
        loads = {}
        for r in recs:                       # the graph phase's load of each graph (the first one)
            if r["record"] == "load" and r["graph"] not in loads:
                loads[r["graph"]] = r["seconds"]
        load = " + ".join(f"{g} {s:.2f}" for g, s in loads.items()) + (f" = {sum(loads.values()):.2f}"
                                                                       if loads else "-")
        mem: Dict[str, Optional[int]] = {r["point"]: r["rss_bytes"] for r in recs if r["record"] == "memory"}
        st = _cell(status if not errors else f"{status}; {errors[0]}")
        alone = max((v for k, v in mem.items() if k.startswith(("loaded ", "ran ")) and v), default=None)
        lines.append(f"| {b} | {st} | {load} | {_fmt_bytes(alone)} | {_fmt_bytes(mem.get('loaded all'))} | "
                     f"{_fmt_bytes(mem.get('peak'))} |")
    lines.append("")

    # stages side by side
    bf16 = bool(run.get("bf16_peak"))
    cols = ["stage", "backend", "n", "median", "min", "p90", "max", "first call", "GFLOP counted", "GFLOP/s",
            "% peak"] + (["% bf16 peak"] if bf16 else [])
    lines += ["## Latency per stage (seconds)", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    stages = [r for r in records if r["record"] == "stage"]
    for stage in STAGE_ORDER:
        for b in backends:
            for r in (x for x in stages if x["stage"] == stage and x["backend"] == b):
                label = stage + (f" ({r['steps']} steps)" if stage == "end_to_end" else "")
                cells = [label, b, r["n"], _fmt_s(r["median_s"]), _fmt_s(r["min_s"]), _fmt_s(r["p90_s"]),
                         _fmt_s(r["max_s"]), _fmt_s(r["warmup_s"][0]) if r.get("warmup_s") else "-",
                         _fmt_flops(r.get("flops")), f"{r['gflops']:.1f}" if r.get("gflops") else "-",
                         _pct(r.get("peak_fraction"))] + ([_pct(r.get("bf16_peak_fraction"))] if bf16 else [])
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    refs = [r for r in stages if r.get("gflops_reference") and r["stage"] in ("unet_call", "unet_step")]
    if refs:
        lines += ["UNet rate counted with the official computation's FLOPs (what a PyTorch run executes; the graph "
                  "skips the single-key cross-attention work):", ""]
        for r in refs:
            lines.append(f"- {r['backend']} {r['stage']}: {r['gflops_reference']:.1f} GFLOP/s "
                         f"({_fmt_flops(r['flops_reference'])}FLOP reference per {r['stage'].split('_')[1]})")
        lines.append("")
    e2e = [r for r in stages if r["stage"] == "end_to_end" and r.get("pipeline_stages_s")]
    if e2e:
        lines += ["## End-to-end breakdown (pipeline timings, first repeat, seconds)", ""]
        keys = list(e2e[0]["pipeline_stages_s"][0])
        lines += ["| backend | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for r in e2e:
            st = r["pipeline_stages_s"][0]
            lines.append(f"| {r['backend']} | " + " | ".join(_fmt_s(st.get(k)) for k in keys) + " |")
        lines.append("")
    if end:
        lines.append(f"Load average at the end (1/5/15 min): {', '.join(f'{x:.2f}' for x in end['loadavg_1_5_15'])}")
    return "\n".join(lines) + "\n"
