"""What every backend shares: the runner base class, what a backend declares it honours, and the load-time check
of a graph's inputs and outputs against its spec.

The backend modules import these from here, not from the package, so that the package (which loads a backend
module on demand) and the backend modules never import each other. Each backend module provides:

    HONOURS                              the RunOptions knobs it applies (Honours); the others are refused
    graph_precision(graph_name, options) the precision it runs a graph at (None: as exported), known before loading
    load(path, entry, device, options)   a BaseRunner, its declared inputs and outputs checked (check_engine_io)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import BackendError, GraphError, SV3DError, first_line
from ..run_options import DEVICES, PRECISIONS, DeviceSpec, RunOptions
from ..specs import GraphSpec, TensorSpec

CACHE_ENV = "SV3D_CACHE_DIR"     # the root of every engine's cache (OpenVINO blobs, the MindSpore Lite engine)


@dataclass(frozen=True)
class Honours:
    """The engine knobs of RunOptions one backend applies. backend, device, memory and verify_checksums are
    honoured for every backend (by the loader and the pipeline); anything else a backend does not declare here is
    refused (:meth:`unhonoured`), never silently ignored: a bf16 run that quietly ran f32 makes a benchmark lie."""
    precisions: Tuple[str, ...] = ("auto", "f32")    # auto and f32: the graphs run at their exported dtype
    threads: bool = True                             # RunOptions.threads
    cache_dir: bool = False                          # a compiled-model cache
    memory_plan: bool = False                        # RunOptions.memory_reuse / cpu_mem_arena

    def unhonoured(self, options: RunOptions) -> List[str]:
        """The options asked for that this backend cannot honour, spelled as the caller wrote them."""
        asked = [("precision", options.precision not in self.precisions),
                 ("threads", options.threads != 0 and not self.threads),
                 ("cache_dir", options.cache_dir is not None and not self.cache_dir),
                 ("memory_reuse", options.memory_reuse is not None and not self.memory_plan),
                 ("cpu_mem_arena", options.cpu_mem_arena is not None and not self.memory_plan)]
        return [options.names.spell(name, getattr(options, name)) for name, refused in asked if refused]

    def describe(self) -> str:
        """What it honours, in words: ``precision auto | f32, threads``."""
        parts = ["precision " + " | ".join(self.precisions)]
        parts += [name for name, yes in (("threads", self.threads), ("cache_dir", self.cache_dir),
                                         ("memory_reuse / cpu_mem_arena", self.memory_plan)) if yes]
        return ", ".join(parts)


def as_exported(graph_name: str, options: RunOptions) -> Optional[str]:
    """graph_precision of a backend without a precision choice: every graph runs at its exported dtype (None)."""
    return None


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
    precision: Optional[str] = None          # the precision the engine runs this graph at; None = as exported

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
            raise GraphError(f"graph {self.spec.name} failed on {self.backend}: {type(e).__name__}: {first_line(e)}",
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


def check_engine_io(spec: GraphSpec, inputs: Sequence[EngineTensor], outputs: Optional[Sequence[EngineTensor]],
                    *, backend: str, path: str, ordered: bool = False, output_names: bool = True) -> None:
    """The one load-time check of a loaded graph against its spec, for every backend: GraphError naming both sides
    on the first difference.

    inputs, outputs: EngineTensors as the engine reports them; names may carry a prefix (graph_input_name), dims
    that are not ints (dynamic axes, -1) match any size, and dims that are None or empty (MindSpore may write an
    output without its shape) or a dtype of None are not known to the engine and not checked. outputs None: the
    engine reports none before a run (the official MindSpore Lite binding).
    ordered: the inputs bind by position, so their order must be the spec's too. output_names: the engine keeps
    the spec's output names (ONNX, OpenVINO, Lite), else outputs are matched by position (MindSpore's MindIR
    names its outputs after ops).
    """
    where = f"graph {spec.name} ({backend})"
    got = [graph_input_name(n) for n, _, _ in inputs]
    want = list(spec.input_names)
    if (got != want) if ordered else (sorted(got) != sorted(want)):
        raise GraphError(f"{where}: the loaded graph's inputs {got} do not match the manifest's {want}"
                         + (" (order matters: inputs bind by position)" if ordered else ""), path=path)
    pairs = [("input", t, inputs[got.index(t.name)]) for t in spec.inputs]
    if outputs is not None:
        if output_names:
            names = [n for n, _, _ in outputs]
            missing = [t.name for t in spec.outputs if t.name not in names]
            if missing:
                raise GraphError(f"{where}: outputs {names} in the graph file, the manifest expects "
                                 f"{list(spec.output_names)}", path=path)
            pairs += [("output", t, outputs[names.index(t.name)]) for t in spec.outputs]
        elif len(outputs) != len(spec.outputs):
            raise GraphError(f"{where}: {len(outputs)} outputs in the graph file, the manifest expects "
                             f"{len(spec.outputs)} {list(spec.output_names)}", path=path)
        else:
            pairs += [("output", t, e) for t, e in zip(spec.outputs, outputs)]
    for role, t, (_, dims, dtype) in pairs:
        if dims and not _same_shape(dims, t.shape):
            raise GraphError(f"{where}: {role} {t.name!r} has shape {tuple(dims)} in the graph file but {t.shape} "
                             f"in the manifest", path=path)
        if dtype is not None and dtype != t.dtype:
            raise GraphError(f"{where}: {role} {t.name!r} is {dtype} in the graph file but {t.dtype} in the "
                             f"manifest", path=path)


def _same_shape(dims, shape) -> bool:
    return len(dims) == len(shape) and all(not isinstance(d, (int, np.integer)) or d in (-1, s)
                                           for d, s in zip(dims, shape))
