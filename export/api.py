"""Export SV3D to static-shape graphs: config + official checkpoint -> folder of MindIR/ONNX graphs + manifest.json.

    from export import ExportOptions, export_graphs
    result = export_graphs(ExportOptions(config="sv3d_u", checkpoint="sv3d_u.safetensors", out="graphs/sv3d_u"))

(Worker processes are spawned, so a script calling this needs the usual `if __name__ == "__main__":` guard.)

Two phases:
1. `plan(options)`: everything that can be checked without MindSpore -- config, shapes (ExportShapes.validate),
   formats, the checkpoint header against the config (models.checkpoint.CheckpointError), the output folder and
   the free disk space. User errors surface here, in about a second.
2. `run(plan)`: per graph (clip_encoder, vae_encoder, unet, vae_decoder), a fresh wrapper Cell (export/wrappers.py)
   is loaded and traced to MindIR, the ONNX graph exported from that MindIR, every file loaded by the runtime's
   backend for its format and checked against the spec (export/checks.py), and the graph gated against the eager
   Cell (export/parity.py). Steps that hold a large graph's weights run in worker processes (export/workers.py:
   MindSpore never frees what it compiled).
   The manifest is written last and the staging folder renamed into place (export/staging.py).
   With --reuse, a graph whose identity is unchanged is carried over from the export already at the destination
   (or from the graphs a failed --reuse export kept) instead: export/reuse.py.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from configs import ConfigError, SV3DConfig, load_config
from models.checkpoint import CheckpointError
from configs.limits import LIMITS, human_bytes
from runtime import interrupts
from runtime.backends.mindspore_dumps import dumps_into
from runtime.peak_rss import peak_rss_bytes
from runtime.errors import first_line
from runtime.manifest import FORMATS, INT8_FORMAT, GraphEntry, GraphFile, Manifest, sha256_file
from runtime.specs import GRAPH_NAMES, ExportShapes, GraphSpec, graph_specs
from . import parity, reuse, staging, workers
from .registry import graph_weight_bytes
from .errors import ExportError, ParityError
from .options import DTYPE_FLAGS, ISOLATE_CHOICES, ONNX_FORMS, ONNX_SOURCES, UNET_BATCHES, ExportOptions

log = logging.getLogger("export")

SCRATCH = ".scratch"                 # inside the staging folder: raw exporter output, twin graphs
MS_DEBUG = "mindspore-debug"         # inside scratch: MindSpore's rank_0/om/analyze_fail.ir and graph dumps
DISK_MARGIN = LIMITS.disk_margin
ISOLATE_BYTES = LIMITS.isolate_bytes              # --isolate auto: graphs above this run their steps in workers
ATTENTION_WARN_BYTES = LIMITS.attention_warn_bytes  # a plain-attention score matrix above this gets a hint


@dataclass(frozen=True)
class Plan:
    cfg: SV3DConfig
    shapes: ExportShapes
    formats: Tuple[str, ...]
    parity: str
    max_gflop: float
    checkpoint: Path
    out: Path
    overwrite: bool
    seed: int = 0
    onnx_source: str = "auto"
    isolate: str = "auto"
    onnx_form: str = "fused"
    reuse: bool = False              # carry unchanged graphs over from the export at `out` (export/reuse.py)


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    seconds: float
    peak_rss_bytes: int
    peak_worker_rss_bytes: int = 0
    graphs: Dict[str, dict] = field(default_factory=dict)    # per graph: files, timings, parity
    reused: Tuple[str, ...] = ()     # graphs carried over from the export at `out` (--reuse), not exported again
    published: bool = True           # False: --reuse found the export up to date and left it as it was


# ------------------------------------------------------------------------------------------------ planning


# what `python -m export` writes; the int8 UNet (INT8_FORMAT) is added afterwards by python -m export.int8
EXPORT_FORMATS = tuple(f for f in FORMATS if f != INT8_FORMAT)


def parse_formats(text: str) -> Tuple[str, ...]:
    items = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    bad = [s for s in items if s not in EXPORT_FORMATS]
    if not items or bad:
        raise ExportError(f"--formats must be a comma-separated subset of {','.join(EXPORT_FORMATS)}, got {text!r}"
                          + (" (the int8 UNet is added to an export by python -m export.int8)"
                             if INT8_FORMAT in bad else ""))
    return tuple(f for f in EXPORT_FORMATS if f in items)


def _shapes(cfg: SV3DConfig, options: ExportOptions) -> ExportShapes:
    if options.unet_batch not in UNET_BATCHES:
        raise ExportError(f"--unet-batch must be one of {list(UNET_BATCHES)}, got {options.unet_batch!r}")
    if options.dtype not in DTYPE_FLAGS:
        raise ExportError(f"--dtype must be one of {list(DTYPE_FLAGS)}, got {options.dtype!r}")
    for flag, value, high in (("--resolution", options.resolution, LIMITS.max_resolution),
                              ("--attention-chunk", options.attention_chunk, LIMITS.max_attention_chunk)):
        if value is not None and int(value) > high:
            raise ExportError(f"{flag} is too large: expected at most {high} (configs/limits.py), got {value}")
    t = cfg.num_frames
    shapes = ExportShapes(
        resolution=cfg.resolution if options.resolution is None else int(options.resolution),
        num_frames=t,
        unet_batch=2 * t if options.unet_batch == "2T" else t,
        decode_chunk=cfg.decoder_call_frames() if options.decode_chunk is None else int(options.decode_chunk),
        dtype=DTYPE_FLAGS[options.dtype],
        attention_chunk=int(options.attention_chunk))
    shapes.validate(cfg.latent_factor, cfg.unet.downsample_factor)
    return shapes


def _bytes_needed(cfg: SV3DConfig, shapes: ExportShapes, formats, gate: str) -> int:
    """Disk an export needs at its peak: every graph in every format, plus the largest graph once more per format
    (its twin, which carries the same weights, or at least its raw ONNX export before repacking)."""
    per_graph = [graph_weight_bytes(cfg, name, shapes.dtype) for name in GRAPH_NAMES]
    extra = max(per_graph) * (len(formats) if gate in ("auto", "twin") else 1)
    return int((sum(per_graph) * len(formats) + extra) * DISK_MARGIN)


def attention_scores_bytes(cfg: SV3DConfig, shapes: ExportShapes) -> int:
    """Largest softmax(QK^T) score matrix one plain attention call of the exported graphs holds (0 if chunked).

    UNet spatial self-attention of each transformer (models/unet_layout.py) at down-sampling ds:
    (B * heads, N, N) with N = (latent / ds)^2; the VAE mid block: single head over all latent positions per frame.
    """
    from models.unet_layout import unet_layout

    if shapes.attention_chunk > 0:
        return 0
    item = np.dtype(shapes.dtype).itemsize
    lat = cfg.latent_size(shapes.resolution)
    sizes = [shapes.decode_chunk * (lat * lat) ** 2 * item]
    for _, _, ds, heads in unet_layout(cfg.unet).transformers():
        sizes.append(shapes.unet_batch * heads * ((lat // ds) ** 2) ** 2 * item)
    return max(sizes)


def plan(options: ExportOptions) -> Plan:
    """Validate every option, the checkpoint and the destination; no MindSpore needed. Raises ConfigError,
    CheckpointError or ExportError with what was expected and what was got."""
    from models.checkpoint import CheckpointReader

    cfg = load_config(options.config)
    shapes = _shapes(cfg, options)
    formats = parse_formats(options.formats)
    if options.parity not in parity.GATES:
        raise ExportError(f"--parity must be one of {list(parity.GATES)}, got {options.parity!r}")
    if options.isolate not in ISOLATE_CHOICES:
        raise ExportError(f"--isolate must be one of {list(ISOLATE_CHOICES)}, got {options.isolate!r}")
    if options.onnx_form not in ONNX_FORMS:
        raise ExportError(f"--onnx-form must be one of {list(ONNX_FORMS)}, got {options.onnx_form!r}")
    if options.onnx_form == "fused" and options.attention_chunk and "onnx" in formats:
        log.warning("note: --attention-chunk keeps the chunked attention spelled out in the fused ONNX graphs; "
                    "their fused attention bounds memory by itself (use --attention-chunk 0)")
    if options.onnx_source not in ONNX_SOURCES:
        raise ExportError(f"--onnx-source must be one of {list(ONNX_SOURCES)}, got {options.onnx_source!r}")
    if not options.parity_max_gflop >= 0:
        raise ExportError(f"--parity-max-gflop must be >= 0, got {options.parity_max_gflop}")
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or options.seed < 0:
        raise ExportError("invalid --seed", expected="an integer >= 0 (numpy.random.default_rng)",
                          got=repr(options.seed))
    if options.out == "":                                    # Path("") is the working directory
        raise ExportError("invalid -o/--out", expected="a folder path", got="''")
    checkpoint = Path(options.checkpoint).expanduser()
    CheckpointReader(checkpoint, cfg)                        # header + layout against the config
    out = Path(options.out).expanduser().absolute()
    overwrite = bool(options.overwrite or options.reuse)   # an update replaces the old export when published
    staging.check_destination(out, overwrite)
    p = Plan(cfg=cfg, shapes=shapes, formats=formats, parity=options.parity,
             max_gflop=float(options.parity_max_gflop), checkpoint=checkpoint.absolute(), out=out,
             overwrite=overwrite, seed=int(options.seed), onnx_source=options.onnx_source,
             isolate=options.isolate, onnx_form=options.onnx_form, reuse=bool(options.reuse))
    probe = out.parent
    while not probe.exists():
        probe = probe.parent
    need, free = _bytes_needed(cfg, shapes, formats, options.parity), shutil.disk_usage(probe).free
    if need > free:
        raise ExportError(f"not enough disk space for the export in {probe}: expected about {human_bytes(need)} "
                          f"free (graphs in {len(formats)} format(s) plus scratch), got {human_bytes(free)} free")
    if "mslite" in formats:
        from runtime.backends import backend_available

        ok, why = backend_available("mslite")
        if not ok:
            raise ExportError(f"--formats mslite needs the MindSpore Lite converter: {why}")
    scores = attention_scores_bytes(cfg, shapes)
    # attention is spelled out (a score matrix per call) in MindIR, in plain ONNX and in the mslite form;
    # the fused ONNX form's MultiHeadAttention holds no scores
    spelled_out = "mindir" in formats or "mslite" in formats or options.onnx_form == "plain"
    if spelled_out and scores > ATTENTION_WARN_BYTES:
        log.warning(f"note: with plain attention one score matrix of these graphs takes {scores / 2 ** 30:.1f} GiB "
                    f"at run time; --attention-chunk 1024 bounds it (the export itself does not run it)")
    return p


# ------------------------------------------------------------------------------------------------- running


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _files(paths: List[Path], root: Path) -> Tuple[GraphFile, ...]:
    return tuple(GraphFile(_rel(p, root), sha256_file(p), p.stat().st_size) for p in paths)


def graph_entry(spec: GraphSpec, fmt: str, model: Path, files: List[Path], root: Path,
                form: str = "plain") -> GraphEntry:
    """The manifest entry of a graph written under `root`: its model file and every file, checksummed."""
    return GraphEntry(spec, fmt, _rel(model, root), _files(files, root), form)


def write_manifest(folder: Path, cfg: SV3DConfig, shapes: ExportShapes,
                   graphs: Dict[str, Dict[str, GraphEntry]], **provenance) -> Manifest:
    """Write `folder`/manifest.json for `graphs` ({format: {graph name: entry}}) of `cfg` at `shapes`, then read it
    back as the runtime will and check the size of every file it lists; returns what was read. Every field the
    config and shapes determine is filled here; `provenance` is the rest (tools, source, created, parity). The
    exporter and the tests' toy export (tests/toy_graphs.py) both write their manifests through this function."""
    Manifest.create(folder, cfg, shapes, graphs, **provenance).save(folder)
    check = Manifest.load(folder)
    for fmt in check.formats():
        check.verify_files(fmt, tuple(check.graphs[fmt]), checksums=False)
    return check


def _tools(formats) -> dict:
    import mindspore

    tools = {"mindspore": mindspore.__version__, "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnx", "onnxruntime"):
        try:
            tools[mod] = __import__(mod).__version__
        except ImportError:
            tools[mod] = None
    if "mslite" in formats:
        tools["mindspore_lite_converter"] = workers.mslite_version()
    return tools


def graph_form(p: Plan, fmt: str) -> str:
    """The form a graph is written in: onnx in the requested ONNX form, mslite in its own, MindIR plain."""
    return {"onnx": p.onnx_form, "mslite": "mslite"}.get(fmt, "plain")


def graph_identities(p: Plan, name: str, tools: dict, weights: Dict[str, str]) -> Dict[str, dict]:
    """{format: identity} of graph `name` in this plan (export/reuse.py). `weights` caches the sha256 of each
    component's checkpoint tensors."""
    from models.checkpoint import read_header, tensors_sha256
    from models.components import component_keys
    from .registry import GRAPHS

    component = GRAPHS[name].component
    if component not in weights:
        weights[component] = tensors_sha256(read_header(p.checkpoint), component_keys(p.cfg, component))
    gate, _ = parity.choose_gate(p.parity, p.cfg, name, p.shapes, p.max_gflop)
    return {fmt: reuse.identity(fmt, tools=tools, config_sha256=p.cfg.sha256(), weights_sha256=weights[component],
                                num_frames=p.shapes.num_frames, attention_chunk=p.shapes.attention_chunk,
                                form=graph_form(p, fmt), onnx_source=p.onnx_source, gate=gate,
                                tolerance=parity.TOLERANCE[p.shapes.dtype], seed=p.seed)
            for fmt in p.formats}


class Exporter:
    """One run: the plan, the staging folder, and the per-graph work (each weight-holding step through
    export/workers.py, in a worker process for large graphs)."""

    def __init__(self, p: Plan, root: Path):
        self.p = p
        self.root = root
        self.scratch = root / SCRATCH
        self.fusions: Dict[Tuple[str, str], dict] = {}   # (format, graph) -> export/onnx_fuse report of its form

    def isolated(self, name: str) -> bool:
        """--isolate on/off, or auto: worker processes for graphs whose weights exceed ISOLATE_BYTES."""
        if self.p.isolate != "auto":
            return self.p.isolate == "on"
        return graph_weight_bytes(self.p.cfg, name, self.p.shapes.dtype) > ISOLATE_BYTES

    def write_graph(self, name: str, shapes: ExportShapes, out_root: Path, iso: bool
                    ) -> Dict[str, Tuple[Path, List[Path], float]]:
        """Write graph `name` in every requested format under `out_root/<format>/`: {format: (model, files, s)}.

        The Cell is traced to MindIR (into scratch if only ONNX is requested and made from it); the ONNX graph is
        exported from that MindIR's GraphCell (onnx_source "mindir": ten times faster than tracing the Cell again, but
        `mindspore.load` peaks at about twice the weights) or from a fresh Cell (onnx_source "cell": about 1.3x
        the weights). "auto" takes the GraphCell for graphs exported in-process, the Cell for large graphs.
        """
        from .checks import mindir_input_names

        p, written = self.p, {}
        spec = graph_specs(p.cfg, shapes)[name]
        needs_onnx = "onnx" in p.formats or "mslite" in p.formats      # mslite is converted from our ONNX
        from_mindir = needs_onnx and (p.onnx_source == "mindir" or (p.onnx_source == "auto" and not iso))
        folder = out_root / "mindir" if "mindir" in p.formats else self.scratch / "mindir_source"
        model = None
        if "mindir" in p.formats or from_mindir:
            t0 = time.perf_counter()
            model, files = self._guard(name, "mindir", workers.call, iso, workers.write_mindir, p, name, shapes,
                                       folder)
            if "mindir" in p.formats:
                written["mindir"] = (model, files, time.perf_counter() - t0)
        if needs_onnx:
            t0 = time.perf_counter()
            if from_mindir:
                got = mindir_input_names(model)
                if got != list(spec.input_names):
                    raise ParityError(f"graph {name}: MindIR inputs {got} are not the spec's {list(spec.input_names)}")
            work = self.scratch / f"onnx_{name}"
            onnx_folder = out_root / "onnx" if "onnx" in p.formats else work / "plain"
            try:
                raw = self._guard(name, "onnx", workers.call, iso, workers.export_onnx_raw, p, name, shapes,
                                  model if from_mindir else None, work)
                onnx_model, onnx_files = self._guard(name, "onnx", workers.call, iso, workers.pack_onnx, raw, spec,
                                                     onnx_folder, from_mindir)
                t_onnx = time.perf_counter() - t0
                if "mslite" in p.formats:          # from the plain ONNX, before the onnx format is fused in place
                    t1 = time.perf_counter()
                    lite, lite_files, report = self._guard(name, "mslite", workers.call, True, workers.convert_mslite,
                                                           onnx_model, onnx_files, out_root / "mslite", work)
                    written["mslite"] = (lite, lite_files, time.perf_counter() - t1)
                    if out_root == self.root:
                        self.fusions[("mslite", name)] = report
                    log.info(f"  {name} [mslite] converted by MindSpore Lite: {report['summary']}, "
                             f"{report['convert_seconds']:.1f} s")
                if "onnx" in p.formats:
                    t1 = time.perf_counter()
                    if p.onnx_form == "fused":
                        fused = self._guard(name, "onnx", self.fuse, onnx_model, onnx_files, work)
                        if out_root == self.root:                       # not the twin's
                            self.fusions[("onnx", name)] = fused
                    written["onnx"] = (onnx_model, onnx_files, t_onnx + time.perf_counter() - t1)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        if "mindir" not in p.formats and model is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return written

    @staticmethod
    def fuse(model: Path, files: List[Path], work: Path) -> dict:
        """Rewrite a written ONNX graph into its fused form (export/onnx_fuse.py), in place: the new files are
        written beside in `work` (the weights stream from the old data file) and then moved over the old ones."""
        from . import onnx_fuse

        tmp = work / "fused"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        data = [f for f in files if f != model]
        report = onnx_fuse.fuse_file(model, tmp / model.name, data[0].name if data else None,
                                     onnx_fuse.FORMS["fused"])
        for f in files:
            os.replace(tmp / f.name, f)
        shutil.rmtree(tmp, ignore_errors=True)
        log.info(f"  {model.stem} [onnx] fused: {report.summary()}")
        return report.to_dict()

    @staticmethod
    def _guard(name: str, fmt: str, fn: Callable, *args):
        """Run an exporter step; its failures become ExportError naming the graph and format."""
        try:
            return fn(*args)
        except (ExportError, ConfigError, CheckpointError):
            raise
        except Exception as e:
            raise ExportError(f"exporting graph {name} to {fmt} failed: {type(e).__name__}: {first_line(e)}") from e

    def check_all(self, name: str, written, spec: GraphSpec, iso: bool, run: bool) -> Dict[str, dict]:
        """Every written file loaded by the runtime's backend (export/checks.py), declared I/O checked, and run on
        the example inputs if `run`."""
        return {fmt: workers.call(iso or fmt in workers.OWN_PROCESS_FORMATS, workers.check, fmt, name, model,
                                  spec, self.scratch, self.p.seed if run else None)
                for fmt, (model, _, _) in written.items()}

    def numeric_gate(self, name: str, checks: Dict[str, dict], spec: GraphSpec, ref: np.ndarray) -> Dict[str, dict]:
        tol = parity.TOLERANCE[spec.outputs[0].dtype]
        results = {}
        for fmt, info in checks.items():
            r = parity.compare(info["output"], ref)
            r.update(tolerance=tol, passed=bool(r["rel_l2"] <= tol))
            results[fmt] = r
        failed = {f: r for f, r in results.items() if not r["passed"]}
        if failed:
            raise ParityError(f"graph {name}: exported graph disagrees with the eager Cell beyond the tolerance "
                              f"{tol:g} (relative L2): " + "; ".join(
                                  f"{f} rel_l2 {r['rel_l2']:.3g} max_abs {r['max_abs']:.3g}"
                                  f"{' (' + r['problem'] + ')' if 'problem' in r else ''}"
                                  for f, r in failed.items()))
        return results

    def export_graph(self, name: str, spec: GraphSpec, identities: Dict[str, dict]
                     ) -> Tuple[Dict[str, GraphEntry], dict]:
        p = self.p
        gate, reason = parity.choose_gate(p.parity, p.cfg, name, p.shapes, p.max_gflop)
        iso = self.isolated(name)
        report = {"gate": gate, "reason": reason, "isolated": iso, "formats": {}}
        first_step = len(workers.STEP_PEAKS)
        written = self.write_graph(name, p.shapes, self.root, iso)
        t0 = time.perf_counter()
        checks = self.check_all(name, written, spec, iso, run=gate == "full")
        entries = {}
        for fmt, (model, files, t_write) in written.items():
            form = graph_form(p, fmt)
            entry = graph_entry(spec, fmt, model, files, self.root, form)
            size = sum(f.bytes for f in entry.files)
            report["formats"][fmt] = {"model_file": entry.model_file, "bytes": size, "files": len(entry.files),
                                      "export_seconds": round(t_write, 3),
                                      "engine_inputs": checks[fmt]["engine_inputs"],
                                      "engine_outputs": checks[fmt]["engine_outputs"],
                                      "identity": identities[fmt]}
            if fmt in ("onnx", "mslite"):
                report["formats"][fmt]["form"] = form
                if (fmt, name) in self.fusions:
                    report["formats"][fmt]["fusions"] = self.fusions[(fmt, name)]
            entries[fmt] = entry
            log.info(f"  {name} [{fmt}] written in {t_write:.1f} s: {len(files)} file(s), {size / 1e6:.1f} MB")
        log.info(f"  {name}: every file loads in the runtime's backend with the spec's inputs/outputs "
                 f"({time.perf_counter() - t0:.1f} s{', runs included' if gate == 'full' else ''})")
        t0 = time.perf_counter()
        if gate == "full":
            ref = workers.call(iso, workers.eager_output, p, name, p.shapes)
            report["check_shapes"] = p.shapes.to_dict()
            report["results"] = self.numeric_gate(name, checks, spec, ref)
        elif gate in ("twin", "frame"):
            report.update(self.twin_gate(name, iso, parity.frame_shapes(p.shapes) if gate == "frame" else None))
        report["gate_seconds"] = round(time.perf_counter() - t0, 3)
        if iso:
            steps = workers.STEP_PEAKS[first_step:]
            report["worker_peak_rss_bytes"] = [[n, b] for n, b in steps]
            log.info("  " + name + " worker peak RSS: " + ", ".join(f"{n} {b / 1e9:.1f} GB" for n, b in steps))
        if "results" in report:
            errs = ", ".join(f"{f} {r['rel_l2']:.2e}" for f, r in report["results"].items())
            log.info(f"  {name} parity {gate} ({reason}): rel_l2 {errs} <= {parity.TOLERANCE[p.shapes.dtype]:g} "
                     f"({report['gate_seconds']:.1f} s)")
        else:
            log.info(f"  {name} parity off: load and I/O checks only")
        return entries, report

    def twin_gate(self, name: str, iso: bool = False, tshapes: Optional[ExportShapes] = None) -> dict:
        """Export the reduced-shape twin of graph `name` (or the graph at `tshapes`) to scratch, run it in its
        runtime backends, compare, delete it."""
        p = self.p
        tshapes = tshapes or parity.twin_shapes(p.cfg, p.shapes)
        tspec = graph_specs(p.cfg, tshapes)[name]
        folder = self.scratch / "twin"
        try:
            written = self.write_graph(name, tshapes, folder, iso)
            checks = self.check_all(name, written, tspec, iso, run=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ref = workers.call(iso, workers.eager_output, p, name, tshapes)
        return {"check_shapes": tshapes.to_dict(), "results": self.numeric_gate(name, checks, tspec, ref)}


def _up_to_date(p: Plan, old: Manifest, reusable: Dict[str, Manifest]) -> bool:
    """Every graph reused from `old`, the export at p.out, in exactly the requested formats, and the export's own
    record (shapes, checkpoint path, gate settings) unchanged."""
    return (all(reusable.get(name) is old for name in GRAPH_NAMES) and old.root == p.out
            and tuple(f for f in old.formats() if f not in reuse.DERIVED) == p.formats and old.shapes == p.shapes
            and old.source.get("checkpoint") == str(p.checkpoint)
            and [old.parity.get(k) for k in ("gate", "max_gflop", "seed")] == [p.parity, p.max_gflop, p.seed])


def run(p: Plan) -> ExportResult:
    """Export every graph of the plan into a staging folder and publish it (module docstring); with --reuse,
    carry the unchanged graphs of the export at p.out over instead (export/reuse.py)."""
    t_start = time.perf_counter()
    specs = graph_specs(p.cfg, p.shapes)
    tools, weights = _tools(p.formats), {}
    ids = {name: graph_identities(p, name, tools, weights) for name in GRAPH_NAMES}
    reusable: Dict[str, Manifest] = {}                  # graph -> the export it is carried over from
    olds = reuse.sources(p.out) if p.reuse else []
    if olds:
        log.info(f"--reuse: checking the graphs of {', '.join(str(m.root) for m in olds)}")
        for name in GRAPH_NAMES:
            source, _ = reuse.choose(olds, name, specs[name], ids[name])
            if source is not None:
                reusable[name] = source
        if _up_to_date(p, olds[0], reusable):
            log.info(f"export up to date: {p.out} (every graph unchanged and verified; nothing written)")
            return ExportResult(out=p.out, manifest=olds[0], seconds=time.perf_counter() - t_start,
                                peak_rss_bytes=peak_rss_bytes(), graphs=dict(olds[0].parity["graphs"]),
                                reused=GRAPH_NAMES, published=False)
    root = staging.begin(p.out)
    graphs: Dict[str, Dict[str, GraphEntry]] = {fmt: {} for fmt in p.formats}
    reports: Dict[str, dict] = {}
    dumps = contextlib.ExitStack()
    try:
        # MindSpore's dumps go into the staging folder, removed with it; set before the steps run, so spawned
        # workers inherit it (runtime/backends/mindspore_dumps.py)
        dumps.enter_context(dumps_into(root / SCRATCH / MS_DEBUG))
        exporter = Exporter(p, root)
        log.info(f"exporting {p.cfg.name or p.cfg.variant} ({p.cfg.variant}) from {p.checkpoint} to {p.out}: "
                 f"{p.shapes.resolution} px, {p.shapes.num_frames} frames, unet batch {p.shapes.unet_batch}, "
                 f"decode chunk {p.shapes.decode_chunk}, {p.shapes.dtype}, attention chunk "
                 f"{p.shapes.attention_chunk or 'off'}, formats {','.join(p.formats)}"
                 f"{' (onnx ' + p.onnx_form + ')' if 'onnx' in p.formats else ''}, parity {p.parity}")
        for i, name in enumerate(GRAPH_NAMES, 1):
            t0 = time.perf_counter()
            log.info(f"[{i}/{len(GRAPH_NAMES)}] {name}")
            if name in reusable:
                entries, report = reuse.carry_over(reusable[name], name, p.formats, root)
                log.info(f"  {name} carried over (exported {report['reused']['exported']}, gate {report['gate']} "
                         f"as recorded then)")
            else:
                entries, report = exporter.export_graph(name, specs[name], ids[name])
            interrupts.checkpoint()
            for fmt, entry in entries.items():
                graphs[fmt][name] = entry
            report["seconds"] = round(time.perf_counter() - t0, 3)
            reports[name] = report
            log.info(f"  {name} done in {report['seconds']:.1f} s (peak RSS so far {peak_rss_bytes() / 1e9:.2f} GB, "
                     f"largest child process {peak_rss_bytes(children=True) / 1e9:.2f} GB)")
        shutil.rmtree(root / SCRATCH, ignore_errors=True)
        derived = ({}, {}, {})                          # graphs added to the old export later (the int8 UNet)
        if olds and olds[0].root == p.out:
            derived = reuse.derived(olds[0], reusable, p.formats, root)
        write_manifest(                                 # read back as the runtime will, before publishing
            root, p.cfg, p.shapes, {**graphs, **derived[0]}, tools={**tools, **derived[2]},
            source={"checkpoint": str(p.checkpoint), "bytes": p.checkpoint.stat().st_size},
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            parity={"gate": p.parity, "max_gflop": p.max_gflop, "seed": p.seed,
                    "reference": "eager MindSpore Cell (PyNative, float32 weights)",
                    "metric": "relative L2 ||graph - eager|| / ||eager|| on spec.example_inputs(seed)",
                    "graphs": reports, **derived[1]})
        interrupts.checkpoint()                         # never publish once a signal arrived
        staging.publish(root, p.out, p.overwrite)
    except BaseException as e:
        if p.reuse and reports and isinstance(e, Exception) and not interrupts.interrupted():
            _keep_completed(p, root, graphs, reports, tools)      # a failed gate: the next --reuse redoes less
        else:
            staging.abandon(root)
        raise
    finally:
        dumps.close()
    seconds = time.perf_counter() - t_start
    peak, peak_workers = peak_rss_bytes(), peak_rss_bytes(children=True)
    log.info(f"export complete: {p.out} in {seconds:.1f} s, peak RSS {peak / 1e9:.2f} GB (largest child process "
             f"{peak_workers / 1e9:.2f} GB)")
    return ExportResult(out=p.out, manifest=Manifest.load(p.out), seconds=seconds, peak_rss_bytes=peak,
                        peak_worker_rss_bytes=peak_workers, graphs=reports, reused=tuple(reusable))


def _keep_completed(p: Plan, root: Path, graphs: Dict[str, Dict[str, GraphEntry]], reports: Dict[str, dict],
                    tools: dict) -> None:
    """Keep the graphs a failed --reuse export completed (export/reuse.py); on any trouble, keep nothing."""
    try:
        shutil.rmtree(root / SCRATCH, ignore_errors=True)
        done = {fmt: {n: e for n, e in per.items() if n in reports} for fmt, per in graphs.items()}
        listed = {root / f.path for per in done.values() for e in per.values() for f in e.files}
        for f in [f for f in root.rglob("*") if f.is_file() and f not in listed]:
            f.unlink()                          # the failed graph's files: nothing can reuse them
        reuse.keep_unfinished(root, p.out, Manifest.create(
            root, p.cfg, p.shapes, {fmt: per for fmt, per in done.items() if per}, tools=tools,
            source={"checkpoint": str(p.checkpoint)}, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            parity={"graphs": reports}))
    except Exception as e:                      # never mask the export's own error
        log.warning(f"--reuse: the completed graphs could not be kept ({type(e).__name__}: {e})")
        staging.abandon(root)


def export_graphs(options: ExportOptions) -> ExportResult:
    """plan + run. Raises ConfigError / CheckpointError / ExportError (ParityError) for anything a user can fix."""
    return run(plan(options))
