"""Config + checkpoint + export options -> an export folder in a cache, kept up to date by the exporter itself.

Each request (config, checkpoint path and the ExportOptions given) has its own folder, named after a hash of it,
so exports at other shapes do not replace each other. Inside it `python -m export --reuse` decides what is still
valid, per graph (export/reuse.py): an unchanged export is left as it is, a changed checkpoint or exporter
re-exports only the graphs it changes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

HASH_CHARS = 12


def cache_folder(cache: Path, config: str, checkpoint: Path, options: dict) -> Path:
    key = json.dumps({"config": config, "checkpoint": str(checkpoint), **options}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]
    return Path(cache).expanduser() / f"{Path(config).stem}_{digest}"


def ensure_export(config: str, checkpoint, *, cache: Path, **options) -> Path:
    """The export folder of `config` + `checkpoint` with these ExportOptions fields (resolution, decode_chunk,
    unet_batch "2T"/"T", attention_chunk, dtype "fp32"/"fp16", formats "onnx,mindir", parity, ...), exported or
    brought up to date. Raises what export.export_graphs raises (ConfigError, CheckpointError, ExportError)."""
    from export import ExportOptions, export_graphs

    ckpt = Path(checkpoint).expanduser().absolute()
    out = cache_folder(cache, config, ckpt, options)
    opts = ExportOptions(config=config, checkpoint=str(ckpt), out=str(out), reuse=True, quiet=True, **options)
    return Path(export_graphs(opts).out)
