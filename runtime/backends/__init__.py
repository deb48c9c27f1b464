"""Engines that run exported graphs, behind one small interface.

    runner = load_graph(manifest, "unet", backend="onnxruntime", device="cpu")
    runner.spec            # GraphSpec from the manifest: the contract
    runner.input_specs     # its inputs (names, shapes, dtypes)
    outputs = runner.run({"x": ..., "timesteps": ..., "context": ..., "y": ...})   # {name: float32 array}

    runner = load_file("staging/onnx/unet.onnx", spec, backend="onnxruntime")     # one file, no manifest yet

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
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from ..manifest import INT8_FORMAT, INT8_GRAPHS, GraphEntry, Manifest
from ..specs import GRAPH_NAMES, GraphSpec, TensorSpec
from .base import (DEVICES, PRECISIONS, BackendError, BaseRunner, DeviceSpec, EngineTensor, RunOptions,
                   check_engine_inputs, graph_input_name)

BACKENDS = ("mslite", "mindspore", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto",) + BACKENDS

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
    ``--precision int8`` on openvino loads the export's int8 graphs (INT8_FORMAT) where it has them."""
    precision = (options or RunOptions()).precision
    if precision == "int8":
        if backend != "openvino":
            raise BackendError(f"precision int8 runs on the openvino backend only, not {backend}",
                               hint="use --backend openvino, or another --precision")
        if graph_name in INT8_GRAPHS:
            if graph_name not in manifest.graphs.get(INT8_FORMAT, {}):
                raise BackendError(f"the export at {manifest.root} has no int8 {graph_name}", expected=INT8_FORMAT,
                                   got=list(manifest.formats()),
                                   hint=f"add it with python -m export.int8 --graphs {manifest.root}")
            return manifest.entry(INT8_FORMAT, graph_name)
    return manifest.entry(backend_format(backend, manifest), graph_name)


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
    entry = graph_entry(manifest, name, graph_name, options)
    if verify:
        manifest.verify_files(entry.format, names=(graph_name,), checksums=checksums)
    module = _backend_module(name)
    return module.load(str(manifest.root / entry.model_file), entry, dev, options or RunOptions())


def load_file(path, spec: GraphSpec, *, backend: str, device: str = "cpu", device_id: int = 0,
              options: Optional[RunOptions] = None, form: str = "plain") -> BaseRunner:
    """Load one graph file that no manifest lists yet (the exporter's checks of the files it just wrote), with
    the same loader, session settings and checks as ``load_graph``. ``backend`` is a concrete backend; ``form``
    the ONNX form (manifest.GraphEntry.form)."""
    dev = DeviceSpec(device, device_id)
    entry = GraphEntry(spec, backend_format(backend), Path(path).name, (), form)
    return _backend_module(backend).load(str(path), entry, dev, options or RunOptions())


class OnDemandRunner:
    """A graph that is loaded at its first ``run`` and dropped again by ``release`` (memory "sequential": only the
    stage that runs holds its weights)."""

    def __init__(self, manifest: Manifest, graph_name: str, *, backend: str, device: str, device_id: int,
                 options: RunOptions) -> None:
        self.spec = graph_entry(manifest, backend, graph_name, options).spec
        self._args = (manifest, graph_name)
        self._kw = dict(backend=backend, device=device, device_id=device_id, options=options, verify=False)
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
        if self._runner is not None:
            return getattr(self._runner, "precision", None)
        opts = self._kw["options"]
        if self._kw["backend"] == "openvino":
            from .openvino_backend import graph_precision
            return graph_precision(self.spec.name, opts.precision)
        return None

    def load(self) -> BaseRunner:
        if self._runner is None:
            self._runner = load_graph(*self._args, **self._kw)
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
        for g in names:
            manifest.verify_files(graph_entry(manifest, name, g, options).format, names=(g,), checksums=checksums)
    if on_demand:
        return {g: OnDemandRunner(manifest, g, backend=name, device=device, device_id=device_id,
                                  options=options or RunOptions()) for g in names}
    return {g: load_graph(manifest, g, backend=name, device=device, device_id=device_id, options=options,
                          verify=False) for g in names}


__all__ = ["BACKENDS", "BACKEND_CHOICES", "DEVICES", "AUTO_ORDER", "BackendError", "DeviceSpec", "RunOptions",
           "BaseRunner", "EngineTensor", "OnDemandRunner", "PRECISIONS", "graph_input_name",
           "check_engine_inputs", "backend_format", "backend_formats", "graph_entry", "backend_available", "resolve_backend", "load_graph",
           "load_graphs", "load_file", "is_importable"]
