"""MindSpore backend: ``mindspore.load`` + ``nn.GraphCell`` over a MindIR file.

A GraphCell binds its inputs by position. The runner maps names to positions from the spec's input order, which
export guarantees equals the graph's argument order; at load the order is checked against the argument names the
MindIR file itself records (``mindspore.load_mindir``: inputs are named ``<graph>:<argument>``).

Devices: cpu -> "CPU", cuda -> "GPU", ascend -> "Ascend" (``mindspore.set_device``, once per process: a process
that already runs on another target cannot switch).

Threads are not honoured (HONOURS): MindSpore 2.10's only knob, ``device_context.cpu.op_tuning.threads_num``, did
not change how many threads a loaded GraphCell computes on (on this 2-CPU machine, with threads_num 1 or 2, the
same two worker threads each ran ~150 CPU ticks of a 10-call 1536 x 1536 matmul graph, as without it), and it can
be set once per process only. So ``--threads`` with this backend is refused instead of being ignored.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .base import BackendError, BaseRunner, DeviceSpec, Honours, RunOptions, as_exported, check_engine_io
from .onednn import cap_onednn_isa
from ..errors import GraphError, first_line
from ..specs import DTYPES, dtype_where

HONOURS = Honours(precisions=("auto", "f32"), threads=False, cache_dir=False, memory_plan=False)
graph_precision = as_exported

_TARGETS = {"cpu": "CPU", "cuda": "GPU", "ascend": "Ascend"}


def _import_mindspore():
    cap_onednn_isa()                                # before MindSpore (and its oneDNN) loads; see onednn.py
    try:
        import mindspore
        from mindspore import nn
    except ImportError as e:
        raise BackendError(f"the mindspore backend needs the 'mindspore' package: {e}",
                           hint="pip install mindspore, or choose --backend onnxruntime") from None
    return mindspore, nn


def _set_device(ms, device: DeviceSpec) -> None:
    target = _TARGETS[device.kind]
    try:
        current = ms.get_current_device()
        cur_target, cur_id = (current.device_target, current.device_id) if hasattr(current, "device_target") \
            else tuple(current)
    except Exception:                               # older API shapes: just set it
        cur_target, cur_id = None, None
    if cur_target == target and (target == "CPU" or cur_id == device.index):
        return
    try:
        ms.set_device(target, None if target == "CPU" else int(device.index))
    except (RuntimeError, ValueError, TypeError) as e:
        raise BackendError(f"mindspore cannot run on {device.kind}:{device.index} ({target}): {first_line(e)}",
                           hint="use --device cpu, or a mindspore build for this device") from None


def _read_mindir_proto(ms, path: str):
    """The MindIR protobuf (graph structure; the weights of a split export stay in its _variables folder).

    Parsed with mindspore's own ModelProto class; ``mindspore.load_mindir`` does the same but is deprecated since
    2.5 and logs a warning on every call, so it is only the fallback."""
    try:
        from mindspore.train.mind_ir_pb2 import ModelProto
    except ImportError:
        return ms.load_mindir(path)
    proto = ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _tensors(values) -> list:
    """EngineTensors of MindIR graph inputs or outputs (an output may carry no tensor info: None, None)."""
    out = []
    for v in values:
        if v.tensor:
            t = v.tensor[0]
            dt = dtype_where("mindir", int(t.data_type))          # None: a dtype no spec declares
            out.append((v.name, tuple(int(d) for d in t.dims), dt.name if dt is not None else None))
        else:
            out.append((v.name, None, None))
    return out


def mindir_io(ms, path: str):
    """(inputs, outputs) of a MindIR file as EngineTensor lists, read from its protobuf; None if unreadable."""
    try:
        proto = _read_mindir_proto(ms, path)
    except Exception:
        return None
    return _tensors(proto.graph.input), _tensors(proto.graph.output)


class MindSporeRunner(BaseRunner):
    backend = "mindspore"

    def __init__(self, spec, path: str, cell, ms, declared) -> None:
        super().__init__(spec, path, declared)
        self.cell = cell
        self._ms = ms
        self._dtypes = {t.name: getattr(ms, DTYPES[t.dtype].mindspore) for t in spec.inputs}

    def _run(self, arrays: list) -> List[np.ndarray]:
        ms = self._ms
        tensors = [ms.Tensor(a, dtype=self._dtypes[t.name]) for t, a in zip(self.spec.inputs, arrays)]
        try:
            out = self.cell(*tensors)
        except SystemError:
            # mindspore 2.10 built against numpy 1.x can fail the first conversion once (MINDSPORE_NOTES.md)
            out = self.cell(*tensors)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.asnumpy() for o in outs]


def load(path: str, entry, device: DeviceSpec, options: RunOptions) -> MindSporeRunner:
    ms, nn = _import_mindspore()
    _set_device(ms, device)
    declared = mindir_io(ms, path)
    if declared is not None:
        check_engine_io(entry.spec, *declared, backend="mindspore", path=path, ordered=True, output_names=False)
    try:
        graph = ms.load(path)
        cell = nn.GraphCell(graph)
    except Exception as e:                          # mindspore raises RuntimeError/ValueError with long C++ traces
        raise GraphError(f"mindspore cannot load graph {entry.spec.name}: {first_line(e)}", path=path) from None
    return MindSporeRunner(entry.spec, path, cell, ms, declared)
