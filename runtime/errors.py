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


__all__ = ["GraphError", "InputImageError", "OrbitError", "OutputError", "SV3DError"]
