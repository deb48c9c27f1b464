"""Errors of `python -m export` that a user can cause or must know about (the CLI prints them, no traceback)."""
from __future__ import annotations

from runtime.errors import SV3DError


class ExportError(SV3DError):
    """Bad export options, an unusable output folder, not enough disk, or an exporter that failed."""


class ParityError(ExportError):
    """An exported graph does not load, declares the wrong inputs/outputs, or disagrees with the eager Cell."""


class DestinationError(ExportError):
    """The output folder cannot be used: it exists, is not a folder or not writable, or another export is writing
    it. A bad destination, like a bad option, exits 2 whether planning or making the staging folder finds it."""
