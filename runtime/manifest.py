"""manifest.json: what an export folder holds, and the contract the runtime trusts.

Written by `export/`, read and verified here (numpy + stdlib only). Layout:

{
  "format_version": 2, "variant": "sv3d_u", "created": "...",
  "config": {...full SV3DConfig...}, "config_sha256": "...",
  "shapes": {resolution, num_frames, unet_batch, decode_chunk, dtype, attention_chunk},
  "runtime": {...RuntimeConfig: variant, latent_channels, latent_factor, scale_factor, seed, image_frame_ratio,
              conditioner, sampler, guider...},
  "graphs": {"onnx": {"unet": {"model_file": "onnx/unet.onnx", "files": [{path, sha256, bytes}],
                                "inputs": [...], "outputs": [...]}, ...}, "mindir": {...}},
  "tools": {"mindspore": "...", "onnx": "...", "numpy": "...", "python": "..."},
  "source": {"checkpoint": "...", "bytes": ...},
  "parity": {"gate": "auto", "graphs": {"unet": {"gate": "twin", "results": {"onnx": {"rel_l2": ...}}}}, ...}
}

``shapes`` and ``runtime`` are what the runtime reads (Manifest.shapes, Manifest.runtime); the full ``config`` is the
export's provenance (its hash identifies the model; benchmarks count FLOPs from it). Loading parses the config
once, to check its hash and that ``runtime`` and every graph entry are what it defines. A manifest of another
``format_version`` is refused, naming both versions.

Every file path in a manifest is confined to the export folder: relative, without `..`, and (after following
symlinks) still inside the folder; anything else is refused at load with the offending path, so a tampered or
copied manifest can never make the runtime load or hash files from elsewhere. Each graph's declared inputs and
outputs must also equal what the config and shapes define (a hand-edited resolution, say), field by field.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from pathlib import PurePosixPath
from typing import Dict, Mapping, Optional, Tuple

from configs.schema import ConfigError, RuntimeConfig, config_from_dict, runtime_config_from_dict

from .errors import GraphError
from .specs import GRAPH_NAMES, ExportShapes, GraphSpec, graph_specs, spec_differences

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2                  # 2: the typed "runtime" section replaces the unread "constants"
INT8_FORMAT = "openvino_int8"       # OpenVINO IR of NNCF-quantized graphs (export/int8.py), only these:
INT8_GRAPHS = ("unet",)
FORMATS = ("mindir", "onnx", "mslite", INT8_FORMAT)
PROTOBUF_FORMATS = ("mindir", "onnx")     # model files that are one protobuf message (mslite's .ms: a flatbuffer)
_HASH_BLOCK = 16 * 1024 * 1024
_VARINT_MAX_BYTES = 10
_WIRE_SIZES = {0: None, 1: 8, 2: None, 5: 4}      # protobuf wire type -> bytes after the key (None: a varint)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _varint(f, pos: int) -> Tuple[Optional[int], int]:
    """The protobuf varint at `pos`: (value, position after it), or (None, pos) if there is none."""
    f.seek(pos)
    value = 0
    for i, b in enumerate(f.read(_VARINT_MAX_BYTES)):
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return value, pos + i + 1
    return None, pos


def protobuf_break(path) -> Optional[int]:
    """Where the top-level protobuf wire structure of the file `path` breaks (a byte offset), None if it is whole:
    every field has a valid key (field number > 0; wire type varint, 64-bit, length-delimited or 32-bit) and
    fits in the file, and the last one ends at its end. An ONNX or MindIR model file is one protobuf message, so
    garbage or a cut or overwritten file fails here; the walk reads a few bytes per top-level field and seeks
    over the rest (the graph, the weights), so it is cheap for any file size."""
    size = os.path.getsize(path)
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            start = pos
            key, pos = _varint(f, pos)
            if key is None or key >> 3 == 0 or key & 7 not in _WIRE_SIZES:
                return start
            width = _WIRE_SIZES[key & 7]
            if width is None:                          # varint value or length prefix
                value, pos = _varint(f, pos)
                if value is None:
                    return start
                width = value if key & 7 == 2 else 0
            pos += width
            if pos > size:
                return start
    return None


@dataclass(frozen=True)
class GraphFile:
    path: str          # relative to the export folder
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class GraphEntry:
    spec: GraphSpec
    format: str
    model_file: str                   # the file an engine loads (relative)
    files: Tuple[GraphFile, ...]      # every file of the graph (model + external data), checksummed
    form: str = "plain"               # onnx, mslite: the ONNX form written or converted (export/onnx_fuse.FORMS)

    def to_dict(self) -> dict:
        return {"model_file": self.model_file, "files": [f.to_dict() for f in self.files], "form": self.form,
                **self.spec.to_dict()}

    @classmethod
    def from_dict(cls, name: str, fmt: str, d: Mapping) -> "GraphEntry":
        files = tuple(GraphFile(str(f["path"]), str(f["sha256"]), int(f["bytes"])) for f in d["files"])
        return cls(GraphSpec.from_dict(name, d), fmt, str(d["model_file"]), files, str(d.get("form", "plain")))


@dataclass(frozen=True)
class Manifest:
    root: Path
    variant: str
    config: dict
    config_sha256: str
    shapes: ExportShapes
    graphs: Dict[str, Dict[str, GraphEntry]]       # format -> graph name -> entry
    runtime: RuntimeConfig                          # what the runtime reads of the config
    tools: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    created: str = ""
    parity: dict = field(default_factory=dict)     # which export gate ran and what it measured (export/parity.py)

    @classmethod
    def create(cls, root, cfg, shapes: ExportShapes, graphs: Dict[str, Dict[str, GraphEntry]],
               **metadata) -> "Manifest":
        """The manifest of an export of the SV3DConfig ``cfg``: variant, config, hash and runtime section all from
        it. metadata: tools, source, created, parity."""
        return cls(root=Path(root), variant=cfg.variant, config=cfg.to_dict(), config_sha256=cfg.sha256(),
                   shapes=shapes, graphs=graphs, runtime=cfg.runtime_config(), **metadata)

    # -- reading ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder, name: str = MANIFEST_NAME) -> "Manifest":
        """The manifest `folder`/`name` (the exporter keeps the graphs of a failed `--reuse` export under
        another name, export/reuse.py, so that no runtime takes that folder for an export)."""
        if not isinstance(folder, (str, os.PathLike)) or os.fspath(folder) == "":
            raise GraphError("invalid export folder", expected="a folder path (str or os.PathLike)",
                             got=repr(folder))
        root = Path(folder)
        path = root / name
        if root.exists() and not root.is_dir():
            raise GraphError(f"the graphs path {root} is a file, not an export folder",
                             hint=f"pass the folder that holds {MANIFEST_NAME}")
        if not root.is_dir():
            raise GraphError(f"graphs folder not found: {root} (run `python -m export` first)")
        if not path.is_file():
            raise GraphError(f"{root} holds no {name}: not a complete export (an interrupted export "
                             f"leaves none; export again)")
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GraphError(f"{path}: unreadable manifest: {e}") from None
        if not isinstance(d, dict):
            raise GraphError(f"{path}: malformed manifest", expected="a JSON object",
                             got=f"a JSON {type(d).__name__}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise GraphError(f"{path}: unsupported manifest format_version", expected=FORMAT_VERSION,
                             got=repr(version), hint=f"this runtime reads format_version {FORMAT_VERSION} only; "
                                                     f"export again with this version")
        try:
            graphs = {fmt: {name: GraphEntry.from_dict(name, fmt, g) for name, g in per.items()}
                      for fmt, per in d["graphs"].items()}
            runtime = runtime_config_from_dict(d["runtime"], where=f"{path} runtime")
            m = cls(root=root, variant=d["variant"], config=d["config"], config_sha256=d["config_sha256"],
                    shapes=ExportShapes.from_dict(d["shapes"]), graphs=graphs, runtime=runtime,
                    tools=d.get("tools", {}), source=d.get("source", {}), created=d.get("created", ""),
                    parity=d.get("parity", {}))
        except ConfigError as e:
            raise GraphError(str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise GraphError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
        cfg = m.sv3d_config()                           # parsed once: the checks below, then the runtime section
        m._check_config(cfg)
        m._check_paths()
        m._check_specs(cfg)
        return m

    def path_of(self, rel: str) -> Path:
        """The file `rel` (a manifest path) inside the export folder; GraphError if it would leave it."""
        where = f"{self.root / MANIFEST_NAME}: file path {rel!r}"
        if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
            raise GraphError(f"{where} is not a plain relative path", expected="a path like onnx/unet.onnx")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or os.path.isabs(rel):
            raise GraphError(f"{where} is absolute", expected="a path relative to the export folder",
                             got=rel, hint="the manifest was edited or is not from this export")
        if ".." in pure.parts:
            raise GraphError(f"{where} leaves the export folder", expected="no '..' components", got=rel,
                             hint="the manifest was edited or is not from this export")
        root = self.root.resolve()
        full = (root / pure).resolve()
        if full != root and root not in full.parents:
            raise GraphError(f"{where} resolves outside the export folder (a symlink)",
                             expected=f"a file inside {root}", got=str(full))
        return self.root / pure

    def _check_paths(self) -> None:
        for per in self.graphs.values():
            for entry in per.values():
                self.path_of(entry.model_file)
                for f in entry.files:
                    self.path_of(f.path)
                if entry.model_file not in {f.path for f in entry.files}:
                    raise GraphError(f"{self.root / MANIFEST_NAME}: graph {entry.spec.name} ({entry.format}): "
                                     f"model file {entry.model_file!r} is not among its checksummed files",
                                     expected=[f.path for f in entry.files], got=entry.model_file)

    def _check_specs(self, cfg) -> None:
        try:
            want = graph_specs(cfg, self.shapes)
        except (ValueError, KeyError) as e:
            raise GraphError(f"{self.root / MANIFEST_NAME}: its shapes do not fit its config: {e}") from None
        for fmt, per in self.graphs.items():
            for name, entry in per.items():
                if name not in want:
                    raise GraphError(f"{self.root / MANIFEST_NAME}: unknown graph {name!r} in {fmt}",
                                     expected=list(GRAPH_NAMES), got=name)
                diffs = spec_differences(entry.spec, want[name])
                if diffs:
                    raise GraphError(f"{self.root / MANIFEST_NAME}: graph {name} ({fmt}) does not match the "
                                     f"export's shapes (resolution {self.shapes.resolution}, unet batch "
                                     f"{self.shapes.unet_batch}, decode chunk {self.shapes.decode_chunk}, "
                                     f"{self.shapes.dtype}): " + "; ".join(diffs),
                                     hint="the manifest was edited; export again")

    def _check_config(self, cfg) -> None:
        if cfg.sha256() != self.config_sha256:
            raise GraphError(f"{self.root / MANIFEST_NAME}: config hash {self.config_sha256[:12]}... does not "
                             f"match its config ({cfg.sha256()[:12]}...): the manifest was edited")
        if cfg.variant != self.variant:
            raise GraphError(f"{self.root / MANIFEST_NAME}: variant {self.variant!r} but config variant "
                             f"{cfg.variant!r}")
        want = cfg.runtime_config()
        if self.runtime != want:
            got, exp = self.runtime.to_dict(), want.to_dict()
            diffs = [f"{k}: {got[k]!r}, expected {exp[k]!r}" for k in exp if got[k] != exp[k]]
            raise GraphError(f"{self.root / MANIFEST_NAME}: its runtime section differs from its config: "
                             + "; ".join(diffs), hint="the manifest was edited; export again")

    def sv3d_config(self):
        """The export's full SV3DConfig (architecture included), parsed from the manifest. The runtime reads
        ``runtime`` and ``shapes`` instead; this is for tools that need the architecture (benchmarks)."""
        try:
            return config_from_dict(self.config, where=str(self.root / MANIFEST_NAME) + " config")
        except ConfigError as e:
            raise GraphError(str(e)) from None

    def formats(self) -> Tuple[str, ...]:
        return tuple(f for f in FORMATS if f in self.graphs)

    def entry(self, fmt: str, name: str) -> GraphEntry:
        if fmt not in self.graphs:
            raise GraphError(f"{self.root}: no {fmt} graphs in this export (it has {list(self.formats())}); "
                             f"export with --formats {fmt}")
        if name not in self.graphs[fmt]:
            raise GraphError(f"{self.root}: {fmt} export lacks graph {name!r} (has {sorted(self.graphs[fmt])})")
        return self.graphs[fmt][name]

    def verify_files(self, fmt: str, names=GRAPH_NAMES, checksums: bool = True) -> None:
        """Every file of the given graphs exists with the recorded size (and sha256 when `checksums`), and each
        ONNX or MindIR model file is one whole protobuf message (:func:`protobuf_break`), so a graph that cannot
        load is found before any graph is run, also when graphs load stage by stage."""
        for name in names:
            entry = self.entry(fmt, name)
            for f in entry.files:
                p = self.path_of(f.path)
                if p.is_dir():
                    raise GraphError(f"graph file {p} is a folder, not a file (listed in "
                                     f"{self.root / MANIFEST_NAME})", hint="the export was edited; export again")
                if not p.is_file():
                    raise GraphError(f"graph file missing: {p} (listed in {self.root / MANIFEST_NAME})")
                size = p.stat().st_size
                if size != f.bytes:
                    raise GraphError(f"graph file {p}: {size} bytes, manifest says {f.bytes} (truncated or "
                                     f"replaced)")
                if checksums:
                    got = sha256_file(p)
                    if got != f.sha256:
                        raise GraphError(f"graph file {p}: sha256 {got[:16]}... does not match the manifest's "
                                         f"{f.sha256[:16]}... (corrupted or replaced); export again")
            model = self.path_of(entry.model_file)
            broken = protobuf_break(model) if fmt in PROTOBUF_FORMATS else None
            if broken is not None:
                raise GraphError(f"graph file {model} is not a readable {fmt} graph: its protobuf structure breaks "
                                 f"at byte {broken} of {model.stat().st_size}", hint="corrupted or replaced; export "
                                                                                     "again")

    # -- writing ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "variant": self.variant, "created": self.created,
            "config": self.config, "config_sha256": self.config_sha256, "shapes": self.shapes.to_dict(),
            "runtime": self.runtime.to_dict(),
            "graphs": {fmt: {n: e.to_dict() for n, e in per.items()} for fmt, per in self.graphs.items()},
            "tools": self.tools, "source": self.source, "parity": self.parity,
        }

    def save(self, folder: Optional[Path] = None) -> Path:
        """Write manifest.json atomically: a reader sees the old manifest or the new one, never a part (the
        manifest is what makes a folder an export, so it is written last and replaced in one rename)."""
        path = Path(folder or self.root) / MANIFEST_NAME
        tmp = path.with_name(f".{MANIFEST_NAME}.partial")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
