"""Config + checkpoint + shapes -> an export folder in a cache, made once (export.export_graphs) and reused.

The cache folder name carries a hash of everything that decides the graphs: the config, the checkpoint (path,
size, modification time), the shapes and the formats. A folder whose manifest loads and holds the requested
formats is reused as it is.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Tuple

from configs import load_config
from runtime.specs import DTYPES
HASH_CHARS = 12


def cache_folder(cache: Path, cfg, checkpoint: Path, request: dict) -> Path:
    st = checkpoint.stat()
    key = json.dumps({"config": cfg.sha256(), "checkpoint": [str(checkpoint.resolve()), st.st_size,
                                                             int(st.st_mtime)], **request}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:HASH_CHARS]
    return cache / f"{cfg.name or cfg.variant}_{request['resolution']}_{digest}"


def ensure_export(config: str, checkpoint, *, cache: Path, resolution: Optional[int] = None,
                  unet_batch: Optional[int] = None, decode_chunk: Optional[int] = None, dtype: str = "float32",
                  attention_chunk: int = 0, formats: Tuple[str, ...] = ("onnx", "mindir"),
                  parity: str = "auto") -> Path:
    """The export folder for these settings, exporting it first if the cache does not hold it yet."""
    from runtime import GraphError, Manifest

    cfg = load_config(config)
    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise SystemExit(f"error: checkpoint not found: {ckpt}")
    if dtype not in DTYPES:
        raise SystemExit(f"error: dtype must be one of {list(DTYPES)}, got {dtype!r}")
    res = resolution or cfg.resolution
    t = cfg.num_frames
    if unet_batch not in (None, t, 2 * t):
        raise SystemExit(f"error: --unet-batch must be {2 * t} (both CFG branches) or {t} (one branch), got "
                         f"{unet_batch}")
    request = {"resolution": res, "unet_batch": "T" if unet_batch == t else "2T",
               "decode_chunk": decode_chunk or cfg.decoder_call_frames(), "dtype": DTYPES[dtype].cli,
               "attention_chunk": attention_chunk, "formats": sorted(formats)}
    out = cache_folder(Path(cache).expanduser(), cfg, ckpt, request)
    if (out / "manifest.json").is_file():
        try:
            m = Manifest.load(out)
            if all(f in m.formats() for f in formats):
                return out
        except GraphError:
            pass                                            # incomplete or stale: export again over it
    from export import ExportOptions, export_graphs

    out.parent.mkdir(parents=True, exist_ok=True)
    opts = ExportOptions(config=config, checkpoint=str(ckpt), out=str(out), resolution=res,
                         decode_chunk=request["decode_chunk"], unet_batch=request["unet_batch"],
                         attention_chunk=attention_chunk, dtype=request["dtype"], formats=",".join(formats),
                         parity=parity, overwrite=True, quiet=True)
    return Path(export_graphs(opts).out)
