"""A turntable preview of a vertex-coloured mesh: a row of views around it, rendered in numpy.

Each face is sampled at fixed barycentric points (colours interpolated from its vertices, shaded by a headlight:
``colour * (AMBIENT + (1 - AMBIENT) * max(0, n . u))``), the points are projected with the runtime's cameras and
drawn far to near, so the nearest point of each pixel stays (a painter's z-buffer). Enough points per face are
taken that every pixel the surface covers receives several.
"""
from __future__ import annotations

import math

import numpy as np

from .cameras import Cameras, focal_from_fov, look_at

AMBIENT = 0.45
VIEWS = 6
SIZE = 256                 # pixels per view
ELEVATION_DEG = 20.0
FOV_DEG = 30.0
POINTS_PER_PIXEL = 3       # surface samples per pixel of the view's area


def _samples_per_face(count: int) -> np.ndarray:
    """(S, 3) barycentric weights spread over a triangle: an s x s lattice folded into it (S >= count)."""
    s = max(2, math.ceil(math.sqrt(2 * count)))
    i, j = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    u, v = (i.ravel() + 1 / 3) / s, (j.ravel() + 1 / 3) / s
    fold = u + v > 1
    u[fold], v[fold] = 1 - u[fold], 1 - v[fold]
    return np.stack([1 - u - v, u, v], axis=1)


def render_turntable(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, *, views: int = VIEWS,
                     size: int = SIZE, elevation_deg: float = ELEVATION_DEG) -> np.ndarray:
    """(size, views * size, 3) uint8: ``views`` images at azimuths 360 k / views, white background."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    radius = float(np.linalg.norm(vertices, axis=1).max()) or 1.0
    distance = 1.05 * radius / math.sin(math.radians(FOV_DEG) / 2)       # the bounding sphere fills the view
    centres, rotations = look_at([elevation_deg] * views, 360.0 * np.arange(views) / views, distance)
    cameras = Cameras(centres, rotations, focal_from_fov(FOV_DEG, size), size, size)

    tri = vertices[faces]                                                        # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    bary = _samples_per_face(POINTS_PER_PIXEL * size * size // max(1, len(faces)) + 1)   # (S, 3)
    points = np.einsum("sk,fkc->fsc", bary, tri).reshape(-1, 3)                  # (F*S, 3)
    rgb = np.einsum("sk,fkc->fsc", bary, colours[faces].astype(np.float32)).reshape(-1, 3)
    point_normals = np.repeat(normals, len(bary), axis=0)

    strip = np.full((size, views * size, 3), 255, dtype=np.uint8)
    cols, rows, depth = cameras.project(points)
    for k in range(views):
        toward = cameras.centres[k] - points
        toward /= np.linalg.norm(toward, axis=1, keepdims=True)
        lit = AMBIENT + (1 - AMBIENT) * np.clip(np.einsum("nc,nc->n", point_normals, toward), 0, 1)
        ok = (depth[k] > 0) & (cols[k] >= 0) & (cols[k] < size) & (rows[k] >= 0) & (rows[k] < size)
        order = np.flatnonzero(ok)[np.argsort(-depth[k][ok])]                   # far to near
        image = strip[:, k * size:(k + 1) * size]
        image[rows[k][order].astype(np.int32), cols[k][order].astype(np.int32)] = \
            np.clip(rgb[order] * lit[order, None], 0, 255).astype(np.uint8)
    return strip


__all__ = ["render_turntable"]
