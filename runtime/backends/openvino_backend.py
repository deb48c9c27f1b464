"""OpenVINO backend: the export's ONNX files compiled for the CPU by OpenVINO, inputs bound by name.

OpenVINO is the maintained deployment engine for Intel CPUs. Where the CPU has AMX-BF16 or AVX512_BF16 it runs
matmuls and convolutions in bfloat16 (``INFERENCE_PRECISION_HINT``), several times faster than fp32 here
(benchmarks/README.md), with normalisation statistics, softmax and accumulation kept in fp32 by the engine.

Precision (RunOptions.precision): ``f32``, ``bf16`` or ``auto`` = bf16 when OpenVINO reports BF16 among the CPU's
optimisation capabilities (AMX or AVX512_BF16), else f32. The reduced precision applies to the graphs that run
many times (REDUCED_PRECISION_GRAPHS: the UNet every step, the decoder per chunk); CLIP and the VAE encoder run
once per image and stay f32, which keeps the conditioning exact at a cost of about a second.

``int8`` (opt-in) runs the export's NNCF-quantized UNet (format ``openvino_int8``, added by ``python -m
export.int8``): its int8 MatMuls and convolutions on AMX-INT8 / VNNI, the rest of it, and the decoder, as in
``auto``. Its error is larger than bf16's (benchmarks/README.md); it is never chosen by ``auto``.

Compiled models are cached (OpenVINO's ``CACHE_DIR``, keyed by the file and the compile properties): the first
load compiles, later loads of the same file read the blob. RunOptions.cache_dir, else ``$SV3D_CACHE_DIR/openvino``,
else ``~/.cache/sv3d-runtime/openvino``; an empty string turns caching off.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional

import numpy as np

from .base import BackendError, BaseRunner, DeviceSpec, Honours, RunOptions, cache_root, check_engine_io
from .onednn import ISA_ENV, without_our_cap
from ..errors import GraphError
from ..manifest import INT8_GRAPHS
from ..specs import GRAPH_ROLES, dtype_where

HONOURS = Honours(precisions=("auto", "f32", "bf16", "int8"), threads=True, cache_dir=True, memory_plan=False)
REDUCED_PRECISION_GRAPHS = tuple(r.name for r in GRAPH_ROLES.values() if r.repeated)


def _import_openvino():
    try:
        import openvino
    except ImportError as e:
        raise BackendError(f"the openvino backend needs the 'openvino' package: {e}",
                           hint="pip install openvino, or choose --backend onnxruntime") from None
    return openvino


_CORE = None


def _warm_up(ov, ov_core) -> None:
    """Compile and run a one-op model, so that the CPU plugin's oneDNN reads its ISA settings now."""
    import openvino.opset13 as ops

    x = ops.parameter([1, 16], np.float32, name="x")
    model = ov.Model([ops.softmax(x, -1)], [x], "warm_up")
    ov_core.compile_model(model, "CPU")({"x": np.zeros((1, 16), np.float32)})


def core():
    """One OpenVINO Core per process (it owns the plugin and its thread pool), initialised without the oneDNN ISA
    cap that the MindSpore backend sets for its own oneDNN (onednn.without_our_cap)."""
    global _CORE
    if _CORE is None:
        ov = _import_openvino()
        with without_our_cap():
            ov_core = ov.Core()
            _warm_up(ov, ov_core)
        _CORE = ov_core
    return _CORE


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has a native bf16 path on this machine (AMX or AVX512_BF16)."""
    try:
        caps = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:                                   # a plugin that cannot report it: assume no
        return False
    return "BF16" in [str(c).upper() for c in caps]


def resolve_precision(requested: str) -> str:
    """``auto`` -> bf16 where the CPU supports it natively, else f32; ``f32``/``bf16``/``int8`` as given (bf16
    refused on CPUs without it: OpenVINO would silently fall back to f32 and the user's benchmark would lie)."""
    if requested == "auto":
        return "bf16" if cpu_supports_bf16() else "f32"
    if requested == "bf16" and not cpu_supports_bf16():
        raise BackendError("bf16 was requested, but this CPU has no native bf16 (AMX-BF16 / AVX512_BF16) for "
                           "OpenVINO", hint="use --precision f32 (or auto)")
    return requested


def graph_precision(graph_name: str, options: RunOptions) -> str:
    """The precision a graph runs at (the backend interface, runtime/backends/base.py)."""
    return _precision(graph_name, options.precision)


def _precision(graph_name: str, requested: str) -> str:
    """The resolved precision for REDUCED_PRECISION_GRAPHS, f32 for the others; with int8, int8 for the quantized
    graphs and ``auto``'s choice for the other repeated ones."""
    if requested == "int8":
        return "int8" if graph_name in INT8_GRAPHS else _precision(graph_name, "auto")
    resolved = resolve_precision(requested)
    return resolved if graph_name in REDUCED_PRECISION_GRAPHS else "f32"


def cache_dir(options: RunOptions) -> Optional[Path]:
    if options.cache_dir is not None:
        return Path(options.cache_dir).expanduser() if options.cache_dir else None
    return cache_root() / "openvino"


def compile_properties(graph_name: str, options: RunOptions) -> dict:
    """The CPU plugin's compile properties for one graph: its precision, the latency hint (one request at a time,
    every core on it), the thread count and the cache folder (benchmarks/openvino_profile.py compiles with these).

    The cache folder is per inference precision: OpenVINO 2026.4's cache key leaves INFERENCE_PRECISION_HINT out,
    so a bf16 compile of a file compiled in f32 before loaded the f32 blob and ran it wrongly (0.15 relative L2
    on the tiny UNet; tests/test_openvino_cache.py)."""
    precision = graph_precision(graph_name, options)
    # an int8 graph's int8 comes from its FakeQuantize nodes; the hint sets what the rest of it runs at
    hint = _precision(graph_name, "auto") if precision == "int8" else precision
    props = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if options.threads:
        props["INFERENCE_NUM_THREADS"] = int(options.threads)
    folder = cache_dir(options)
    if folder is not None:
        props["CACHE_DIR"] = str(folder / hint)
    return props


class OpenVINORunner(BaseRunner):
    backend = "openvino"

    def __init__(self, spec, path: str, compiled, precision: str, cached: bool) -> None:
        super().__init__(spec, path)
        self.compiled = compiled
        self.precision = precision
        self.cached = cached                       # whether a compiled blob was found in the cache at load
        self.request = compiled.create_infer_request()
        self._outputs = [compiled.output(n) for n in spec.output_names]

    def _run(self, arrays: list) -> List[np.ndarray]:
        feeds = {t.name: a for t, a in zip(self.spec.inputs, arrays)}
        results = self.request.infer(feeds)
        # copies: the request reuses its output buffers on the next call
        return [np.array(results[o]) for o in self._outputs]


def _reason(e: Exception) -> str:
    """OpenVINO's messages start with the C++ source location; the reason is in the lines after it."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception from src/")]
    return " | ".join(useful[:3]) or (lines[0] if lines else type(e).__name__)


def _blobs(folder: Optional[Path]) -> set:
    return set(folder.glob("*.blob")) if folder is not None and folder.is_dir() else set()


def load(path: str, entry, device: DeviceSpec, options: RunOptions) -> OpenVINORunner:
    if device.kind != "cpu":
        raise BackendError(f"the openvino backend runs on the CPU only, not {device.kind}",
                           hint="use --device cpu, or --backend onnxruntime for cuda / ascend")
    if entry.form == "plain" and entry.spec.name != "clip_encoder":
        warnings.warn(f"graph {entry.spec.name} is in the plain ONNX form: OpenVINO merges its spelled-out GroupNorm "
                      f"means into one naive reduction, which loses ~5e-4 relative precision at 576 px; export "
                      f"with the default --onnx-form fused for OpenVINO", RuntimeWarning, stacklevel=2)
    props = compile_properties(entry.spec.name, options)
    precision = graph_precision(entry.spec.name, options)
    folder = Path(props["CACHE_DIR"]) if "CACHE_DIR" in props else None
    ov_core = core()
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create the OpenVINO cache folder: {e.strerror}", path=folder,
                               hint="pass --cache-dir DIR (or '' to turn the cache off)") from None
    before = _blobs(folder)
    try:
        compiled = ov_core.compile_model(path, "CPU", props)
    except Exception as e:                          # OpenVINO raises RuntimeError with the converter's message
        cap = os.environ.get(ISA_ENV)               # a cap the user set also caps OpenVINO's oneDNN (onednn.py)
        raise GraphError(f"openvino cannot compile graph {entry.spec.name}: {_reason(e)}", path=path,
                         hint=f"{ISA_ENV}={cap} is set in the environment and limits OpenVINO's kernels too "
                              f"(no bf16 softmax under AVX2): unset it, or use --precision f32" if cap else None
                         ) from None
    cached = folder is not None and bool(before) and _blobs(folder) == before

    check_engine_io(entry.spec, _declared(compiled.inputs, all_names=False),
                    _declared(compiled.outputs, all_names=True), backend="openvino", path=path)
    return OpenVINORunner(entry.spec, path, compiled, precision, cached)


def _declared(ports, all_names: bool) -> list:
    """EngineTensors of a compiled model's inputs or outputs (dynamic dims -1): one per port under its name, or
    with all_names one per name the port answers to (an output may carry several)."""
    out = []
    for port in ports:
        shape = port.get_partial_shape()
        dims = tuple(d.get_length() if d.is_static else -1 for d in shape) if shape.rank.is_static else None
        dt = dtype_where("openvino", port.get_element_type().get_type_name())
        dtype = dt.name if dt is not None else f"openvino {port.get_element_type().get_type_name()}"
        names = sorted(port.get_names()) if all_names else [port.get_any_name()]
        out += [(name, dims, dtype) for name in names]
    return out
