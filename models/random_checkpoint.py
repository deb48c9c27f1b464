"""Write a random-weight checkpoint in the official SV3D key layout for any config (full size included).

    python -m models.random_checkpoint --config sv3d_u --out /tmp/sv3d_u_random.safetensors [--dtype fp16]

The file is streamed tensor by tensor in the safetensors format (8-byte header length, JSON header, raw
little-endian data), so a full-size 9.4 GB checkpoint is written with one tensor in memory at a time. Weights are
drawn so activations stay in a sane range (N(0, 1/fan_in) for matrices and kernels, ~1 for norm scales), every
tensor non-zero. These weights produce noise, not objects: they exist to exercise the full-size path without the
real download.
"""

import json
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from configs import ConfigError, load_config
from runtime.specs import DTYPES
from .components import official_keys

_DTYPES = {d.cli: d for d in DTYPES.values()}      # --dtype fp32 | fp16
_ALIGN = 8


def random_tensor(name: str, shape: Tuple[int, ...], seed: int) -> np.ndarray:
    """A deterministic random tensor for `name` (float32)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if not shape:                                   # logit_scale
        return np.asarray(np.log(1 / 0.07), dtype=np.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "mix_factor":
        return rng.standard_normal(shape, dtype=np.float32)
    if len(shape) == 1:
        if leaf == "weight":                          # norm scales
            return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if leaf in ("positional_embedding", "class_embedding"):
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    # x @ proj layouts (in, out) have fan-in on axis 0; torch weights (out, in, *k) on the rest
    fan_in = shape[0] if leaf in ("proj", "text_projection") else int(np.prod(shape[1:]))
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= np.float32(1.0 / np.sqrt(fan_in))
    return w


def write_random_checkpoint(cfg, out_path, *, dtype: str = "fp32", seed: int = 0, progress: bool = True) -> Dict:
    """Stream a random checkpoint for `cfg` to `out_path` (written to a temp name, renamed when complete)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    np_dtype, st_dtype = np.dtype(_DTYPES[dtype].name), _DTYPES[dtype].safetensors
    item = np_dtype.itemsize
    keys = dict(sorted(official_keys(cfg).items()))
    header, offset = {}, 0
    for name, shape in keys.items():
        nbytes = int(np.prod(shape, dtype=np.int64)) * item if shape else item
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", "generator": "sv3d-runtime random_checkpoint",
                              "config": cfg.name or cfg.variant, "seed": str(seed)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % _ALIGN)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=offset, unit="B", unit_scale=True, desc=f"writing {out_path.name}", file=sys.stderr)
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for name, shape in keys.items():
                arr = random_tensor(name, shape, seed).astype(np_dtype, copy=False)
                f.write(np.ascontiguousarray(arr).astype("<" + np.dtype(np_dtype).str[1:], copy=False).tobytes())
                if bar is not None:
                    bar.update(arr.nbytes)
        os.replace(tmp, out_path)
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            tmp.unlink()
    params = sum(int(np.prod(s)) if s else 1 for s in keys.values())
    return {"path": str(out_path), "tensors": len(keys), "parameters": params, "bytes": out_path.stat().st_size,
            "seconds": time.perf_counter() - t0, "dtype": dtype}


@dataclass
class Options:
    config: str = field(metadata=dict(args=["-c", "--config"], help="bundled config name or YAML path"))
    out: str = field(metadata=dict(args=["-o", "--out"], help="output .safetensors path"))
    dtype: str = field(default="fp32", metadata=dict(choices=sorted(_DTYPES), help="tensor dtype in the file"))
    seed: int = field(default=0, metadata=dict(help="random seed"))
    overwrite: bool = field(default=False, metadata=dict(help="replace an existing file"))


def main(argv: Optional[list] = None) -> int:
    from argparse_dataclass import ArgumentParser

    opts = ArgumentParser(Options, description=__doc__.split("\n")[0]).parse_args(argv)
    try:
        cfg = load_config(opts.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if Path(opts.out).exists() and not opts.overwrite:
        print(f"error: {opts.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        info = write_random_checkpoint(cfg, opts.out, dtype=opts.dtype, seed=opts.seed)
    except OSError as e:
        print(f"error: cannot write {opts.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"wrote {info['path']}: {info['tensors']} tensors, {info['parameters']:,} parameters, "
          f"{info['bytes'] / 1e9:.2f} GB, {info['seconds']:.1f} s (RANDOM weights, official {cfg.variant} layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
