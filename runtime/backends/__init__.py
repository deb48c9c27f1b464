"""Engines that run exported graphs, behind one small interface.

    runner = load_graph(manifest, "unet", backend="onnxruntime", device="cpu")
    runner.spec            # GraphSpec from the manifest: the contract
    runner.input_specs     # its inputs (names, shapes, dtypes)
    outputs = runner.run({"x": ..., "timesteps": ..., "context": ..., "y": ...})   # {name: float32 array}

Every backend binds inputs **by name**: feeds are checked against the spec (names and shapes), cast to the spec's
dtype, and outputs come back as float32 numpy arrays keyed by the spec's output names. Each backend module imports
its engine inside ``load``, so importing this package needs numpy only.

Backends and the graph format each one reads:
    mslite       MindSpore Lite (MindIR)      cpu, cuda (its "gpu" target), ascend
    mindspore    MindSpore GraphCell (MindIR) cpu, cuda ("GPU"), ascend
    onnxruntime  ONNX Runtime (ONNX)          cpu, cuda (CUDAExecutionProvider), ascend (CANNExecutionProvider)
    openvino     OpenVINO (ONNX)              cpu (f32, or bf16 on CPUs with AMX / AVX512_BF16)

``auto`` picks the first of AUTO_ORDER that is importable, can run on the device and whose graph format the export
has: mslite (MindIR; the Ascend/edge engine), then on a CPU openvino (ONNX; on this project's reference CPU it
ran the UNet 1.5x faster than ONNX Runtime in f32 and about 4x faster in bf16, at less memory --
benchmarks/README.md), then onnxruntime (ONNX; CPU, CUDA, CANN), then mindspore (MindIR).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Protocol, Tuple

import numpy as np

from ..errors import GraphError, SV3DError
from ..manifest import Manifest
from ..specs import GRAPH_NAMES, GraphSpec, TensorSpec

BACKENDS = ("mslite", "mindspore", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto",) + BACKENDS
DEVICES = ("cpu", "cuda", "ascend")

# backend -> (graph format it reads, module implementing it, python package of the engine)
_REGISTRY: Dict[str, Tuple[str, str, str]] = {
    "mslite": ("mindir", "mslite_backend", "mindspore_lite"),
    "mindspore": ("mindir", "mindspore_backend", "mindspore"),
    "onnxruntime": ("onnx", "onnxruntime_backend", "onnxruntime"),
    "openvino": ("onnx", "openvino_backend", "openvino"),
}
AUTO_ORDER = ("mslite", "openvino", "onnxruntime", "mindspore")
# backends that run on the CPU only (auto skips them for other devices)
CPU_ONLY = ("openvino",)
PRECISIONS = ("auto", "f32", "bf16")


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
    # ONNX Runtime's CPU memory arena keeps every freed block: on the full-size UNet it grew past 24 GB, while
    # without it the call peaked at 15 GB at the same speed (benchmarks/README.md 5.2). Off unless asked for.
    cpu_mem_arena: bool = False
    # openvino: f32 | bf16 | auto (bf16 where the CPU has it natively); see openvino_backend.py
    precision: str = "auto"
    # openvino: compiled-model cache folder; None = the default ($SV3D_CACHE_DIR/openvino or
    # ~/.cache/sv3d-runtime/openvino), "" = no cache
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BackendError("unknown precision", expected=f"one of {list(PRECISIONS)}", got=repr(self.precision))


class GraphRunner(Protocol):
    spec: GraphSpec

    @property
    def input_specs(self) -> Tuple[TensorSpec, ...]: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]: ...


class BaseRunner:
    """The checks every backend shares: feeds against the spec, outputs back to float32 by name.

    Subclasses implement ``_run(arrays) -> list of outputs`` with ``arrays`` in the spec's input order (already
    of the spec's dtype, C-contiguous) and outputs in the spec's output order.
    """

    backend = "base"

    def __init__(self, spec: GraphSpec, path: str) -> None:
        self.spec = spec
        self.path = path

    @property
    def input_specs(self) -> Tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def output_specs(self) -> Tuple[TensorSpec, ...]:
        return self.spec.outputs

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


# ----------------------------------------------------------------------------------------------------------------
# registry


def is_importable(package: str) -> bool:
    """Whether ``package`` can be found without importing it (mindspore takes seconds to import)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def backend_format(name: str) -> str:
    if name not in _REGISTRY:
        raise BackendError("unknown backend", expected=f"one of {list(BACKEND_CHOICES)}", got=repr(name))
    return _REGISTRY[name][0]


def backend_available(name: str, *, try_import: bool = False) -> Tuple[bool, str]:
    """(available, reason if not): the engine's Python package can be found (and imported, if ``try_import``)."""
    if name not in _REGISTRY:
        return False, f"unknown backend {name!r}"
    package = _REGISTRY[name][2]
    if not is_importable(package):
        return False, f"the Python package {package!r} is not installed"
    if try_import:
        try:
            importlib.import_module(package)
        except Exception as e:                      # a broken install: ImportError, OSError (missing .so), ...
            return False, f"the Python package {package!r} is installed but does not import ({e})"
    return True, ""


def resolve_backend(name: str, manifest: Manifest, device: str = "cpu") -> str:
    """The concrete backend for ``name`` (``auto`` resolved against the export's formats, the installed engines
    and the device kind)."""
    formats = manifest.formats()
    if name != "auto":
        fmt = backend_format(name)
        ok, why = backend_available(name)
        if not ok:
            raise BackendError(f"backend {name!r} is not available: {why}",
                               hint="choose another --backend, or install its engine")
        if fmt not in formats:
            raise BackendError(f"backend {name!r} reads {fmt} graphs, and the export at {manifest.root} has "
                               f"none", expected=fmt, got=list(formats) or "no graphs",
                               hint=f"export with --formats {fmt}, or choose a backend for {list(formats)}")
        return name
    tried = []
    for cand in AUTO_ORDER:
        fmt = backend_format(cand)
        if cand in CPU_ONLY and device != "cpu":
            tried.append(f"{cand}: cpu only")
            continue
        if fmt not in formats:
            tried.append(f"{cand}: no {fmt} graphs in the export")
            continue
        ok, why = backend_available(cand, try_import=True)
        if ok:
            return cand
        tried.append(f"{cand}: {why}")
    raise BackendError("no backend can run this export (auto)", got="; ".join(tried),
                       hint="install openvino or onnxruntime (ONNX graphs), or mindspore / mindspore_lite (MindIR graphs)")


def _backend_module(name: str):
    backend_format(name)
    return importlib.import_module(f"{__name__}.{_REGISTRY[name][1]}")


def load_graph(manifest: Manifest, graph_name: str, *, backend: str = "auto", device: str = "cpu",
               device_id: int = 0, options: Optional[RunOptions] = None, verify: bool = True,
               checksums: bool = True) -> BaseRunner:
    """Load one graph of an export on a backend.

    verify: check the graph's files against the manifest first (size always, sha256 when ``checksums``).
    """
    name = resolve_backend(backend, manifest, device)
    dev = DeviceSpec(device, device_id)
    entry = manifest.entry(backend_format(name), graph_name)
    if verify:
        manifest.verify_files(entry.format, names=(graph_name,), checksums=checksums)
    module = _backend_module(name)
    return module.load(manifest, entry, dev, options or RunOptions())


class OnDemandRunner:
    """A graph that is loaded at its first ``run`` and dropped again by ``release`` (memory "sequential": only the
    stage that runs holds its weights). ``load_seconds`` accumulates the time spent loading."""

    def __init__(self, manifest: Manifest, graph_name: str, *, backend: str, device: str, device_id: int,
                 options: RunOptions) -> None:
        self.spec = manifest.entry(backend_format(backend), graph_name).spec
        self._args = (manifest, graph_name)
        self._kw = dict(backend=backend, device=device, device_id=device_id, options=options, verify=False)
        self._runner: Optional[BaseRunner] = None
        self.load_seconds = 0.0
        self.loads = 0

    @property
    def input_specs(self) -> Tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    @property
    def precision(self) -> Optional[str]:
        if self._runner is not None:
            return getattr(self._runner, "precision", None)
        opts = self._kw["options"]
        if self._kw["backend"] == "openvino":
            from .openvino_backend import graph_precision
            return graph_precision(self.spec.name, opts.precision)
        return None

    def load(self) -> BaseRunner:
        if self._runner is None:
            import time

            t0 = time.perf_counter()
            self._runner = load_graph(*self._args, **self._kw)
            self.load_seconds += time.perf_counter() - t0
            self.loads += 1
        return self._runner

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self.load().run(feeds)

    def release(self) -> None:
        """Drop the engine's session/compiled model (and with it the weights and its buffers)."""
        if self._runner is not None:
            import gc

            self._runner = None
            gc.collect()


def load_graphs(manifest: Manifest, *, backend: str = "auto", device: str = "cpu", device_id: int = 0,
                options: Optional[RunOptions] = None, names: Iterable[str] = GRAPH_NAMES, verify: bool = True,
                checksums: bool = True, on_demand: bool = False) -> Dict[str, BaseRunner]:
    """Load several graphs of an export (all four by default) on one backend: {graph name: runner}.

    on_demand: return OnDemandRunners instead, which load at their first run and can be released (the files are
    still verified here, once)."""
    name = resolve_backend(backend, manifest, device)
    names = tuple(names)
    if verify:
        manifest.verify_files(backend_format(name), names=names, checksums=checksums)
    if on_demand:
        return {g: OnDemandRunner(manifest, g, backend=name, device=device, device_id=device_id,
                                  options=options or RunOptions()) for g in names}
    return {g: load_graph(manifest, g, backend=name, device=device, device_id=device_id, options=options,
                          verify=False) for g in names}


__all__ = ["BACKENDS", "BACKEND_CHOICES", "DEVICES", "AUTO_ORDER", "BackendError", "DeviceSpec", "RunOptions",
           "GraphRunner", "BaseRunner", "OnDemandRunner", "PRECISIONS", "CPU_ONLY", "graph_input_name", "check_engine_inputs", "backend_format",
           "backend_available", "resolve_backend", "load_graph", "load_graphs", "is_importable"]
