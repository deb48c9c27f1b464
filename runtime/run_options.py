"""How an export's graphs are run -- the engine, the device, the engine's knobs, the memory mode -- in one frozen
object, checked once when it is made.

    options = RunOptions(backend="openvino", precision="bf16", threads=2)
    pipe = SV3DPipeline.from_export("graphs/sv3d_p", options)     # or from_export(folder, backend="openvino", ...)
    runner = load_graph(manifest, "unet", options)

The command line makes one from its flags with ``names=runtime.cli.FLAGS``, so that its errors say ``--threads``
where the Python API's say ``threads``. What a backend does with each engine knob is declared by the backend itself
(runtime.backends.base.Honours); a knob the chosen backend cannot honour is refused when the backend is chosen,
never silently ignored.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from configs.limits import usable_cpus

from .errors import BackendError, SV3DError
from .option_names import API_NAMES, OptionNames

BACKENDS = ("mslite", "mindspore", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto",) + BACKENDS
DEVICES = ("cpu", "cuda", "ascend")
PRECISIONS = ("auto", "f32", "bf16", "int8")     # int8: openvino only, the export's openvino_int8 UNet
MEMORY_MODES = ("auto", "resident", "sequential")


@dataclass(frozen=True)
class RunOptions:
    """Everything that says how an export's graphs run (build it once; every loader reads it)."""
    backend: str = "auto"              # BACKEND_CHOICES; auto: runtime.backends.AUTO_ORDER
    device: str = "cpu"                # DEVICES
    device_id: int = 0
    threads: int = 0                   # intra-op threads: 0 = the engine's default, at most usable_cpus()
    # the compute precision of the graphs that run many times (the UNet, the decoder): f32 = as exported, the
    # engine reduces nothing; bf16 = bf16 matmuls and convolutions (openvino on CPUs with AMX / AVX512_BF16);
    # auto = the backend's best (openvino: bf16 where the CPU has it, else f32; the others: as exported);
    # int8 = openvino's opt-in int8 UNet (the export's openvino_int8 graphs, python -m export.int8)
    precision: str = "auto"
    # compiled-model cache folder (openvino); None = the default ($SV3D_CACHE_DIR/openvino or
    # ~/.cache/sv3d-runtime/openvino), "" = no cache
    cache_dir: Optional[str] = None
    memory: str = "auto"               # MEMORY_MODES (runtime.pipeline.resolve_memory_mode)
    verify_checksums: bool = True      # sha256 of every graph file against the manifest (sizes are always checked)
    # onnxruntime's memory plan (its buffer-reuse plan and its CPU arena); None = per graph, as
    # onnxruntime_backend.memory_plan decides
    memory_reuse: Optional[bool] = None
    cpu_mem_arena: Optional[bool] = None
    names: OptionNames = field(default=API_NAMES, compare=False, repr=False)    # how the caller spells them

    def __post_init__(self) -> None:
        n = self.names
        _choice(n.backend, self.backend, BACKEND_CHOICES, BackendError)
        check_device(self.device, self.device_id, n)
        check_threads(self.threads, n.threads)
        _choice(n.precision, self.precision, PRECISIONS, BackendError)
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise SV3DError(f"invalid {n.cache_dir}", expected="a folder path, '' (no cache) or None",
                                got=repr(self.cache_dir))
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        _choice(n.memory, self.memory, MEMORY_MODES, SV3DError)
        for name in ("verify_checksums", "memory_reuse", "cpu_mem_arena"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name != "verify_checksums"):
                raise SV3DError(f"invalid {getattr(n, name)}", expected="True or False"
                                + ("" if name == "verify_checksums" else " (or None: per graph)"), got=repr(value))

    @property
    def device_spec(self) -> "DeviceSpec":
        return DeviceSpec(self.device, self.device_id)


@dataclass(frozen=True)
class DeviceSpec:
    """Where a graph runs: kind in DEVICES and the device index (ignored on cpu)."""
    kind: str = "cpu"
    index: int = 0

    def __post_init__(self) -> None:
        check_device(self.kind, self.index)


RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions)) - {"names"}


def run_options(options: Optional[RunOptions] = None, fields: Mapping[str, Any] = None) -> RunOptions:
    """``options`` (default ``RunOptions()``) with ``fields`` (RunOptions fields by keyword) replaced: the keyword
    form of the API, ``from_export(folder, backend="onnxruntime", threads=2)``."""
    base = RunOptions() if options is None else options
    if not isinstance(base, RunOptions):
        raise SV3DError("invalid run options", expected="a RunOptions (or None)", got=repr(base),
                        hint="give backend=, device=, threads= ... by keyword")
    fields = dict(fields or {})
    unknown = sorted(set(fields) - RUN_FIELDS)
    if unknown:
        raise SV3DError("unknown run options", expected=f"RunOptions fields {sorted(RUN_FIELDS)}", got=unknown)
    return dataclasses.replace(base, **fields) if fields else base


def check_threads(value, name: str = API_NAMES.threads) -> int:
    """Intra-op threads: 0 (the engine's default) up to the CPUs this process may use (configs.limits.usable_cpus).
    More would only oversubscribe the CPUs (configs/limits.py has the measurements), so they are refused, the
    bound named, rather than clamped: a clamp would quietly run, and report, another setting than asked for."""
    high = usable_cpus()
    if not _is_int(value) or not 0 <= value <= high:
        raise SV3DError(f"invalid {name}", expected=f"an integer in [0, {high}] (0 = the engine's default, "
                                                    f"{high} = the CPUs this process may use)", got=repr(value))
    return int(value)


def check_device(kind, index, names: OptionNames = API_NAMES) -> None:
    """A device kind in DEVICES and an index >= 0 (BackendError naming which)."""
    if kind not in DEVICES:
        raise BackendError(f"unknown {names.device}", expected=f"one of {list(DEVICES)}", got=repr(kind))
    if not _is_int(index) or index < 0:
        raise BackendError(f"invalid {names.device_id}", expected="an integer >= 0", got=repr(index))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _choice(name: str, value, choices, error) -> None:
    if not isinstance(value, str) or value not in choices:
        raise error(f"unknown {name}", expected=f"one of {list(choices)}", got=repr(value))


__all__ = ["BACKENDS", "BACKEND_CHOICES", "DEVICES", "DeviceSpec", "MEMORY_MODES", "PRECISIONS", "RUN_FIELDS",
           "RunOptions", "check_device", "check_threads", "run_options"]
