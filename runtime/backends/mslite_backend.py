"""MindSpore Lite backend: the deployment engine on Ascend and edge devices, and on x86-64 CPUs through the 2.0
engine's native library.

One engine, two bindings, one small surface (a built model with declared ``inputs``/``outputs`` as EngineTensor
lists and ``predict(arrays in input order) -> arrays``):

* ``official``: the ``mindspore_lite`` Python package, where a wheel for this platform and Python is installed
  (Ascend, GPU, or CPython 3.7 on x86-64). Documented API::

      context = mslite.Context(); context.target = ["cpu" | "gpu" | "ascend"]; context.cpu.thread_num = n
      model = mslite.Model(); model.build_from_file(path, mslite.ModelType.MINDIR_LITE | MINDIR, context)
      inputs = model.get_inputs(); outputs = model.predict(inputs)     # mslite.Tensor

* ``native``: otherwise, the MindSpore Lite 2.0 wheel's native library through our C shim
  (runtime/backends/mslite_native; CPU only). Set up once with ``python -m runtime.backends.mslite_native setup``.

Graph files: the export's ``mslite`` format, Lite's own ``.ms`` files converted from our ONNX by Lite's converter at
export (``python -m export --formats mslite``), else the ``mindir`` format that MindSpore writes -- the natural input for a
Lite release matching MindSpore 2.10; Lite 2.0 reads MindIR version 1 only, and MindSpore 2.10 writes version 3.

Inputs are bound by name: each engine tensor's name, stripped of a graph prefix (MindIR names inputs
``<graph>:<argument>``), must match one spec input, and its shape and dtype must be the spec's; the outputs are
checked too where the binding reports them before a run (the native one does). Lite runs the graphs at their
exported precision with the threads asked for (HONOURS).
"""
from __future__ import annotations

from typing import List

import numpy as np

from .base import (BackendError, BaseRunner, DeviceSpec, EngineTensor, Honours, RunOptions, as_exported,
                   check_engine_io, graph_input_name)
from ..errors import GraphError, first_line
from ..specs import dtype_name

HONOURS = Honours(precisions=("auto", "f32"), threads=True, cache_dir=False, memory_plan=False)
graph_precision = as_exported

_TARGETS = {"cpu": "cpu", "cuda": "gpu", "ascend": "ascend"}
BINDINGS = ("official", "native")


def official_available() -> bool:
    try:
        import mindspore_lite  # noqa: F401
    except ImportError:
        return False
    return True


def binding() -> str:
    """The binding this process uses: the official package where it imports, else the native engine."""
    return "official" if official_available() else "native"


def make_context(mslite, device: DeviceSpec, options: RunOptions):
    """An mslite.Context for the device (target name and device id set on the matching sub-context)."""
    context = mslite.Context()
    target = _TARGETS[device.kind]
    context.target = [target]
    if options.threads:
        context.cpu.thread_num = int(options.threads)
    if target == "gpu":
        context.gpu.device_id = int(device.index)
    elif target == "ascend":
        context.ascend.device_id = int(device.index)
    return context


class OfficialModel:
    """The mindspore_lite package's Model behind the native binding's surface."""

    def __init__(self, path: str, device: DeviceSpec, options: RunOptions) -> None:
        import mindspore_lite as mslite

        context = make_context(mslite, device, options)
        kind = mslite.ModelType.MINDIR_LITE if path.endswith(".ms") else mslite.ModelType.MINDIR
        self.model = mslite.Model()
        self.model.build_from_file(path, kind, context)
        self._inputs = self.model.get_inputs()
        self.inputs = [self._describe(t) for t in self._inputs]
        self.outputs = None                   # the 2.x Python API reports outputs only after predict

    @staticmethod
    def _describe(t) -> EngineTensor:
        return t.name, tuple(int(d) for d in t.shape), dtype_name("mslite", int(t.dtype.value))

    def predict(self, arrays) -> List[np.ndarray]:
        for tensor, a in zip(self._inputs, arrays):
            tensor.set_data_from_numpy(np.ascontiguousarray(a))
        outs = self.model.predict(self._inputs)
        if self.outputs is None:
            self.outputs = [self._describe(o) for o in outs]
        return [o.get_data_to_numpy() for o in outs]


def build_model(path: str, device: DeviceSpec, options: RunOptions, fmt: str):
    """A built model on the binding of this process (BackendError/GraphError naming the problem)."""
    if binding() == "official":
        try:
            return OfficialModel(path, device, options)
        except (RuntimeError, ValueError, TypeError) as e:
            raise GraphError(f"mindspore_lite cannot build the graph on {device.kind}:{device.index}: "
                             f"{first_line(e)}", path=path) from None
    from . import mslite_native

    if device.kind != "cpu":
        raise BackendError(f"the native MindSpore Lite {mslite_native.build.VERSION} engine runs on the CPU only",
                           expected="--device cpu", got=device.kind,
                           hint="install the mindspore_lite wheel for your device (mindspore.cn/lite)")
    if fmt == "mindir":
        raise BackendError(f"the native MindSpore Lite {mslite_native.build.VERSION} engine reads MindIR version 1; "
                           "MindSpore 2.10's MindIR (the export's mindir format) is version 3",
                           hint="export with --formats mslite (our ONNX through Lite's converter)")
    return mslite_native.engine().build(path, threads=options.threads)


class MSLiteRunner(BaseRunner):
    backend = "mslite"

    def __init__(self, spec, path: str, model, order: List[int]) -> None:
        super().__init__(spec, path, declared=(model.inputs, model.outputs or []))
        self.model = model
        self.order = order          # engine input k <- spec input order[k]
        self.binding = "official" if isinstance(model, OfficialModel) else "native"

    def _run(self, arrays: list) -> List[np.ndarray]:
        return self.model.predict([arrays[k] for k in self.order])


def bind_inputs(spec, engine: List[EngineTensor]) -> List[int]:
    """For each engine input (in engine order), the index of the spec input of the same name (the names were
    checked against the spec by check_engine_io)."""
    names = list(spec.input_names)
    return [names.index(graph_input_name(n)) for n, _, _ in engine]


def load(path: str, entry, device: DeviceSpec, options: RunOptions) -> MSLiteRunner:
    model = build_model(path, device, options, entry.format)
    check_engine_io(entry.spec, model.inputs, model.outputs, backend="mslite", path=path)
    return MSLiteRunner(entry.spec, path, model, bind_inputs(entry.spec, model.inputs))
