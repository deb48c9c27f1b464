"""MindSpore Lite backend over MindIR files (the deployment engine on Ascend and edge devices).

Written against the documented Python API of mindspore_lite 2.x (mindspore.cn/lite/api, ``mindspore_lite.Model``
and ``mindspore_lite.Context``); it cannot run where no mindspore_lite wheel exists for the Python version (the
tests skip with the reason):

    context = mslite.Context(); context.target = ["cpu" | "gpu" | "ascend"]
    context.cpu.thread_num = n; context.gpu.device_id = i; context.ascend.device_id = i
    model = mslite.Model(); model.build_from_file(path, mslite.ModelType.MINDIR, context)
    inputs = model.get_inputs()          # mslite.Tensor with .name, .shape, set_data_from_numpy()
    outputs = model.predict(inputs)      # [mslite.Tensor], get_data_to_numpy()

Inputs are bound by name: each engine tensor's name, stripped of a graph prefix (MindIR names inputs
``<graph>:<argument>``), must match one spec input. Outputs come back in the graph's output order, which is the
spec's.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .base import BackendError, BaseRunner, DeviceSpec, RunOptions, check_engine_inputs, graph_input_name
from ..errors import GraphError

_TARGETS = {"cpu": "cpu", "cuda": "gpu", "ascend": "ascend"}


def _import_mslite():
    try:
        import mindspore_lite
    except ImportError as e:
        raise BackendError(f"the mslite backend needs the 'mindspore_lite' package: {e}",
                           hint="install the MindSpore Lite wheel for your platform (mindspore.cn/lite), or choose "
                                "--backend onnxruntime / mindspore") from None
    return mindspore_lite


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


def bind_inputs(spec, engine_names: List[str], path: str) -> List[int]:
    """For each engine input (in engine order), the index of the spec input of the same name."""
    stripped = [graph_input_name(n) for n in engine_names]
    spec_names = list(spec.input_names)
    if sorted(stripped) != sorted(spec_names):
        raise GraphError(f"graph {spec.name} (mslite): the model's inputs {engine_names} do not match the "
                         f"manifest's {spec_names}", path=path)
    return [spec_names.index(n) for n in stripped]


class MSLiteRunner(BaseRunner):
    backend = "mslite"

    def __init__(self, spec, path: str, model, order: List[int]) -> None:
        super().__init__(spec, path)
        self.model = model
        self.inputs = model.get_inputs()
        self.order = order          # engine input k <- spec input order[k]

    def _run(self, arrays: list) -> List[np.ndarray]:
        for tensor, k in zip(self.inputs, self.order):
            tensor.set_data_from_numpy(arrays[k])
        outputs = self.model.predict(self.inputs)
        return [o.get_data_to_numpy() for o in outputs]


def load(path: str, entry, device: DeviceSpec, options: RunOptions) -> MSLiteRunner:
    mslite = _import_mslite()
    try:
        context = make_context(mslite, device, options)
        model = mslite.Model()
        model.build_from_file(path, mslite.ModelType.MINDIR, context)
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GraphError(f"mindspore_lite cannot build graph {entry.spec.name} on {device.kind}:{device.index}: "
                         f"{first}", path=path) from None
    tensors = model.get_inputs()
    names = [t.name for t in tensors]
    order = bind_inputs(entry.spec, names, path)
    check_engine_inputs(entry.spec, [(t.name, tuple(t.shape)) for t in tensors], backend="mslite", path=path,
                        ordered=False)
    return MSLiteRunner(entry.spec, path, model, order)
