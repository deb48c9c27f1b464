"""The project's root error, :class:`SV3DError`: every error a user can cause derives from it.

It lives in configs/, the bottom layer every other package imports (configs imports none of them), so the
config's, the checkpoint's, the export's and the runtime's errors share one root and a command line catches one
class, prints the message and exits non-zero. Messages say what was expected, what was got, and which file was
involved::

    raise OrbitError("elevations_deg has the wrong length", expected="1 or 21 values", got="5 values")
    -> "elevations_deg has the wrong length: expected 1 or 21 values, got 5 values"

The structured parts stay available as attributes (``path``, ``expected``, ``got``, ``hint``) for callers that
want to render them differently. The runtime's own kinds are in runtime/errors.py.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

_NOT_GIVEN = object()


class SV3DError(Exception):
    """Base class of every error a user can cause: a bad input, option, config, checkpoint or graph, an unwritable
    output."""

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
