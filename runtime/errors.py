"""Typed errors of the SV3D runtime, under the project's root error :class:`SV3DError` (configs/errors.py, where
its message format is described); ``from runtime.errors import SV3DError`` keeps working."""
from __future__ import annotations

from configs.errors import SV3DError


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


__all__ = ["BackendError", "GraphError", "InputImageError", "OrbitError", "OutputError", "SV3DError", "first_line"]
