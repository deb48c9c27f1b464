"""Engines that run exported graphs, behind one small interface.

    runner = load_graph(manifest, "unet", backend="onnxruntime", device="cpu")    # or (manifest, "unet", options)
    runner.spec            # GraphSpec from the manifest: the contract
    runner.input_specs     # its inputs (names, shapes, dtypes)
    outputs = runner.run({"x": ..., "timesteps": ..., "context": ..., "y": ...})   # {name: float32 array}

    runner = load_file("staging/onnx/unet.onnx", spec, backend="onnxruntime")     # one file, no manifest yet

How the graphs run is one runtime.run_options.RunOptions (backend, device, threads, precision, ...); the loaders
take one, or its fields by keyword. The backend chosen for an export (:func:`engine_for`) refuses the options it
cannot honour (each backend module's HONOURS, runtime/backends/base.py), naming the option and the backend.

Every backend binds inputs **by name**: feeds are checked against the spec (names and shapes), cast to the spec's
dtype, and outputs come back as float32 numpy arrays keyed by the spec's output names. Each backend module imports
its engine inside ``load``, so importing this package needs numpy only.

Backends and the graph formats each one reads (the first the export has):
    mslite       MindSpore Lite (Lite MindIR converted from ONNX; else MindIR)   cpu, cuda ("gpu"), ascend
    mindspore    MindSpore GraphCell (MindIR) cpu, cuda ("GPU"), ascend
    onnxruntime  ONNX Runtime (ONNX)          cpu, cuda (CUDAExecutionProvider), ascend (CANNExecutionProvider)
    openvino     OpenVINO (ONNX)              cpu (f32, or bf16 on CPUs with AMX / AVX512_BF16)

``auto`` picks the first backend of AUTO_ORDER[device] that is available and whose graph format the export has.
The order follows what was measured (benchmarks/README.md):
  cpu     openvino (bf16 on AMX: 2x ONNX Runtime fp32 per 576 px UNet call, at less memory), onnxruntime, mslite
          (the 2.0 engine's 576 px UNet call took 1.35x ONNX Runtime's time at 2.3x its peak memory, on the same
          graph in the same run), mindspore (its CPU 3x3 convolution runs at ~1 GFLOP/s);
  cuda    onnxruntime (CUDA provider), mslite (its "gpu" target, with a matching wheel), mindspore;
  ascend  mslite (the engine Ascend deploys with), onnxruntime (CANN provider), mindspore.
The native Lite 2.0 engine counts as available once set up (``python -m runtime.backends.mslite_native setup``);
it reads only the ``mslite`` format, while an official mindspore_lite package also reads MindSpore's MindIR.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from ..manifest import INT8_FORMAT, INT8_GRAPHS, GraphEntry, Manifest
from ..run_options import BACKEND_CHOICES, BACKENDS, DEVICES, PRECISIONS, RunOptions, run_options
from ..specs import GRAPH_NAMES, GraphSpec, TensorSpec
from .base import (BackendError, BaseRunner, DeviceSpec, EngineTensor, Honours, check_engine_io,
                   graph_input_name)

# backend -> (graph formats it reads, in preference order; module implementing it; python package of the engine)
_REGISTRY: Dict[str, Tuple[Tuple[str, ...], str, str]] = {
    "mslite": (("mslite", "mindir"), "mslite_backend", "mindspore_lite"),
    "mindspore": (("mindir",), "mindspore_backend", "mindspore"),
    "onnxruntime": (("onnx",), "onnxruntime_backend", "onnxruntime"),
    "openvino": (("onnx",), "openvino_backend", "openvino"),
}
AUTO_ORDER = {"cpu": ("openvino", "onnxruntime", "mslite", "mindspore"),
              "cuda": ("onnxruntime", "mslite", "mindspore"),
              "ascend": ("mslite", "onnxruntime", "mindspore")}       # module docstring: why this order


# ----------------------------------------------------------------------------------------------------------------
# registry


def is_importable(package: str) -> bool:
    """Whether ``package`` can be found without importing it (mindspore takes seconds to import)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def backend_formats(name: str) -> Tuple[str, ...]:
    """The graph formats backend `name` reads, in preference order."""
    if name not in _REGISTRY:
        raise BackendError("unknown backend", expected=f"one of {list(BACKEND_CHOICES)}", got=repr(name))
    return _REGISTRY[name][0]


def backend_format(name: str, manifest: Optional[Manifest] = None) -> str:
    """The format backend `name` reads from `manifest`: the first of its formats the export has (without a
    manifest, or when it has none of them, its first)."""
    formats = backend_formats(name)
    have = manifest.formats() if manifest is not None else ()
    return next((f for f in formats if f in have), formats[0])


def _native_mslite() -> Tuple[bool, str]:
    from .mslite_native import build

    why = build.problem()
    return (why is None), (why or "")


def backend_available(name: str, *, try_import: bool = False) -> Tuple[bool, str]:
    """(available, reason if not): the engine's Python package can be found (and imported, if ``try_import``);
    for mslite without its package, the native engine is set up."""
    if name not in _REGISTRY:
        return False, f"unknown backend {name!r}"
    package = _REGISTRY[name][2]
    if not is_importable(package):
        if name == "mslite":
            ok, why = _native_mslite()
            return ok, "" if ok else f"no {package!r} package, and {why}"
        return False, f"the Python package {package!r} is not installed"
    if try_import:
        try:
            importlib.import_module(package)
        except Exception as e:                      # a broken install: ImportError, OSError (missing .so), ...
            return False, f"the Python package {package!r} is installed but does not import ({e})"
    return True, ""


def _native_lite_on_mindir(name: str, fmt: str) -> bool:
    """mslite without its Python package runs the native 2.0 engine, which cannot read MindSpore 2.10's MindIR."""
    return name == "mslite" and fmt == "mindir" and not is_importable(_REGISTRY[name][2])


def resolve_backend(name: str, manifest: Manifest, device: str = "cpu") -> str:
    """The concrete backend for ``name`` (``auto`` resolved against the export's formats, the installed engines
    and the device kind)."""
    formats = manifest.formats()
    if name != "auto":
        fmt = backend_format(name, manifest)
        ok, why = backend_available(name)
        if not ok:
            raise BackendError(f"backend {name!r} is not available: {why}",
                               hint="choose another --backend, or install its engine")
        if fmt not in formats:
            raise BackendError(f"backend {name!r} reads {' or '.join(backend_formats(name))} graphs, and the "
                               f"export at {manifest.root} has none", expected=fmt, got=list(formats) or "no graphs",
                               hint=f"export with --formats {fmt}, or choose a backend for {list(formats)}")
        if _native_lite_on_mindir(name, fmt):
            raise BackendError("the native MindSpore Lite engine reads the export's mslite format, not MindSpore's "
                               "MindIR", expected="mslite graphs", got=list(formats),
                               hint="export with --formats mslite, or install a mindspore_lite package that reads "
                                    "MindSpore 2.10's MindIR")
        return name
    tried = []
    order = AUTO_ORDER.get(device)
    if order is None:
        raise BackendError("unknown device", expected=f"one of {list(AUTO_ORDER)}", got=repr(device))
    for cand in order:
        fmt = backend_format(cand, manifest)
        if fmt not in formats:
            tried.append(f"{cand}: no {fmt} graphs in the export")
            continue
        if _native_lite_on_mindir(cand, fmt):
            tried.append(f"{cand}: the native engine reads the mslite format, not MindSpore's MindIR")
            continue
        ok, why = backend_available(cand, try_import=True)
        if ok:
            return cand
        tried.append(f"{cand}: {why}")
    raise BackendError("no backend can run this export (auto)", got="; ".join(tried),
                       hint="install openvino or onnxruntime (ONNX graphs), or mindspore / mindspore_lite (MindIR graphs)")


def graph_entry(manifest: Manifest, backend: str, graph_name: str,
                options: Optional[RunOptions] = None) -> GraphEntry:
    """The manifest entry a concrete backend loads for a graph: the one of the format it reads, except that
    ``precision int8`` (which only openvino honours: refuse_unhonoured) loads the export's int8 graphs
    (INT8_FORMAT) where it has them."""
    if (options or RunOptions()).precision == "int8" and graph_name in INT8_GRAPHS:
        if graph_name not in manifest.graphs.get(INT8_FORMAT, {}):
            raise BackendError(f"the export at {manifest.root} has no int8 {graph_name}", expected=INT8_FORMAT,
                               got=list(manifest.formats()),
                               hint=f"add it with python -m export.int8 --graphs {manifest.root}")
        return manifest.entry(INT8_FORMAT, graph_name)
    return manifest.entry(backend_format(backend, manifest), graph_name)


def _backend_module(name: str) -> ModuleType:
    backend_format(name)
    return importlib.import_module(f"{__name__}.{_REGISTRY[name][1]}")


def honours(name: str) -> Honours:
    """What backend `name` declares it honours (its module's HONOURS; importing it needs numpy only)."""
    return _backend_module(name).HONOURS


def refuse_unhonoured(name: str, options: RunOptions) -> None:
    """BackendError naming every option of `options` that backend `name` cannot honour, and the backends that
    could."""
    asked = honours(name).unhonoured(options)
    if asked:
        others = [b for b in BACKENDS if b != name and not honours(b).unhonoured(options)]
        raise BackendError(f"the {name} backend cannot honour {', '.join(asked)}",
                           expected=f"what {name} honours: {honours(name).describe()}", got=", ".join(asked),
                           hint="use " + " or ".join(options.names.spell("backend", b) for b in others)
                           + ", or leave the option at its default" if others else "leave it at its default")


@dataclass(frozen=True)
class Engine:
    """A concrete backend chosen for an export, with run options it honours: what the loaders load with."""
    name: str
    module: ModuleType
    manifest: Manifest
    options: RunOptions

    @property
    def format(self) -> str:
        return backend_format(self.name, self.manifest)

    def entry(self, graph_name: str) -> GraphEntry:
        return graph_entry(self.manifest, self.name, graph_name, self.options)

    def spec(self, graph_name: str) -> GraphSpec:
        return self.entry(graph_name).spec

    def precision(self, graph_name: str) -> Optional[str]:
        """The precision the engine runs `graph_name` at (None: as exported), without loading it."""
        return self.module.graph_precision(graph_name, self.options)

    def verify(self, names: Iterable[str]) -> None:
        """The graph files against the manifest: sizes always, sha256 when options.verify_checksums."""
        for g in names:
            self.manifest.verify_files(self.entry(g).format, names=(g,), checksums=self.options.verify_checksums)

    def load(self, graph_name: str) -> BaseRunner:
        entry = self.entry(graph_name)
        return self.module.load(str(self.manifest.root / entry.model_file), entry, self.options.device_spec,
                                self.options)

    def load_all(self, names: Iterable[str] = GRAPH_NAMES, *, verify: bool = True,
                 on_demand: bool = False) -> Dict[str, Any]:
        """{graph name: runner}, the files verified first; on_demand: OnDemandRunners (loaded at their first run)."""
        names = tuple(names)
        if verify:
            self.verify(names)
        if on_demand:
            return {g: OnDemandRunner(self, g) for g in names}
        return {g: self.load(g) for g in names}


def engine_for(manifest: Manifest, options: Optional[RunOptions] = None, **fields) -> Engine:
    """The backend of ``options`` (auto resolved against the export, the installed engines and the device) with
    the options checked against what it honours (refuse_unhonoured)."""
    options = run_options(options, fields)
    name = resolve_backend(options.backend, manifest, options.device)
    refuse_unhonoured(name, options)
    return Engine(name, _backend_module(name), manifest, options)


def load_graph(manifest: Manifest, graph_name: str, options: Optional[RunOptions] = None, *, verify: bool = True,
               **fields) -> BaseRunner:
    """Load one graph of an export. options: a RunOptions, and/or its fields by keyword (backend=, device=, ...).
    verify: check the graph's files against the manifest first (size always, sha256 when verify_checksums)."""
    engine = engine_for(manifest, options, **fields)
    if verify:
        engine.verify((graph_name,))
    return engine.load(graph_name)


def load_file(path, spec: GraphSpec, options: Optional[RunOptions] = None, *, form: str = "plain",
              **fields) -> BaseRunner:
    """Load one graph file that no manifest lists yet (the exporter's checks of the files it just wrote), with
    the same loader, session settings and checks as ``load_graph``. The backend is a concrete one; ``form`` the
    ONNX form (manifest.GraphEntry.form)."""
    options = run_options(options, fields)
    if options.backend == "auto":
        raise BackendError("load_file needs a concrete backend", expected=f"one of {list(BACKENDS)}", got="auto")
    refuse_unhonoured(options.backend, options)
    entry = GraphEntry(spec, backend_format(options.backend), Path(path).name, (), form)
    return _backend_module(options.backend).load(str(path), entry, options.device_spec, options)


class OnDemandRunner:
    """A graph that is loaded at its first ``run`` (or ``load``) and dropped again by ``release`` (memory
    "sequential": only the stage that runs holds its weights)."""

    def __init__(self, engine: Engine, graph_name: str) -> None:
        self.spec = engine.spec(graph_name)
        self._engine = engine
        self._runner: Optional[BaseRunner] = None
        self.loads = 0

    @property
    def input_specs(self) -> Tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    @property
    def precision(self) -> Optional[str]:
        return self._engine.precision(self.spec.name)

    def load(self) -> BaseRunner:
        if self._runner is None:
            self._runner = self._engine.load(self.spec.name)
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


def load_graphs(manifest: Manifest, options: Optional[RunOptions] = None, *, names: Iterable[str] = GRAPH_NAMES,
                verify: bool = True, on_demand: bool = False, **fields) -> Dict[str, Any]:
    """Load several graphs of an export (all four by default) on one backend: {graph name: runner}.

    on_demand: return OnDemandRunners instead, which load at their first run and can be released (the files are
    still verified here, once)."""
    return engine_for(manifest, options, **fields).load_all(names, verify=verify, on_demand=on_demand)


__all__ = ["BACKENDS", "BACKEND_CHOICES", "DEVICES", "AUTO_ORDER", "BackendError", "DeviceSpec", "Engine",
           "RunOptions", "BaseRunner", "EngineTensor", "Honours", "OnDemandRunner", "PRECISIONS",
           "graph_input_name", "check_engine_io", "backend_format", "backend_formats", "backend_available",
           "graph_entry", "engine_for", "honours", "refuse_unhonoured", "resolve_backend", "load_graph",
           "load_graphs", "load_file", "is_importable"]
