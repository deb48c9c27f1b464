"""Typed errors of the SV3D runtime.

Every error a user can trigger derives from :class:`SV3DError`, so a command line can catch one class, print the
message and exit non-zero. Messages say what was expected, what was got, and which file was involved::

    raise OrbitError("elevations_deg has the wrong length", expected="1 or 21 values", got="5 values")
    -> "elevations_deg has the wrong length: expected 1 or 21 values, got 5 values"

The structured parts stay available as attributes (``path``, ``expected``, ``got``, ``hint``) for callers that
want to render them differently.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

_NOT_GIVEN = object()


class SV3DError(Exception):
    """Base class of every runtime error a user can cause (bad input, bad graph, unwritable output)."""

    def __init__(self, message: str, *, path: Optional[Union[str, os.PathLike]] = None,
                 expected: Any = _NOT_GIVEN, got: Any = _NOT_GIVEN, hint: Optional[str] = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.expected = None if expected is _NOT_GIVEN else expected
        self.got = None if got is _NOT_GIVEN else got
        self.hint = hint
        text = message
        if expected is not _NOT_GIVEN and got is not _NOT_GIVEN:
            text += f": expected {expected}, got {got}"
        elif expected is not _NOT_GIVEN:
            text += f": expected {expected}"
        elif got is not _NOT_GIVEN:
            text += f": got {got}"
        if self.path is not None:
            text += f" [{self.path}]"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class InputImageError(SV3DError):
    """The input image is missing, unreadable, too large, of an unsupported mode, or has no foreground."""


class OrbitError(SV3DError):
    """Camera angles (sv3d_p) of the wrong count, not finite, or out of range."""


class GraphError(SV3DError):
    """An exported graph or its manifest does not match what the runtime expects."""


class OutputError(SV3DError):
    """An output (video, frames, report) cannot be written."""


class BackendError(SV3DError):
    """A backend is unknown, not installed, cannot use the requested device, or cannot honour a run option."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (engines append C++ stack traces), else its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
