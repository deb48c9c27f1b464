"""What every backend shares: the device and option types, the runner base class and the input checks.

The backend modules import these from here, not from the package, so that the package (which loads a backend
module on demand) and the backend modules never import each other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import GraphError, SV3DError
from ..specs import GraphSpec, TensorSpec

DEVICES = ("cpu", "cuda", "ascend")
CACHE_ENV = "SV3D_CACHE_DIR"     # the root of every engine's cache (OpenVINO blobs, the MindSpore Lite engine)
PRECISIONS = ("auto", "f32", "bf16", "int8")     # int8: openvino only, the export's openvino_int8 UNet


class BackendError(SV3DError):
    """A backend is unknown, not installed, or cannot use the requested device."""


@dataclass(frozen=True)
class DeviceSpec:
    """Where a graph runs: kind in DEVICES and the device index (ignored on cpu)."""
    kind: str = "cpu"
    index: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DEVICES:
            raise BackendError("unknown device", expected=f"one of {list(DEVICES)}", got=repr(self.kind))
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)) or self.index < 0:
            raise BackendError("invalid device id", expected="an integer >= 0", got=repr(self.index))


@dataclass(frozen=True)
class RunOptions:
    """Engine knobs shared by the backends (each uses what it supports)."""
    intra_op_threads: int = 0    # 0 = the engine's default
    # onnxruntime's memory plan: its buffer-reuse plan and its CPU arena; None = per graph, as
    # onnxruntime_backend.memory_plan decides.
    memory_reuse: Optional[bool] = None
    cpu_mem_arena: Optional[bool] = None
    # openvino: f32 | bf16 | int8 | auto (bf16 where the CPU has it natively); see openvino_backend.py
    precision: str = "auto"
    # openvino: compiled-model cache folder; None = the default ($SV3D_CACHE_DIR/openvino or
    # ~/.cache/sv3d-runtime/openvino), "" = no cache
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BackendError("unknown precision", expected=f"one of {list(PRECISIONS)}", got=repr(self.precision))


def cache_root() -> Path:
    """``$SV3D_CACHE_DIR``, else ``~/.cache/sv3d-runtime``: where engines keep what they build once."""
    base = os.environ.get(CACHE_ENV)
    return Path(base).expanduser() if base else Path.home() / ".cache" / "sv3d-runtime"


# (name, dims, dtype) of one graph input or output as the engine's file declares it: names unstripped (MindIR:
# ``<graph>:<argument>``), dims None or a tuple (an int per static axis), dtype a spec dtype name or a stand-in
EngineTensor = Tuple[str, Optional[Tuple], Optional[str]]


class BaseRunner:
    """The checks every backend shares: feeds against the spec, outputs back to float32 by name.

    Subclasses implement ``_run(arrays) -> list of outputs`` with ``arrays`` in the spec's input order (already
    of the spec's dtype, C-contiguous) and outputs in the spec's output order.

    ``declared``: the inputs and outputs as the graph file declares them (EngineTensor lists), recorded at load
    where the engine reports them (onnxruntime, mindspore), else None; export/checks.py compares them with the
    spec field by field.
    """

    backend = "base"

    def __init__(self, spec: GraphSpec, path: str,
                 declared: Optional[Tuple[List[EngineTensor], List[EngineTensor]]] = None) -> None:
        self.spec = spec
        self.path = path
        self.declared = declared

    @property
    def input_specs(self) -> Tuple[TensorSpec, ...]:
        return self.spec.inputs

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> list:
        self.spec.check_feeds(feeds)
        return [np.ascontiguousarray(feeds[t.name], dtype=t.dtype) for t in self.spec.inputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        arrays = self.prepare(feeds)
        try:
            outs = self._run(arrays)
        except SV3DError:
            raise
        except Exception as e:                  # engine failures (out of memory, device errors) as a typed error
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise GraphError(f"graph {self.spec.name} failed on {self.backend}: {type(e).__name__}: {first}",
                             path=self.path) from e
        if len(outs) != len(self.spec.outputs):
            raise GraphError(f"graph {self.spec.name} ({self.backend}, {self.path}) returned {len(outs)} outputs, "
                             f"the manifest declares {len(self.spec.outputs)} {list(self.spec.output_names)}")
        result = {}
        for t, arr in zip(self.spec.outputs, outs):
            arr = np.asarray(arr)
            if tuple(arr.shape) != t.shape:
                raise GraphError(f"graph {self.spec.name} ({self.backend}): output {t.name!r} has shape "
                                 f"{tuple(arr.shape)}, the manifest declares {t.shape}", path=self.path)
            result[t.name] = arr.astype(np.float32, copy=False)
        return result

    def _run(self, arrays: list) -> list:       # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.name} [{self.path}]>"


def graph_input_name(name: str) -> str:
    """A graph input's argument name without an engine prefix (MindIR writes ``<graph>:<argument>``)."""
    return name.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def check_engine_inputs(spec: GraphSpec, engine: Iterable[Tuple[str, Tuple]], *, backend: str,
                        path: str, ordered: bool) -> None:
    """Compare the inputs a loaded graph reports with the spec; GraphError naming both sides on a mismatch.

    engine: (name, shape) per input as the engine reports it (names may carry a prefix; dims that are not ints
    -- dynamic axes -- match anything). ordered: the order matters too (positional binding).
    """
    got = [(graph_input_name(n), tuple(s) if s is not None else None) for n, s in engine]
    want = [(t.name, t.shape) for t in spec.inputs]
    got_names = [n for n, _ in got]
    want_names = [n for n, _ in want]
    same_names = got_names == want_names if ordered else sorted(got_names) == sorted(want_names)
    if not same_names:
        raise GraphError(f"graph {spec.name} ({backend}): the loaded graph's inputs {got_names} do not match the "
                         f"manifest's {want_names}" + (" (order matters: inputs bind by position)" if ordered else ""),
                         path=path)
    shapes = dict(got)
    for name, shape in want:
        g = shapes[name]
        if g is None:
            continue
        ok = len(g) == len(shape) and all(not isinstance(d, (int, np.integer)) or d in (-1, s)
                                          for d, s in zip(g, shape))
        if not ok:
            raise GraphError(f"graph {spec.name} ({backend}): input {name!r} has shape {tuple(g)} in the graph "
                             f"file but {shape} in the manifest", path=path)
