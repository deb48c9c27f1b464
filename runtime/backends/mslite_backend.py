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
``<graph>:<argument>``), must match one spec input, and its shape and dtype must be the spec's.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .base import BackendError, BaseRunner, DeviceSpec, EngineTensor, RunOptions, graph_input_name
from ..errors import GraphError
from ..specs import dtype_name

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
    if options.intra_op_threads:
        context.cpu.thread_num = int(options.intra_op_threads)
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
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GraphError(f"mindspore_lite cannot build the graph on {device.kind}:{device.index}: {first}",
                             path=path) from None
    from . import mslite_native

    if device.kind != "cpu":
        raise BackendError(f"the native MindSpore Lite {mslite_native.build.VERSION} engine runs on the CPU only",
                           expected="--device cpu", got=device.kind,
                           hint="install the mindspore_lite wheel for your device (mindspore.cn/lite)")
    if fmt == "mindir":
        raise BackendError(f"the native MindSpore Lite {mslite_native.build.VERSION} engine reads MindIR version 1; "
                           "MindSpore 2.10's MindIR (the export's mindir format) is version 3",
                           hint="export with --formats mslite (our ONNX through Lite's converter)")
    return mslite_native.engine().build(path, threads=options.intra_op_threads)


class MSLiteRunner(BaseRunner):
    backend = "mslite"

    def __init__(self, spec, path: str, model, order: List[int]) -> None:
        super().__init__(spec, path, declared=(model.inputs, model.outputs or []))
        self.model = model
        self.order = order          # engine input k <- spec input order[k]
        self.binding = "official" if isinstance(model, OfficialModel) else "native"

    def _run(self, arrays: list) -> List[np.ndarray]:
        return self.model.predict([arrays[k] for k in self.order])


def bind_inputs(spec, engine: List[EngineTensor], path: str) -> List[int]:
    """For each engine input (in engine order), the index of the spec input of the same name; GraphError unless
    the names, shapes and dtypes are the spec's."""
    spec_names = list(spec.input_names)
    stripped = [graph_input_name(n) for n, _, _ in engine]
    if sorted(stripped) != sorted(spec_names):
        raise GraphError(f"graph {spec.name} (mslite): the model's inputs {stripped} do not match the "
                         f"manifest's {spec_names}", path=path)
    for (name, dims, dtype), short in zip(engine, stripped):
        want = spec.inputs[spec_names.index(short)]
        if tuple(dims) != tuple(want.shape) or dtype != want.dtype:
            raise GraphError(f"graph {spec.name} (mslite): input {short!r} is {tuple(dims)} {dtype} in the model "
                             f"but {want.shape} {want.dtype} in the manifest", path=path)
    return [spec_names.index(n) for n in stripped]


def refuse_unhonoured(options: RunOptions) -> None:
    """Lite honours intra_op_threads; the other run options belong to other engines, and asking for one here is an
    error rather than a setting silently ignored."""
    asked = [f"precision={options.precision!r}" if options.precision not in ("auto", "f32") else None,
             f"cache_dir={options.cache_dir!r}" if options.cache_dir is not None else None,
             f"memory_reuse={options.memory_reuse}" if options.memory_reuse is not None else None,
             f"cpu_mem_arena={options.cpu_mem_arena}" if options.cpu_mem_arena is not None else None]
    asked = [a for a in asked if a]
    if asked:
        raise BackendError("the mslite backend cannot honour " + ", ".join(asked),
                           expected="threads only (it runs the graphs at their exported precision, f32 or fp16)",
                           got=", ".join(asked))


def load(path: str, entry, device: DeviceSpec, options: RunOptions) -> MSLiteRunner:
    refuse_unhonoured(options)
    model = build_model(path, device, options, entry.format)
    order = bind_inputs(entry.spec, model.inputs, path)
    return MSLiteRunner(entry.spec, path, model, order)
