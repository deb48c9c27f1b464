"""Surface of a signed distance field: scikit-image's marching cubes, then trimesh's Taubin smoothing and quadric
decimation (trimesh calls fast-simplification). The libraries do the work; this module picks the settings.
"""
from __future__ import annotations

import numpy as np

from .carve import Grid
from .deps import require

SMOOTH_ITERATIONS = 10      # Taubin lambda/mu passes: removes marching-cubes ripples without shrinking the mesh


def extract_surface(field: np.ndarray, grid: Grid, faces: int, smooth: int = SMOOTH_ITERATIONS):
    """A trimesh.Trimesh of the field's zero level set: outward normals, smoothed, decimated to at most ``faces``
    triangles."""
    measure = require("skimage.measure", "scikit-image")
    trimesh = require("trimesh")

    # field[i, j, k] is at origin + (i, j, k) * step: index axes are x, y, z
    verts, tris, _, _ = measure.marching_cubes(field, level=0.0, spacing=(grid.step,) * 3, allow_degenerate=False)
    mesh = trimesh.Trimesh(vertices=verts + grid.origin, faces=tris, process=True)
    if smooth > 0:
        trimesh.smoothing.filter_taubin(mesh, iterations=int(smooth))
    if len(mesh.faces) > faces:
        mesh = mesh.simplify_quadric_decimation(face_count=int(faces))
    mesh.remove_unreferenced_vertices()
    mesh.fix_normals()                     # consistent winding, outward (positive volume) per piece
    return mesh


__all__ = ["extract_surface"]
