"""The mesh step's optional libraries (requirements-mesh.txt), imported when used, with an error that says what
to install. ``import runtime`` and ``import runtime.mesh`` import none of them."""
from __future__ import annotations

import importlib

from ..errors import SV3DError

REQUIREMENTS = "requirements-mesh.txt"
MODULES = {"scipy.ndimage": "scipy", "skimage.measure": "scikit-image", "trimesh": "trimesh",
           "fast_simplification": "fast-simplification"}


class MeshDependencyError(SV3DError):
    """A library the mesh step needs is not installed."""


def require(module: str, package: str = ""):
    """Import ``module`` or raise MeshDependencyError naming the pip package."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = package or MODULES.get(module, module)
        raise MeshDependencyError(f"the mesh step needs {pkg}", expected=f"an importable {module}",
                                  got=f"{type(e).__name__}: {e}", hint=f"pip install -r {REQUIREMENTS}") from None


def check_all() -> None:
    """Fail fast (before a long generation) when any of them is missing."""
    for module, package in MODULES.items():
        require(module, package)


__all__ = ["MODULES", "MeshDependencyError", "REQUIREMENTS", "check_all", "require"]
