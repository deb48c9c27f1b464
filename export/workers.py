"""The steps of an export that hold a graph's weights, each runnable in a fresh process.

MindSpore 2.10 keeps what it compiled: after `mindspore.export`, `mindspore.onnx.export` or the first call of a
GraphCell, the weights of that graph stay allocated even once every Python reference to the Cell is gone
(`ms_memory_recycle`, `del_net_res` and shrinking the Parameters do not release them). An export of the full
sv3d_u compiles each graph several times (MindIR, ONNX, engine checks, the parity twin), so in one process the
UNet's 6 GB of weights pile up past the memory of a 24 GB machine (measured: killed by the OOM killer at 24 GB
RSS). Each step below is therefore a top-level function of picklable arguments that `call` runs either here or
in a spawned worker process whose memory returns to the system when it exits; export/api.py isolates the steps
of large graphs (--isolate auto).

A worker is one spawned process per step, answering on a one-way pipe. It dies with its parent: on Linux it asks
the kernel for SIGKILL when the parent goes (prctl PR_SET_PDEATHSIG), and everywhere a thread checks that the
parent is still its parent every LIMITS.worker_parent_poll_s and exits otherwise; so SIGKILL of the export leaves
no worker (and then no multiprocessing resource_tracker, which exits once every holder of its pipe is gone). An
interrupted or failing parent kills its worker before re-raising.

Ctrl-C reaches the whole process group, workers included, and the parent answers it (it kills its worker). A
worker must not act on it, least of all while its interpreter starts: Python installs its SIGINT handler early,
and a KeyboardInterrupt while it sets up sys.stdout ends the worker with "Fatal Python error: init_sys_streams",
later with a traceback. So the parent starts a worker with SIGINT and SIGTERM blocked (a blocked signal mask is
inherited through fork and exec), and the worker, once in :func:`_worker_main`, ignores SIGINT and unblocks both;
CPython's multiprocessing starts its resource tracker the same way.

Steps rebuild what they need from the Plan (config, checkpoint path, seed): the tracing inputs are
`spec.example_inputs(seed)`, deterministic, so every process traces and checks with the same arrays.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from configs.limits import LIMITS
from runtime.specs import ExportShapes, GraphSpec, graph_specs
from .errors import ExportError

_READERS: Dict[tuple, object] = {}


STEP_PEAKS: List[Tuple[str, int]] = []     # (step, peak RSS bytes of its worker process), in call order


PR_SET_PDEATHSIG = 1          # linux/prctl.h
START_BLOCKED = (signal.SIGINT, signal.SIGTERM)     # blocked from the worker's start until _worker_main (docstring)
_CAN_BLOCK = hasattr(signal, "pthread_sigmask")     # POSIX


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when `parent_pid` (its parent) ends: PR_SET_PDEATHSIG where the kernel has it, and
    a daemon thread that polls getppid() everywhere (it also covers a parent that died before the prctl)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch():
        while True:
            time.sleep(LIMITS.worker_parent_poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="sv3d-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _start_blocked():
    """START_BLOCKED blocked in this thread (and so in a process it starts) inside the block; a signal that arrives
    meanwhile is delivered when the block ends."""
    if not _CAN_BLOCK:
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()       # started first: starting it unblocks SIGINT and SIGTERM in this thread
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, START_BLOCKED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_main(conn, parent_pid: int, fn: Callable, args: tuple) -> None:
    from runtime.peak_rss import peak_rss_bytes

    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent answers Ctrl-C (module docstring)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _CAN_BLOCK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, START_BLOCKED)
    die_with_parent(parent_pid)
    try:
        answer = (True, fn(*args))
    except BaseException as e:                  # re-raised in the parent (KeyboardInterrupt included)
        answer = (False, e)
    peak = peak_rss_bytes()
    try:
        conn.send(answer + (peak,))
    except Exception as e:                       # an unpicklable result or exception
        conn.send((False, ExportError(f"step {fn.__name__}: its answer cannot be sent back: "
                                      f"{type(e).__name__}: {e}; it was {type(answer[1]).__name__}: "
                                      f"{str(answer[1])[:400]}"), peak))
    conn.close()


def call(isolated: bool, fn: Callable, *args):
    """fn(*args) in this process, or in a fresh spawned process (its exceptions re-raised here; its peak RSS
    appended to STEP_PEAKS). The worker is killed if this process is interrupted while it runs."""
    from runtime import interrupts

    if not isolated:
        result = fn(*args)
        interrupts.checkpoint()
        return result
    import multiprocessing

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_main, args=(send, os.getpid(), fn, args), name=f"sv3d-{fn.__name__}")
    try:
        with interrupts.held(), _start_blocked():     # our handler raises only once the worker has started
            proc.start()
        send.close()
        try:
            ok, payload, peak = recv.recv()
        except EOFError:
            proc.join()
            raise ExportError(f"the worker process of step {fn.__name__} died without an answer "
                              f"({_death(proc.exitcode)})") from None
    except BaseException:
        if proc.is_alive():
            proc.kill()
        proc.join()
        raise
    finally:
        recv.close()
        send.close()
    proc.join()
    interrupts.checkpoint()
    if not ok:
        raise payload
    result = payload
    STEP_PEAKS.append((fn.__name__, peak))
    logging.getLogger("export").info(f"    worker step {fn.__name__}: {time.perf_counter() - t0:.1f} s, peak RSS "
                                     f"{peak / 1e9:.1f} GB")
    return result


def _death(exitcode: int) -> str:
    """How a worker ended, in words: SIGKILL is the system's OOM killer unless someone else sent it."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"{name}: killed by the system, most likely out of memory" if name == "SIGKILL" else f"killed by {name}"
    return f"exit {exitcode}"


def _setup():
    import mindspore as ms

    if ms.get_context("mode") != ms.PYNATIVE_MODE:
        ms.set_context(mode=ms.PYNATIVE_MODE)      # eager references; exporters compile their own graphs


def _reader(plan):
    from models.checkpoint import CheckpointReader

    key = (str(plan.checkpoint), plan.cfg.sha256())
    if key not in _READERS:
        _READERS[key] = CheckpointReader(plan.checkpoint, plan.cfg)
    return _READERS[key]


def spec_and_feeds(plan, name: str, shapes: ExportShapes) -> Tuple[GraphSpec, Dict[str, np.ndarray]]:
    spec = graph_specs(plan.cfg, shapes)[name]
    return spec, spec.example_inputs(plan.seed)


def _make_cell(plan, name: str, shapes: ExportShapes, dtype: str, spec: GraphSpec) -> Callable:
    from .wrappers import build_graph_cell

    reader = _reader(plan)

    def make():
        return build_graph_cell(name, reader, resolution=shapes.resolution, num_frames=shapes.num_frames,
                                attention_chunk=shapes.attention_chunk, dtype=dtype, spec=spec)
    return make


# ----------------------------------------------------------------------------------------------------- steps


def write_mindir(plan, name: str, shapes: ExportShapes, folder: Path) -> Tuple[Path, List[Path]]:
    """Trace a fresh wrapper Cell to `folder/<name>[.mindir | _graph.mindir + _variables/]`."""
    from . import mindir

    _setup()
    spec, feeds = spec_and_feeds(plan, name, shapes)
    return mindir.write(_make_cell(plan, name, shapes, shapes.dtype, spec), spec, feeds, folder)


def export_onnx_raw(plan, name: str, shapes: ExportShapes, mindir_model: Optional[Path], work: Path) -> Path:
    """mindspore.onnx.export of the MindIR's GraphCell (`mindir_model`) or, if None, of a fresh Cell."""
    from . import mindir, onnx_io

    _setup()
    spec, feeds = spec_and_feeds(plan, name, shapes)
    if mindir_model is not None:
        return onnx_io.export_raw(lambda: mindir.graph_cell(mindir_model), spec, feeds, work)
    return onnx_io.export_raw(_make_cell(plan, name, shapes, shapes.dtype, spec), spec, feeds, work)


def pack_onnx(raw: Path, spec: GraphSpec, folder: Path, positional_inputs: bool) -> Tuple[Path, List[Path]]:
    from . import onnx_io

    return onnx_io.pack(raw, spec, folder, positional_inputs)


# formats whose steps always run in a fresh process: MindSpore Lite's native library cannot share a process with
# MindSpore (runtime/backends/mslite_native), which the exporting process has loaded
OWN_PROCESS_FORMATS = ("mslite",)
MSLITE_SUFFIX = ".ms"        # Lite's own format (runtime/backends/mslite_native: less memory and faster than .mindir)


def mslite_version() -> str:
    """The MindSpore Lite that converts and checks the mslite format: the official package's version, or the
    native engine's (no engine is loaded to answer)."""
    from runtime.backends import mslite_backend
    from runtime.backends.mslite_native import build

    if mslite_backend.binding() == "official":
        import importlib.metadata

        return f"{importlib.metadata.version('mindspore_lite')} (mindspore_lite package)"
    return f"{build.VERSION} (native library of the PyPI wheel, through runtime/backends/mslite_native)"


def convert_mslite(onnx_model: Path, onnx_files: List[Path], folder: Path, work: Path
                   ) -> Tuple[Path, List[Path], dict]:
    """The written ONNX graph in its mslite form (export/onnx_fuse.FORMS), converted by MindSpore Lite's converter
    to `folder/<name>.ms` (+ `<name>.msw` above 2 GB). Returns (model, files, report); the intermediate ONNX is removed. Run in its own
    process (OWN_PROCESS_FORMATS)."""
    import shutil

    from runtime.backends import mslite_backend
    from . import onnx_fuse

    src_folder = work / "mslite_src"
    shutil.rmtree(src_folder, ignore_errors=True)
    src_folder.mkdir(parents=True)
    src = src_folder / onnx_model.name
    data = [f for f in onnx_files if f != onnx_model]
    t0 = time.perf_counter()
    fused = onnx_fuse.fuse_file(onnx_model, src, data[0].name if data else None, onnx_fuse.FORMS["mslite"])
    t1 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (onnx_model.stem + MSLITE_SUFFIX)
    try:
        if mslite_backend.binding() == "official":
            out = _convert_official(src, out)
        else:
            from runtime.backends.mslite_native import engine

            out = engine().convert_onnx(src, out)
    finally:
        shutil.rmtree(src_folder, ignore_errors=True)
    # the model, and whatever the converter writes beside it for large weights
    files = sorted(f for f in folder.rglob("*") if f.is_file() and
                   f.relative_to(folder).parts[0].startswith(onnx_model.stem))
    for f in files:
        f.chmod(0o644)           # the converter writes 0400: owner-only and read-only, unlike every other graph file
    report = {**fused.to_dict(), "summary": fused.summary(), "fuse_seconds": round(t1 - t0, 3),
              "convert_seconds": round(time.perf_counter() - t1, 3)}
    return out, files, report


def _convert_official(src: Path, out: Path) -> Path:
    import mindspore_lite as mslite

    converter = mslite.Converter()
    converter.save_type = mslite.ModelType.MINDIR_LITE
    converter.input_format = mslite.Format.NCHW
    converter.convert(mslite.FmkType.ONNX, str(src), str(out.with_suffix("")))
    return out


def check(fmt: str, name: str, model: Path, spec: GraphSpec, scratch: Path, seed: Optional[int] = None) -> dict:
    """Load `model` with the runtime's backend for `fmt` and compare its declared I/O with the spec (ParityError
    otherwise, export/checks.py); when `seed` is given, run it on spec.example_inputs(seed), inputs bound by name.
    Returns the engine's input/output names and the output."""
    from .checks import CHECK_BACKENDS, check_graph, engine_names
    from .errors import ParityError

    if fmt == "mindir":
        _setup()
    runner = check_graph(fmt, name, model, spec, scratch)
    info = engine_names(runner)
    if seed is not None:
        try:
            info["output"] = runner.run(spec.example_inputs(seed))[spec.output_names[0]]
        except Exception as e:
            raise ParityError(f"graph {name} ({fmt}, {model.name}) does not run in its engine "
                              f"({CHECK_BACKENDS[fmt]}): {type(e).__name__}: {str(e).strip()[:800]}") from e
    del runner
    gc.collect()
    return info


def eager_output(plan, name: str, shapes: ExportShapes) -> np.ndarray:
    """The fp32 eager (PyNative) output of the same wrapper Cell on the same inputs: the parity reference."""
    from .wrappers import run_eager

    _setup()
    spec, feeds = spec_and_feeds(plan, name, shapes)
    cell = _make_cell(plan, name, shapes, "float32", spec)()
    out = run_eager(cell, spec, feeds, dtype="float32")
    del cell
    gc.collect()
    return out
