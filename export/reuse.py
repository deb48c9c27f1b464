"""Graphs carried over from the export already at the destination (`python -m export --reuse`).

As Apple's converter skips the parts it has converted, an update re-exports only the graphs that changed: a
graph whose identity is unchanged is carried over with its recorded gate, not exported, converted or gated
again, so a failed decoder gate does not cost the UNet again.

A graph's identity in one format (`identity`) is what decides its files and its gate:
- the exporter: the source of export/ and models/ (EXPORTER_PACKAGES) and the versions of the tools that write
  and check the format (TOOLS_OF, from the manifest's "tools");
- the model: the config's sha256 and the checkpoint tensors of the graph's component, by content (a copied or
  touched checkpoint is the same; one with other weights for that component is not);
- the graph: the frame count and attention chunk it is built with, its form (fused or plain ONNX, mslite) and
  the ONNX source; its spec (names, shapes, dtype: resolution, unet batch, decode chunk) is the manifest entry's;
- the gate chosen for it (full, twin, frame, off), its tolerance and the seed of its inputs.
It is recorded per graph and format in manifest.json: parity.graphs[<graph>].formats[<format>].identity.

The graphs are taken from the export at the destination and from the graphs a failed `--reuse` export to it
completed: a failed gate keeps them, in `.<name>.unfinished/` beside it with their entries and reports in
unfinished.json (RECORD, a manifest under another name, so nothing takes that folder for an export). So when the
decoder fails its gate, the next `--reuse` export redoes the decoder only.

A graph is reused only when every requested format has an entry with the same spec and identity in the old
manifest and every file of it verifies (size, sha256, protobuf structure: Manifest.verify_files); otherwise it
is exported again and the log says why. Reused files are hard-linked into the staging folder (copied where a
link fails), so the new export is still staged and published by one rename (export/staging.py) and the old
folder it replaces can be deleted without touching them. When every graph is reused in exactly the formats
asked for, the export is up to date and left as it is (nothing is staged or published).

Graphs added to an export afterwards from its own graphs (DERIVED: export/int8.py's int8 UNet, made from the ONNX
UNet) are carried over with their record when the graphs they were made from are; otherwise they are dropped,
with a log line naming the command that makes them again.

Why opt-in (--reuse) and not the default: --overwrite promises a fresh export, which is what a user wants after
a change the identity cannot see (another oneDNN or driver under the same MindSpore version, an environment
variable that changes kernels, a graph file replaced together with its manifest entry).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from runtime.errors import GraphError
from runtime.manifest import INT8_FORMAT, INT8_GRAPHS, MANIFEST_NAME, GraphEntry, Manifest
from runtime.specs import GraphSpec
from . import staging

log = logging.getLogger("export")

EXPORTER_PACKAGES = ("export", "models")       # the code that turns a checkpoint into graph files
DERIVED = {     # format -> (the format its graphs are made from, those graphs, its parity record, its tools)
    INT8_FORMAT: ("onnx", INT8_GRAPHS, "int8", ("nncf", "openvino")),
}
TOOLS_OF = {                                     # manifest "tools" entries that write or check each format
    "mindir": ("mindspore", "numpy", "python"),
    "onnx": ("mindspore", "onnx", "onnxruntime", "numpy", "python"),
    "mslite": ("mindspore", "onnx", "mindspore_lite_converter", "numpy", "python"),
}


@functools.lru_cache(maxsize=None)
def exporter_sha256() -> str:
    """sha256 over the path and bytes of every .py file of EXPORTER_PACKAGES, in path order."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in EXPORTER_PACKAGES:
        for f in sorted((root / package).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()


def identity(fmt: str, *, tools: Mapping[str, Optional[str]], config_sha256: str, weights_sha256: str,
             num_frames: int, attention_chunk: int, form: str, onnx_source: Optional[str], gate: str,
             tolerance: float, seed: int) -> dict:
    """The identity of one graph in format `fmt` (module docstring), as recorded in the manifest."""
    return {"exporter_sha256": exporter_sha256(), "tools": {t: tools.get(t) for t in TOOLS_OF[fmt]},
            "config_sha256": config_sha256, "weights_sha256": weights_sha256, "num_frames": int(num_frames),
            "attention_chunk": int(attention_chunk), "form": form,
            "onnx_source": None if fmt == "mindir" else onnx_source, "gate": gate, "tolerance": float(tolerance),
            "seed": int(seed)}


RECORD = "unfinished.json"


def sources(out: Path) -> List[Manifest]:
    """What graphs can be taken from: the export at `out`, then the graphs a failed --reuse export to it kept;
    each that is absent is skipped, each that does not load is skipped with a log line why."""
    found = []
    for folder, name in ((out, MANIFEST_NAME), (staging.unfinished_folder(out), RECORD)):
        if (folder / name).is_file():
            try:
                found.append(Manifest.load(folder, name))
            except GraphError as e:
                log.warning(f"--reuse: {folder / name} does not load, so nothing is taken from it: {e}")
    if not found:
        log.info(f"--reuse: no export at {out} yet; every graph is exported")
    return found


def keep_unfinished(root: Path, out: Path, completed: Manifest) -> None:
    """A --reuse export failed: keep the graphs it completed (`completed`, written under `root`) for the next."""
    completed.save(root)
    os.replace(root / MANIFEST_NAME, root / RECORD)
    kept = staging.keep_unfinished(root, out)
    log.warning(f"--reuse: the graphs completed ({', '.join(sorted(completed.parity['graphs']))}) are kept in "
                f"{kept} for the next --reuse export")


def choose(olds: List[Manifest], name: str, spec: GraphSpec, identities: Mapping[str, dict]
           ) -> Tuple[Optional[Manifest], str]:
    """(the source graph `name` is carried over from, or None; why not, from the first source) -- logged."""
    first = "nothing to take it from"
    for i, old in enumerate(olds):
        why = why_not(old, name, spec, identities)
        if why is None:
            log.info(f"  {name}: unchanged and its files verify: reused from {old.root}")
            return old, ""
        first = why if i == 0 else first
    log.info(f"  {name}: exported again: {first}")
    return None, first


def why_not(old: Manifest, name: str, spec: GraphSpec, identities: Mapping[str, dict]) -> Optional[str]:
    """None when graph `name` can be carried over from `old` in every format of `identities`, else the reason.
    Verifies every file of it (sha256 included)."""
    recorded = old.parity.get("graphs", {}).get(name, {}).get("formats", {})
    for fmt, want in identities.items():
        if name not in old.graphs.get(fmt, {}):
            return f"the old export has no {fmt} graph"
        if old.graphs[fmt][name].spec != spec:
            return f"its {fmt} inputs or outputs changed (shapes or dtype)"
        got = recorded.get(fmt, {}).get("identity")
        if not isinstance(got, dict):
            return f"the old export recorded no identity for its {fmt} graph"
        changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if changed:
            return f"{fmt}: {', '.join(changed)} changed"
    try:
        for fmt in identities:
            old.verify_files(fmt, (name,), checksums=True)
    except GraphError as e:
        return f"its old files do not verify: {e}"
    return None


def _link(old: Manifest, fmt: str, name: str, root: Path) -> GraphEntry:
    """Hard-link every file of graph `name` in `fmt` from `old` into `root` (same relative paths): its entry."""
    entry = old.entry(fmt, name)
    for f in entry.files:
        dst = root / f.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(old.path_of(f.path), dst)
        except OSError:               # a filesystem without hard links: a copy costs disk, not correctness
            shutil.copy2(old.path_of(f.path), dst)
    return entry


def carry_over(old: Manifest, name: str, formats, root: Path) -> Tuple[Dict[str, GraphEntry], dict]:
    """Link graph `name`'s files in `formats` from `old` into the staging folder `root` (same relative paths):
    (entries, report), the report the one recorded when the graph was exported, marked as reused."""
    entries = {fmt: _link(old, fmt, name, root) for fmt in formats}
    report = copy.deepcopy(old.parity["graphs"][name])
    report["formats"] = {f: r for f, r in report["formats"].items() if f in formats}
    if "results" in report:
        report["results"] = {f: r for f, r in report["results"].items() if f in formats}
    report["reused"] = report.get("reused") or {"exported": old.created}    # when its files were written
    return entries, report


def derived(old: Manifest, reusable: Mapping[str, Manifest], formats, root: Path
            ) -> Tuple[Dict[str, Dict[str, GraphEntry]], dict, dict]:
    """The DERIVED graphs of `old` (the export at the destination) that stay valid, linked into `root`:
    ({format: {graph: entry}}, {parity key: record}, {tool: version})."""
    graphs, parity, tools = {}, {}, {}
    for fmt, (source, names, key, tool_names) in DERIVED.items():
        if fmt not in old.graphs:
            continue
        why = None
        if source not in formats or any(reusable.get(n) is not old for n in names):
            why = f"the {source} {', '.join(names)} they were made from is not reused"
        else:
            try:
                old.verify_files(fmt, tuple(old.graphs[fmt]), checksums=True)
            except GraphError as e:
                why = f"their files do not verify: {e}"
        if why:
            log.warning(f"--reuse: the {fmt} graphs of {old.root} are not carried over: {why} (python -m "
                        f"export.int8 makes them again)")
            continue
        graphs[fmt] = {name: _link(old, fmt, name, root) for name in old.graphs[fmt]}
        if key in old.parity:
            parity[key] = copy.deepcopy(old.parity[key])
        tools.update({t: old.tools[t] for t in tool_names if t in old.tools})
        log.info(f"  {fmt}: carried over with the {source} graphs it was made from")
    return graphs, parity, tools
