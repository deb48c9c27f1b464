"""Load official-layout SV3D checkpoints (sv3d_u.safetensors / sv3d_p.safetensors) into our Cells.

The map from official names to Cell parameters is explicit: each used component has an official prefix
(models/keys.py) and its Cell's parameter names are the official names with that prefix removed. The one shape
difference is the temporal (3,1,1) convolution, which our UNet runs as a (3,1) Conv2d (MINDSPORE_NOTES.md: the
Conv3d padding trap), so its (Co, Ci, 3, 1, 1) weights are stored as (Co, Ci, 3, 1).

The file is validated from its header alone (size, names, shapes, dtypes) before any tensor is read, so a wrong
file or a config/checkpoint mismatch fails fast with the full list of what differs. Tensors that inference never
reads (OpenCLIP text leftovers, the conditioner VAE's decoder and post_quant_conv, EMA copies...) are skipped by
name, on purpose.

Pickle checkpoints (PyTorch `.ckpt` / `.pt`, zip or raw pickle) are recognised by their first bytes and refused
without being read (unpickling runs arbitrary code), with a hint to convert them. Every tensor is checked for
NaN/Inf as it is read, and the first bad one is named.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from configs import SV3DConfig
from configs.errors import SV3DError
from .components import COMPONENTS, build_component, component_keys, official_keys
from .keys import IGNORED_PREFIXES, unused_keys

SUPPORTED_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64}
_MAX_HEADER = 100 * 1024 * 1024        # safetensors' own limit on the JSON header


class CheckpointError(SV3DError, ValueError):
    """The checkpoint file is missing, unreadable, not safetensors, truncated, or does not fit the config."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: Tuple[int, ...]
    start: int          # byte offsets into the data section
    end: int


@dataclass(frozen=True)
class CheckpointHeader:
    path: Path
    tensors: Dict[str, TensorInfo]
    data_offset: int    # file offset of the data section

    @property
    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {k: t.shape for k, t in self.tensors.items()}

    def dtypes(self) -> List[str]:
        return sorted({t.dtype for t in self.tensors.values()})


ZIP_MAGIC = b"PK\x03\x04"            # torch.save's default (zip) format: data.pkl inside
PICKLE_PROTOCOLS = range(2, 6)        # a raw pickle starts with PROTO (0x80) and the protocol number


def _pickle_kind(head: bytes) -> Optional[str]:
    if head.startswith(ZIP_MAGIC):
        return "a zip archive (PyTorch's torch.save format, which holds a pickle)"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
        return f"a Python pickle (protocol {head[1]})"
    return None


def read_header(path) -> CheckpointHeader:
    """Parse and sanity-check a safetensors header (no tensor data is read)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            kind = _pickle_kind(head)
            if kind is not None:
                raise CheckpointError(
                    f"{path}: expected a safetensors file, got {kind}; pickle checkpoints are refused without "
                    f"being read, because loading one runs arbitrary code (convert it to safetensors on a trusted "
                    f"machine, e.g. safetensors.torch.save_file(torch.load(path, weights_only=True)"
                    f"['state_dict'], 'model.safetensors'), or download the official .safetensors file)")
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, too short for a header)")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} does not fit a "
                                      f"{size}-byte file)")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    meta.pop("__metadata__", None)
    tensors: Dict[str, TensorInfo] = {}
    data_end = 0
    for name, info in meta.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for {name!r}") from None
        tensors[name] = TensorInfo(dtype, shape, int(start), int(end))
        data_end = max(data_end, int(end))
    expected = 8 + n + data_end
    if size < expected:
        raise CheckpointError(f"{path}: truncated: the header describes {expected} bytes, the file has {size} "
                              f"(an interrupted download or copy?)")
    unsupported = sorted({t.dtype for t in tensors.values()} - set(SUPPORTED_DTYPES))
    if unsupported:
        raise CheckpointError(f"{path}: unsupported tensor dtype(s) {unsupported}; expected "
                              f"{sorted(SUPPORTED_DTYPES)}")
    return CheckpointHeader(path, tensors, 8 + n)


def _fmt(items: List[str], limit: int = 12) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n    " + "\n    ".join(items[:limit]) + more


def check_layout(header: CheckpointHeader, cfg: SV3DConfig, components: Iterable[str]) -> Dict[str, Tuple]:
    """Compare the file with the official layout of `cfg` for `components`; raise listing every difference.

    Returns the expected {official name: shape} of the requested components.
    """
    expected: Dict[str, Tuple] = {}
    for comp in components:
        expected.update(component_keys(cfg, comp))
    shapes = header.shapes
    known = set(official_keys(cfg))
    missing = sorted(k for k in expected if k not in shapes)
    mismatched = sorted(f"{k}: file {shapes[k]}, config {expected[k]}" for k in expected
                        if k in shapes and tuple(shapes[k]) != tuple(expected[k]))
    unexpected = sorted(k for k in shapes if k not in known and not k.startswith(IGNORED_PREFIXES))
    if missing or mismatched or unexpected:
        parts = [f"checkpoint {header.path} does not match config {cfg.name or cfg.variant!r} "
                 f"(variant {cfg.variant})"]
        if mismatched:
            parts.append(f"  {len(mismatched)} shape mismatch(es):{_fmt(mismatched)}")
        if missing:
            parts.append(f"  {len(missing)} missing tensor(s):{_fmt(missing)}")
        if unexpected:
            parts.append(f"  {len(unexpected)} unexpected tensor(s):{_fmt(unexpected)}")
        label = "model.diffusion_model.label_emb.0.0.weight"
        fits = _fitting_bundled_configs(header, components, other_than=expected)
        other = [c for c in fits if c.variant != cfg.variant]
        same = [c for c in fits if c.variant == cfg.variant]
        if other:
            width = (f" (the vector-conditioning width unet.adm_in_channels is {shapes[label][1]} in the file, "
                     f"{expected[label][1]} in the config)" if label in shapes and label in expected else "")
            parts.append(f"  hint: the file is a checkpoint of the other variant: it fits the bundled config "
                         f"{other[0].name!r} (variant {other[0].variant}); pass -c {other[0].name}{width}")
        elif same:
            parts.append(f"  hint: the file is a {same[0].variant} checkpoint of another size: it fits the "
                         f"bundled config {same[0].name!r}; pass -c {same[0].name}")
        elif label in shapes and label in expected and shapes[label] != expected[label]:
            parts.append(f"  hint: the vector-conditioning width (unet.adm_in_channels) is {shapes[label][1]} in "
                         f"the file and {expected[label][1]} in the config (sv3d_u and sv3d_p differ there)")
        elif unexpected and not (missing or mismatched):
            parts.append(f"  hint: the file holds every tensor of this config, and also {unexpected[0]!r}"
                         f"{f' and {len(unexpected) - 1} more' if len(unexpected) > 1 else ''}, which it does not "
                         f"define: remove it, or check that this is the file you meant")
        raise CheckpointError("\n".join(parts))
    return expected


def _fitting_bundled_configs(header: CheckpointHeader, components: Iterable[str],
                             other_than: Optional[Dict[str, Tuple]] = None) -> List[SV3DConfig]:
    """Bundled configs whose official layout (of `components`) the file holds exactly, except those whose layout
    is `other_than` (the config already tried: suggesting it again would be no help)."""
    from configs import ConfigError, bundled_names, load_config

    shapes = header.shapes
    fits = []
    for name in bundled_names():
        try:
            other = load_config(name)
        except ConfigError:
            continue
        want: Dict[str, Tuple] = {}
        for comp in components:
            want.update(component_keys(other, comp))
        if want != other_than and all(k in shapes and tuple(shapes[k]) == tuple(v) for k, v in want.items()):
            fits.append(other)
    return fits


def skipped_tensors(header: CheckpointHeader, cfg: SV3DConfig) -> List[str]:
    """Names present in the file that inference does not read."""
    unused = set(unused_keys(cfg))
    return sorted(k for k in header.tensors if k in unused or k.startswith(IGNORED_PREFIXES))


class CheckpointReader:
    """Reads tensors by official name as float32 numpy arrays.

    The `safetensors` package opens and validates the file (its own header and offset checks on top of ours);
    tensor bytes are then read with plain positioned reads at the header's offsets. Reading through safetensors'
    memory map instead doubled the peak RSS of a full-size load (mapped file pages count as resident: 11.9 GiB
    against 6.1 GiB for the 6 GB UNet) and took twice as long on this machine.
    """

    def __init__(self, path, cfg: SV3DConfig, components: Iterable[str] = tuple(COMPONENTS)):
        self.header = read_header(path)
        self.cfg = cfg
        self.components = tuple(components)
        self.expected = check_layout(self.header, cfg, self.components)
        from safetensors import safe_open   # lazy: only needed once a file is really opened

        try:
            with safe_open(str(self.header.path), framework="numpy") as f:
                names = set(f.keys())
        except Exception as e:  # safetensors raises its own SafetensorError types
            raise CheckpointError(f"{self.header.path}: safetensors could not open it: {e}") from None
        if names != set(self.header.tensors):
            raise CheckpointError(f"{self.header.path}: safetensors and the header disagree on the tensor names")

    def get(self, name: str) -> np.ndarray:
        info = self.header.tensors[name]
        count = int(np.prod(info.shape, dtype=np.int64)) if info.shape else 1
        np_dtype = np.dtype("<u2") if info.dtype == "BF16" else np.dtype(SUPPORTED_DTYPES[info.dtype]).newbyteorder("<")
        if count * np_dtype.itemsize != info.end - info.start:
            raise CheckpointError(f"{self.header.path}: tensor {name!r} has {info.end - info.start} bytes, its "
                                  f"shape {info.shape} and dtype {info.dtype} need {count * np_dtype.itemsize}")
        try:
            with open(self.header.path, "rb") as f:
                f.seek(self.header.data_offset + info.start)
                raw = np.fromfile(f, dtype=np_dtype, count=count)
        except OSError as e:
            raise CheckpointError(f"{self.header.path}: cannot read tensor {name!r}: {e.strerror or e}") from None
        if raw.size != count:
            raise CheckpointError(f"{self.header.path}: tensor {name!r} is cut short ({raw.size} of {count} values)")
        arr = bf16_to_float32(raw) if info.dtype == "BF16" else raw.astype(np.float32, copy=False)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            nan = int(np.count_nonzero(np.isnan(arr)))
            raise CheckpointError(f"{self.header.path}: tensor {name!r} is not finite: expected finite weights, got "
                                  f"{nan} NaN and {bad - nan} Inf of {arr.size} values (a corrupted or diverged "
                                  f"checkpoint)")
        return arr.reshape(info.shape)


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32: bfloat16 is the high half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _to_param_shape(name: str, arr: np.ndarray, param_shape: Tuple[int, ...]) -> np.ndarray:
    """The explicit shape rules between the official layout and our Cells."""
    if arr.shape == param_shape:
        return arr
    # temporal (k,1,1) Conv3d weight -> (k,1) Conv2d weight over (b, C, T, H*W)
    if arr.ndim == 5 and arr.shape[3:] == (1, 1) and arr.shape[:4] == param_shape:
        return arr.reshape(param_shape)
    raise CheckpointError(f"tensor {name}: checkpoint shape {arr.shape} cannot be mapped to parameter shape "
                          f"{param_shape}")


def load_component(cell, component: str, reader: CheckpointReader) -> int:
    """Copy every official tensor of `component` into `cell`; returns the number of parameters loaded."""
    import mindspore as ms

    keys = component_keys(reader.cfg, component)            # KeyError naming the components if unknown
    prefix = COMPONENTS[component].prefix
    params = {name: p for name, p in cell.parameters_and_names()}
    expected = {k[len(prefix):]: k for k in keys}
    no_param = sorted(set(expected) - set(params))
    no_tensor = sorted(set(params) - set(expected))
    if no_param or no_tensor:
        raise CheckpointError(f"internal name map of {component} is out of sync with the official layout: "
                              f"official tensors without a parameter {no_param[:10]}, parameters without an "
                              f"official tensor {no_tensor[:10]}")
    count = 0
    for local, official in expected.items():
        p = params[local]
        arr = _to_param_shape(official, reader.get(official), tuple(p.shape))
        p.set_data(ms.Tensor(arr, dtype=p.dtype))
        count += int(arr.size)
    return count


def loaded_component(reader: CheckpointReader, component: str, *, num_frames: Optional[int] = None,
                     input_size: Optional[int] = None, attention_chunk: int = 0):
    """The Cell of `component`, built for these sizes (default: the config's), loaded from `reader` and in
    inference mode. The one build-and-load step: the export wrappers, models.load_check and the tests use it."""
    cell = build_component(reader.cfg, component, num_frames=num_frames, input_size=input_size,
                           attention_chunk=attention_chunk)
    load_component(cell, component, reader)
    cell.set_train(False)
    return cell


def tensors_sha256(header: CheckpointHeader, names: Iterable[str]) -> str:
    """sha256 over the named tensors of the file, each as name, dtype, shape and raw bytes, in name order: the
    content identity of a component's weights (export/reuse.py), whatever the file's path, time or other tensors."""
    import hashlib

    h = hashlib.sha256()
    try:
        with open(header.path, "rb") as f:
            for name in sorted(names):
                info = header.tensors[name]
                h.update(json.dumps([name, info.dtype, list(info.shape)]).encode())
                f.seek(header.data_offset + info.start)
                left = info.end - info.start
                while left > 0:
                    block = f.read(min(left, 1 << 24))
                    if not block:
                        raise CheckpointError(f"{header.path}: tensor {name!r} is cut short")
                    h.update(block)
                    left -= len(block)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {header.path}: {e.strerror or e}") from None
    return h.hexdigest()
