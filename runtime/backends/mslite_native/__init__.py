"""MindSpore Lite 2.0's native engine from any CPython: our C shim (shim.cc) over the wheel's C++ API, via ctypes.

    from runtime.backends.mslite_native import engine
    lite = engine()                                   # BackendError naming what is missing, and the setup command
    lite.convert_onnx("unet.onnx", "unet.mindir")     # the converter (ONNX -> Lite MindIR)
    model = lite.build("unet.mindir", threads=2)      # the runtime, on the CPU
    model.inputs, model.outputs                       # [(name, dims, dtype name)] as the file declares them
    outs = model.predict([x, t, ...])                 # numpy arrays in model.inputs order -> numpy outputs

Set up once with ``python -m runtime.backends.mslite_native setup`` (build.py). The engine cannot share a process
with MindSpore 2.10: both ship a ``libmindspore_core.so`` of their own, and whichever loads second fails
(``undefined symbol`` at load, or worse). :func:`engine` refuses to load where MindSpore is already loaded; the
exporter therefore converts and checks Lite graphs in worker processes.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..base import BackendError, EngineTensor
from ...errors import GraphError
from ...specs import dtype_name
from . import build

ERROR_BYTES = 8192
MAX_RANK = 8
# mindspore::ModelType by file suffix. The export writes .ms (kMindIR_Lite, the flatbuffer the Lite runtime runs
# directly): measured on a 2.7 GB graph it builds in 7 s at 5.5 GB peak RSS and predicts in 0.36 s, where the
# same graph as .mindir (kMindIR, converted again at every build) took 30 s at 10.7 GB and predicted in 1.5 s.
MODEL_TYPES = {".ms": 4, ".mindir": 0}
SPLIT_GRAPH_SUFFIX = "_graph.mindir"   # .mindir above 2 GB: <stem>_graph.mindir + <stem>_variables/
GLOG_ENV = "GLOG_v"              # the engine's log level: 3 = errors only (its warnings are many and harmless)

_ENGINE: Optional["NativeEngine"] = None
_LOCK = threading.RLock()        # engine loading, and builds (they change the working directory)


def foreign_mindspore() -> Optional[str]:
    """The path of a libmindspore_core.so loaded in this process that is not the Lite engine's, or None."""
    if "mindspore" in sys.modules:
        return "the mindspore package (imported)"
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return None
    ours = str(build.layout().lib)
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if path.endswith("libmindspore_core.so") and not path.startswith(ours):
            return path
    return None


class NativeModel:
    """A built Lite model: declared inputs/outputs, and predict on numpy arrays (copied into the engine's
    tensors, outputs copied out, so nothing returned aliases engine memory)."""

    def __init__(self, lib, handle: int, path: str) -> None:
        self._lib, self._handle, self.path = lib, ctypes.c_void_p(handle), path
        self.inputs = self._describe(0)
        self.outputs = self._describe(1)

    def _describe(self, is_output: int) -> List[EngineTensor]:
        out = []
        for i in range(self._lib.sv3d_mslite_count(self._handle, is_output)):
            name, dtype, dims = ctypes.c_char_p(), ctypes.c_int(), (ctypes.c_int64 * MAX_RANK)()
            rank = self._lib.sv3d_mslite_describe(self._handle, is_output, i, ctypes.byref(name), ctypes.byref(dtype),
                                                  dims, MAX_RANK)
            out.append((name.value.decode(), tuple(int(d) for d in dims[:rank]), dtype_name("mslite", dtype.value)))
        return out

    def predict(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        if self._handle is None:
            raise BackendError(f"the MindSpore Lite model {self.path} was closed")
        if len(arrays) != len(self.inputs):
            raise BackendError("wrong number of inputs for the MindSpore Lite model", expected=len(self.inputs),
                               got=len(arrays))
        err = ctypes.create_string_buffer(ERROR_BYTES)
        for i, a in enumerate(arrays):
            a = np.ascontiguousarray(a)
            if self._lib.sv3d_mslite_set_input(self._handle, i, a.ctypes.data_as(ctypes.c_void_p), a.nbytes, err,
                                               ERROR_BYTES):
                raise BackendError(f"MindSpore Lite refused input {self.inputs[i][0]!r}: {err.value.decode()}")
        if self._lib.sv3d_mslite_predict(self._handle, err, ERROR_BYTES):
            raise BackendError(f"MindSpore Lite predict failed: {err.value.decode() or 'no message'}")
        outs = []
        for i, (name, dims, dtype) in enumerate(self.outputs):
            nbytes = ctypes.c_size_t()
            ptr = self._lib.sv3d_mslite_output_data(self._handle, i, ctypes.byref(nbytes))
            arr = np.empty(dims, dtype=np.dtype(dtype))
            if not ptr or nbytes.value != arr.nbytes:
                raise BackendError(f"MindSpore Lite output {name!r} has {nbytes.value} bytes", expected=arr.nbytes,
                                   got=nbytes.value)
            ctypes.memmove(arr.ctypes.data, ptr, arr.nbytes)
            outs.append(arr)
        return outs

    def close(self) -> None:
        if self._handle is not None:
            self._lib.sv3d_mslite_free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class NativeEngine:
    version = build.VERSION

    def __init__(self, library: Path) -> None:
        os.environ.setdefault(GLOG_ENV, "3")
        lib = ctypes.CDLL(str(library))
        c = ctypes
        sigs = {
            "sv3d_mslite_convert_onnx": (c.c_int, [c.c_char_p, c.c_char_p, c.c_int, c.c_char_p, c.c_size_t]),
            "sv3d_mslite_build": (c.c_void_p, [c.c_char_p, c.c_int, c.c_int, c.c_char_p, c.c_size_t]),
            "sv3d_mslite_free": (None, [c.c_void_p]),
            "sv3d_mslite_count": (c.c_int, [c.c_void_p, c.c_int]),
            "sv3d_mslite_describe": (c.c_int, [c.c_void_p, c.c_int, c.c_int, c.POINTER(c.c_char_p),
                                               c.POINTER(c.c_int), c.POINTER(c.c_int64), c.c_int]),
            "sv3d_mslite_set_input": (c.c_int, [c.c_void_p, c.c_int, c.c_void_p, c.c_size_t, c.c_char_p,
                                                c.c_size_t]),
            "sv3d_mslite_predict": (c.c_int, [c.c_void_p, c.c_char_p, c.c_size_t]),
            "sv3d_mslite_output_data": (c.c_void_p, [c.c_void_p, c.c_int, c.POINTER(c.c_size_t)]),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self._lib = lib

    def convert_onnx(self, onnx_path, out_path) -> Path:
        """Convert an ONNX file (external data beside it is read too) to `out_path`: ``.ms`` (the Lite runtime's
        own format; weights above 2 GB go to ``<stem>.msw`` beside it) or ``.mindir`` (above 2 GB written as
        ``<stem>_graph.mindir`` + ``<stem>_variables/``). 4-D inputs keep the ONNX layout (NCHW). Returns the
        model file to build from. The converter prints to stdout; that goes to stderr here, so a caller's stdout
        stays its own."""
        out = Path(out_path)
        if out.suffix not in MODEL_TYPES:
            raise BackendError("unknown MindSpore Lite model file type", expected=f"a path ending in "
                               f"{' or '.join(MODEL_TYPES)}", got=str(out))
        err = ctypes.create_string_buffer(ERROR_BYTES)
        with _stdout_to_stderr():
            rc = self._lib.sv3d_mslite_convert_onnx(os.fsencode(onnx_path), os.fsencode(out.with_suffix("")),
                                                    MODEL_TYPES[out.suffix], err, ERROR_BYTES)
        split = out.with_name(out.stem + SPLIT_GRAPH_SUFFIX)
        written = out if out.is_file() else split if split.is_file() else None
        if rc != 0 or written is None:
            raise BackendError(f"the MindSpore Lite converter failed on {onnx_path}: "
                               f"{err.value.decode() or 'it wrote no model file'}")
        return written

    def build(self, path, threads: int = 0) -> NativeModel:
        """Build a .ms or .mindir file on the CPU with `threads` threads (0 = the engine's default)."""
        kind = MODEL_TYPES.get(Path(path).suffix)
        if kind is None:
            raise GraphError("unknown MindSpore Lite model file type", expected=" or ".join(MODEL_TYPES),
                             got=Path(path).suffix or "no suffix", path=path)
        err = ctypes.create_string_buffer(ERROR_BYTES)
        folder, name = Path(path).resolve().parent, Path(path).name
        # a .ms above 2 GB keeps its weights in <stem>.msw, which Lite opens relative to the working directory
        with _LOCK, _working_directory(folder):
            handle = self._lib.sv3d_mslite_build(os.fsencode(name), kind, int(threads), err, ERROR_BYTES)
        if not handle:
            raise GraphError(f"MindSpore Lite cannot build the graph: {err.value.decode() or 'no message'}",
                             path=path)
        return NativeModel(self._lib, handle, str(path))


@contextmanager
def _working_directory(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def engine() -> NativeEngine:
    """The process's native engine, loaded once; BackendError saying what is missing and how to set it up."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            why = build.problem()
            if why:
                raise BackendError(f"the native MindSpore Lite engine is not available: {why}")
            other = foreign_mindspore()
            if other:
                raise BackendError("the native MindSpore Lite engine cannot load in a process where MindSpore is "
                                   "loaded (both ship their own libmindspore_core.so)", got=other,
                                   hint="run MindSpore Lite in a process that does not import mindspore")
            try:
                _ENGINE = NativeEngine(build.layout().library)
            except OSError as e:
                raise BackendError(f"the MindSpore Lite shim does not load: {e}",
                                   hint=f"run: {build.SETUP_COMMAND}") from None
        return _ENGINE
