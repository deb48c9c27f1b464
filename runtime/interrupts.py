"""Ctrl-C (SIGINT) and SIGTERM that still work once MindSpore has run.

MindSpore 2.10 installs its own C-level SIGINT handler (libmindspore_ms_backend.so) the first time a graph is
compiled or run, replacing Python's: from then on Ctrl-C ends the process silently with exit 143, skipping every
``finally`` (staging folders and temporary outputs stay behind). It also turns a KeyboardInterrupt raised inside
some of its Python code into a ValueError.

:func:`guard` installs a Python handler for SIGINT and SIGTERM that records the signal and raises
KeyboardInterrupt, remembers the C-level ``sigaction`` Python installed for it, and runs a daemon thread that puts
that ``sigaction`` back within :data:`configs.limits.LIMITS.signal_guard_poll_s` whenever a library replaces it
(``sigaction`` is process-wide and may be called from any thread). :func:`reassert` does the same check at once;
callers run it after each engine step. :func:`interrupted` tells whether a signal arrived, so a command line can
report an interruption even when a library wrapped the KeyboardInterrupt into another exception, and
:func:`checkpoint` raises it again where a library swallowed it.

A signal can land while Python runs code that cannot propagate an exception: a ``__del__``, a weakref callback,
or the at-fork handlers ``logging`` registers, which run in the parent each time imageio starts ffmpeg. Python
then prints "Exception ignored in ..." with a traceback and drops the KeyboardInterrupt. While guarded,
``sys.unraisablehook`` drops such a KeyboardInterrupt quietly instead: the signal is already recorded, and the
next :func:`checkpoint` raises it where it can be handled.

:func:`preload` imports a module with the KeyboardInterrupt held until the import is done (the signal is
recorded at once). An interrupted ``import mindspore`` leaves exit hooks registered by its C extension that crash
the interpreter at exit ("Fatal Python error: PyThreadState_Get", exit 134); held, Ctrl-C exits 130 a moment later.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import signal
import sys
import threading
from typing import Dict, Optional

from configs.limits import LIMITS

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130
MESSAGE = "interrupted"

_SIGACTION_BYTES = 256                  # larger than struct sigaction on every Linux ABI
_state: Dict[str, object] = {"received": None, "thread": None, "stop": None, "previous": None, "hook": None,
                             "held": 0}
_saved: Dict[int, bytes] = {}
_lock = threading.Lock()


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _read(sig: int) -> Optional[bytes]:
    if _LIBC is None:
        return None
    buf = ctypes.create_string_buffer(_SIGACTION_BYTES)
    if _LIBC.sigaction(int(sig), None, buf) != 0:
        return None
    return buf.raw


def _handler_address(raw: bytes) -> bytes:
    return raw[:ctypes.sizeof(ctypes.c_void_p)]     # sa_handler is the first member


def _on_signal(signum, frame):
    if _state["received"] is None:
        _state["received"] = signum
    if not _state["held"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def held():
    """Record a signal that arrives inside the block but raise its KeyboardInterrupt only when the block is done
    (for code that must not stop halfway); an exception from the block itself propagates as usual."""
    _state["held"] += 1
    try:
        yield
    finally:
        _state["held"] -= 1
    if not _state["held"] and _state["received"] is not None:
        raise KeyboardInterrupt


def preload(module: str) -> bool:
    """Import ``module`` now, if it is installed, never interrupted halfway by our handlers (module docstring);
    returns whether it is imported. A missing module is left for its users to report."""
    with held():
        try:
            importlib.import_module(module)
        except ImportError:
            return False
    return True


def _unraisable(info) -> None:
    """sys.unraisablehook while guarded: a KeyboardInterrupt from our handler is recorded already; drop it."""
    if isinstance(info.exc_value, KeyboardInterrupt) and _state["received"] is not None:
        return
    (_state["hook"] or sys.__unraisablehook__)(info)


def reassert() -> bool:
    """Put our handlers back where a library replaced them; True if one had been replaced."""
    replaced = False
    with _lock:
        for sig, raw in _saved.items():
            now = _read(sig)
            if now is not None and _handler_address(now) != _handler_address(raw):
                buf = ctypes.create_string_buffer(raw, _SIGACTION_BYTES)
                _LIBC.sigaction(int(sig), buf, None)
                replaced = True
    return replaced


def _watch(stop: threading.Event) -> None:
    while not stop.wait(LIMITS.signal_guard_poll_s):
        reassert()


def guard() -> None:
    """Install the handlers (main thread only) and start the watch thread; idempotent."""
    if threading.current_thread() is not threading.main_thread():
        return
    if _state["previous"] is None:
        _state["previous"] = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if _state["hook"] is None:
        _state["hook"] = sys.unraisablehook
        sys.unraisablehook = _unraisable
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
        raw = _read(sig)
        if raw is not None:
            _saved[int(sig)] = raw
    if _saved and _state["thread"] is None:
        stop = threading.Event()
        t = threading.Thread(target=_watch, args=(stop,), name="sv3d-signal-guard", daemon=True)
        t.start()
        _state.update(thread=t, stop=stop)


def release() -> None:
    """Stop the watch thread and put back the Python handlers that were there before :func:`guard`."""
    stop, t = _state["stop"], _state["thread"]
    if stop is not None:
        stop.set()
        t.join()
    with _lock:
        _saved.clear()
    previous = _state["previous"] or {}
    if threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if _state["hook"] is not None:
        sys.unraisablehook = _state["hook"]
    _state.update(thread=None, stop=None, previous=None, hook=None)


def checkpoint() -> None:
    """Re-assert the handlers, and raise KeyboardInterrupt if a signal arrived whose KeyboardInterrupt was
    swallowed on the way (a library's bare ``except:`` or ``except BaseException``). Callers run it between
    steps and before publishing anything."""
    reassert()
    if _state["received"] is not None:
        raise KeyboardInterrupt


def interrupted() -> bool:
    return _state["received"] is not None


def exit_code() -> int:
    """128 + the signal received (130 for Ctrl-C, 143 for SIGTERM); 130 for a KeyboardInterrupt without one."""
    sig = _state["received"]
    return EXIT_INTERRUPTED if sig is None else 128 + int(sig)


def reset() -> None:
    _state["received"] = None


__all__ = ["EXIT_INTERRUPTED", "MESSAGE", "checkpoint", "exit_code", "guard", "held", "preload", "interrupted",
           "reassert", "release", "reset"]
