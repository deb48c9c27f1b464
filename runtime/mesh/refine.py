"""Colour-consistency refinement of the visual hull (space carving, after Kutulakos and Seitz).

Silhouettes cannot see into concavities: the crease where two parts meet stays filled. A surface voxel of the hull
that lies on the real object looks the same colour from every view that sees it; one that fills a crease is seen
on one part from some views and on the other part from others. Each pass:

1. takes the hull's surface voxels (inside, with an outside 6-neighbour) and their outward normals (the field's
   gradient);
2. finds the views that see each one: facing it (n . u > MIN_FACING), inside the frame and the mask, and not behind
   other surface voxels (a per-view depth buffer of the surface voxels on cells ZBUFFER_VOXELS wide);
3. compares what those views see, with tolerance for misregistration: per view, the per-channel minimum and maximum
   of the frame over a WINDOW x WINDOW pixel neighbourhood; the views agree when these ranges overlap on every
   channel within TOLERANCE levels (a voxel on a colour border sees both colours in every window and agrees);
4. carves the voxels whose views disagree, at least MIN_VIEWS of them seeing it.

It stops when a pass carves nothing, or after ``passes``. Uniformly coloured concavities, and real frames whose
views disagree (lighting, generation artefacts), are its limits; it is off unless asked for (``--refine``).
"""
from __future__ import annotations

import numpy as np

from .cameras import Cameras
from .carve import Grid
from .deps import require

WINDOW = 3
TOLERANCE = 24           # levels (0..255)
MIN_FACING = 0.2
MIN_VIEWS = 2
DEFAULT_PASSES = 8
ZBUFFER_VOXELS = 2.0     # depth-buffer cells and depth tolerance, in voxels (no gaps to see through)


def _surface(field: np.ndarray) -> np.ndarray:
    """(M, 3) indices of inside voxels with an outside 6-neighbour."""
    inside = field < 0
    outside = ~inside
    border = np.zeros_like(inside)
    for axis in range(3):
        for shift in (1, -1):
            border |= np.roll(outside, shift, axis=axis)
    return np.argwhere(inside & border)


def refine_by_colour(field: np.ndarray, grid: Grid, frames: np.ndarray, masks: np.ndarray, cameras: Cameras,
                     passes: int = DEFAULT_PASSES) -> int:
    """Carve colour-inconsistent surface voxels from ``field`` in place (module docstring); returns how many."""
    ndimage = require("scipy.ndimage")
    size = (WINDOW, WINDOW, 1)
    low = np.stack([ndimage.minimum_filter(f, size=size) for f in frames]).astype(np.int16)    # (T, H, W, 3)
    high = np.stack([ndimage.maximum_filter(f, size=size) for f in frames]).astype(np.int16)
    t, h, w = masks.shape
    carved = 0
    for _ in range(int(passes)):
        idx = _surface(field)
        if idx.size == 0:
            break
        points = grid.points(idx.astype(np.float32))
        # outward normal: the field grows outwards; central differences, clamped at the grid's edge
        grad = np.stack([field[tuple(np.clip(idx + e, 0, grid.n - 1).T)] -
                         field[tuple(np.clip(idx - e, 0, grid.n - 1).T)] for e in np.eye(3, dtype=int)], axis=1)
        normals = grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)
        lo = np.full((len(idx), 3), -np.inf, dtype=np.float32)       # the overlap of the views' ranges
        hi = np.full((len(idx), 3), np.inf, dtype=np.float32)
        seen = np.zeros(len(idx), dtype=np.int32)
        for k in range(t):
            cols, rows, depth = cameras.project_view(k, points)
            toward = cameras.centres[k] - points
            facing = np.einsum("nc,nc->n", normals, toward / np.linalg.norm(toward, axis=1, keepdims=True))
            ok = (depth > 0) & (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h) & (facing > MIN_FACING)
            ci, ri = cols.astype(np.int32).clip(0, w - 1), rows.astype(np.int32).clip(0, h - 1)
            ok &= masks[k, ri, ci]
            # depth buffer of the surface voxels (voxels behind others are hidden)
            cell = max(1.0, ZBUFFER_VOXELS * grid.step * cameras.focal_px / float(np.median(depth)))
            nx = int(w / cell) + 1
            key = ((rows / cell).astype(np.int64).clip(0, int(h / cell)) * nx
                   + (cols / cell).astype(np.int64).clip(0, nx - 1))
            front = np.full(int(key.max()) + 1, np.inf, dtype=np.float32)
            np.minimum.at(front, key[ok], depth[ok])
            ok &= depth <= front[key] + ZBUFFER_VOXELS * grid.step
            ok &= (high[k, ri, ci] - low[k, ri, ci]).max(axis=1) <= TOLERANCE      # a plain patch, no border
            lo[ok] = np.maximum(lo[ok], low[k, ri[ok], ci[ok]])
            hi[ok] = np.minimum(hi[ok], high[k, ri[ok], ci[ok]])
            seen += ok
        disagree = (seen >= MIN_VIEWS) & (lo > hi + TOLERANCE).any(axis=1)
        if not disagree.any():
            break
        field[tuple(idx[disagree].T)] = 0.5 * grid.step
        carved += int(disagree.sum())
    return carved


__all__ = ["DEFAULT_PASSES", "refine_by_colour"]
