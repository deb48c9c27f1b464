"""ONNX Runtime backend: one InferenceSession per graph, inputs bound by name.

Providers: CPUExecutionProvider always; CUDAExecutionProvider for device "cuda" and CANNExecutionProvider for
"ascend" (each with the device id), refused with a clear error when this onnxruntime build lacks it. Sessions use
graph optimisation level ALL; the intra-op thread count is configurable (0 = onnxruntime's default). The memory
plan is chosen per graph (memory_plan; RunOptions.memory_reuse / cpu_mem_arena override it). The graphs run at
their exported dtype (no bf16), and there is no compiled-model cache: HONOURS.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .base import BackendError, BaseRunner, DeviceSpec, Honours, RunOptions, as_exported, check_engine_io
from ..errors import GraphError
from ..specs import dtype_name

HONOURS = Honours(precisions=("auto", "f32"), threads=True, cache_dir=False, memory_plan=True)
graph_precision = as_exported

# our device kind -> (execution provider, the onnxruntime package that ships it)
_PROVIDERS = {"cuda": ("CUDAExecutionProvider", "onnxruntime-gpu"),
              "ascend": ("CANNExecutionProvider", "onnxruntime-cann")}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendError(f"the onnxruntime backend needs the 'onnxruntime' package: {e}",
                           hint="pip install onnxruntime (or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def providers_for(device: DeviceSpec) -> list:
    """The provider list for a device, checked against this onnxruntime build."""
    ort = _import_ort()
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    provider, package = _PROVIDERS[device.kind]
    available = ort.get_available_providers()
    if provider not in available:
        raise BackendError(f"device {device.kind!r} was requested, but this onnxruntime ({ort.__version__}) has no "
                           f"{provider}", expected=provider, got=available,
                           hint=f"install {package}, or use --device cpu")
    return [(provider, {"device_id": int(device.index)}), "CPUExecutionProvider"]


class OnnxRuntimeRunner(BaseRunner):
    backend = "onnxruntime"

    def __init__(self, spec, path: str, session, declared) -> None:
        super().__init__(spec, path, declared)
        self.session = session
        self._output_names = list(spec.output_names)

    def _run(self, arrays: list) -> List[np.ndarray]:
        feeds = {t.name: a for t, a in zip(self.spec.inputs, arrays)}
        return self.session.run(self._output_names, feeds)


def _declared(args) -> list:
    """EngineTensors of session inputs or outputs (symbolic dims stay strings)."""
    return [(a.name, tuple(a.shape) if a.shape is not None else None, dtype_name("ort", a.type)) for a in args]


NO_REUSE_GRAPHS = ("unet",)         # graphs run without onnxruntime's buffer-reuse plan: memory_plan says why


def memory_plan(graph: str, options: RunOptions) -> Tuple[bool, bool]:
    """(buffer reuse, CPU arena) for a graph: RunOptions where set; else reuse except for NO_REUSE_GRAPHS, and the
    arena exactly where reuse is off. The one statement of why (the measurements: benchmarks/README.md 5.5):
    onnxruntime's reuse plan hands a freed buffer only to a later tensor of exactly the same shape, and the UNet's
    up path repeats its down path's shapes, so each down-path buffer is held until its up-path twin is done: the
    576 px call (batch 21) peaks at 20.75 GiB where the graph never holds more than 2.7 GiB of activations at once.
    Without reuse every tensor is a fresh allocation (8.78 GiB, 2x the time); the arena keeps freed blocks for the
    next ones (11.88 GiB, 1.16x the time of a warm call); with reuse on, the arena would also keep what the plan
    over-holds (24.3 GB, OOM). A straight graph (CLIP, VAE encoder and decoder) without reuse grows the arena to
    its whole live set (the 576 px decoder was OOM-killed at 23.2 GiB; with reuse and no arena it peaks at
    9.44 GiB)."""
    reuse = graph not in NO_REUSE_GRAPHS if options.memory_reuse is None else bool(options.memory_reuse)
    arena = (not reuse) if options.cpu_mem_arena is None else bool(options.cpu_mem_arena)
    return reuse, arena


def session_options(options: RunOptions, graph: str):
    """The onnxruntime SessionOptions of every session we open for `graph` (the benchmarks' profiler uses them)."""
    ort = _import_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.threads:
        so.intra_op_num_threads = int(options.threads)
    so.enable_mem_reuse, so.enable_cpu_mem_arena = memory_plan(graph, options)
    so.log_severity_level = 3                  # errors only: keep the CLI output readable
    return so


def load(path: str, entry, device: DeviceSpec, options: RunOptions) -> OnnxRuntimeRunner:
    ort = _import_ort()
    so = session_options(options, entry.spec.name)
    try:
        session = ort.InferenceSession(path, sess_options=so, providers=providers_for(device))
    except BackendError:
        raise
    except Exception as e:                     # onnxruntime raises its own exception types (Fail, InvalidGraph...)
        raise GraphError(f"onnxruntime cannot load graph {entry.spec.name}: {e}", path=path) from None
    if device.kind != "cpu" and _PROVIDERS[device.kind][0] not in session.get_providers():
        raise BackendError(f"onnxruntime could not start {_PROVIDERS[device.kind][0]} for {device.kind}:"
                           f"{device.index}", got=session.get_providers(), path=path)

    declared = (_declared(session.get_inputs()), _declared(session.get_outputs()))
    check_engine_io(entry.spec, *declared, backend="onnxruntime", path=path)
    return OnnxRuntimeRunner(entry.spec, path, session, declared)
