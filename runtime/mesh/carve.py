"""Visual hull on a voxel grid, as a signed distance field (numpy + scipy's distance transform).

For each view the object mask gets a signed 2-D distance map in pixels (negative inside the silhouette, positive
outside, 0 on its edge). A point's distance to view k's silhouette cone is about that map at its projection times
depth / focal length (pixels -> world units at the point's depth). The visual hull is the intersection of the
cones, so its signed distance is bounded by the largest of the per-view distances:

    hull(p) = max_k  sdist_k(project_k(p)) * depth_k(p) / f

which is negative exactly inside every silhouette. Marching cubes at level 0 then finds the hull surface with
sub-voxel precision, with no blur and no staircase.

Work is coarse to fine: the field is evaluated on a grid of ``coarse`` voxels a side, upsampled, and evaluated
exactly again only in the narrow band where the coarse field is within two coarse voxels of the surface; far from
it only the sign matters to marching cubes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from ..errors import SV3DError
from .cameras import Cameras
from .deps import require
from .images import bilinear

BAND_VOXELS = 2.0          # fine voxels are re-evaluated where |coarse field| < BAND_VOXELS coarse voxel sizes
COARSE_FACTOR = 4          # coarse grid = resolution / COARSE_FACTOR voxels a side
CHUNK = 1 << 18            # voxels per projection batch: ~10 temporaries of 1 MiB each
CROP_MARGIN = 16           # pixels kept around each mask's bounding box for the distance transform
MIN_PIECE_SHARE = 0.01     # inside regions with fewer voxels than this share of the largest are dropped (specks)


class EmptyHullError(SV3DError):
    """The silhouettes have no volume in common (no foreground, or cameras that do not fit the frames)."""


@dataclass(frozen=True)
class Silhouette:
    """distance[i, j]: signed pixel distance at the frame's pixel (row0 + i, col0 + j)."""
    distance: np.ndarray
    row0: int
    col0: int


@dataclass(frozen=True)
class Grid:
    """A cube of ``n`` voxel centres a side from ``origin`` (the -x,-y,-z corner) with spacing ``step``;
    field[i, j, k] belongs to the point origin + (i, j, k) * step, i along x, j along y, k along z."""
    n: int
    origin: float
    step: float

    def points(self, index: np.ndarray) -> np.ndarray:
        """(M, 3) world points of (M, 3) voxel indices."""
        return (self.origin + index * self.step).astype(np.float32)


def silhouette_distance(mask: np.ndarray) -> Silhouette:
    """The signed distance in pixels to the mask's edge, negative inside, on the mask's bounding box grown by
    CROP_MARGIN pixels and one background pixel more on every side (the object is assumed to lie inside the frame,
    so a mask that covers the whole frame still has an edge). Beyond the crop, lookups add the distance to it."""
    distance_transform_edt = require("scipy.ndimage").distance_transform_edt
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:                                  # no object: everything outside, far
        return Silhouette(np.full((2, 2), float(h + w), np.float32), 0, 0)
    r0, r1 = max(0, rows[0] - CROP_MARGIN), min(h, rows[-1] + 1 + CROP_MARGIN)
    c0, c1 = max(0, cols[0] - CROP_MARGIN), min(w, cols[-1] + 1 + CROP_MARGIN)
    padded = np.pad(mask[r0:r1, c0:c1], 1)
    inside = distance_transform_edt(padded)            # to the nearest background pixel, on object pixels
    outside = distance_transform_edt(~padded)          # to the nearest object pixel, on background pixels
    # pixel centres lie half a pixel from the edge between them
    return Silhouette(np.where(padded, 0.5 - inside, outside - 0.5).astype(np.float32), r0 - 1, c0 - 1)


def hull_at(points: np.ndarray, silhouettes: List[Silhouette], cameras: Cameras) -> np.ndarray:
    """(M,) hull signed distance (world units) at (M, 3) points, the largest over the views of the silhouette
    distance at the point's projection times depth / f. A point behind a camera counts as outside."""
    out = np.full(points.shape[0], -np.inf, dtype=np.float32)
    for s in range(0, points.shape[0], CHUNK):
        p = points[s:s + CHUNK]
        best = out[s:s + CHUNK]
        for k, sil in enumerate(silhouettes):
            cols, rows, depth = cameras.project_view(k, p)
            hp, wp = sil.distance.shape
            c, r = cols - sil.col0, rows - sil.row0               # into the crop's pixel grid
            beyond = np.maximum(np.maximum(-c, c - wp), np.maximum(-r, r - hp)).clip(min=0.0)
            d = (bilinear(sil.distance, c, r) + beyond) * np.maximum(depth, 1e-6) / cameras.focal_px
            d[depth <= 0] = np.inf
            np.maximum(best, d, out=best)
    return out


def hull_field(masks: np.ndarray, cameras: Cameras, resolution: int, radius: float):
    """(field (n, n, n) float32, Grid) of the visual hull inside the cube [-radius, radius]^3.

    masks (T, H, W) bool. The outermost layer of voxels is forced outside so the surface is closed.
    Raises EmptyHullError when no voxel is inside every silhouette.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] != cameras.count:
        raise SV3DError("one mask per camera", expected=cameras.count, got=masks.shape[0])
    distances = [silhouette_distance(m) for m in masks]
    n = int(resolution)
    grid = Grid(n, -radius, 2.0 * radius / (n - 1))
    nc = max(8, n // COARSE_FACTOR)
    coarse = Grid(nc, -radius, 2.0 * radius / (nc - 1))
    idx = np.indices((nc, nc, nc), dtype=np.float32).reshape(3, -1).T
    coarse_field = hull_at(coarse.points(idx), distances, cameras).reshape(nc, nc, nc)

    # upsample by nearest coarse voxel: off by at most half a coarse diagonal (0.87 coarse steps); the field is
    # about 1-Lipschitz (a distance), so outside the band below the sign is right; inside it the value is recomputed
    near = np.rint(np.arange(n) * (nc - 1) / (n - 1)).astype(np.intp)
    field = coarse_field[np.ix_(near, near, near)]
    band = np.argwhere(np.abs(field) < BAND_VOXELS * coarse.step)
    field[tuple(band.T)] = hull_at(grid.points(band.astype(np.float32)), distances, cameras)
    for axis_ in range(3):                                        # the boundary layer on every side
        sl = [slice(None)] * 3
        for end in (0, -1):
            sl[axis_] = end
            field[tuple(sl)] = np.maximum(field[tuple(sl)], grid.step)
    _clean(field, grid.step)
    if not (field < 0).any():
        raise EmptyHullError("the views' silhouettes have no volume in common",
                             expected="an object on a white background in every frame, and matching cameras",
                             got=f"{int(masks.any(axis=(1, 2)).sum())} of {masks.shape[0]} frames with foreground",
                             hint="check --fov / --distance / --elevation, or try --masks rembg")
    return field, grid


def _clean(field: np.ndarray, step: float) -> None:
    """In place: mark inside pieces (6-connected) smaller than MIN_PIECE_SHARE of the largest as outside, and fill
    outside pockets that do not reach the grid's boundary. A visual hull has no enclosed pockets (a point outside
    it projects outside some silhouette, and so does the whole ray from that camera through it), so such pockets
    are sampling artefacts; without this they become small inner surfaces."""
    label = require("scipy.ndimage").label
    labels, count = label(field < 0)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        small = np.flatnonzero(sizes < MIN_PIECE_SHARE * sizes.max()) + 1
        if small.size:
            field[np.isin(labels, small)] = step
    labels, count = label(field >= 0)
    if count > 1:
        border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                           labels[:, :, [0, -1]].ravel()]))
        pockets = np.setdiff1d(np.arange(1, count + 1), border)
        if pockets.size:
            field[np.isin(labels, pockets)] = -step


__all__ = ["EmptyHullError", "Grid", "Silhouette", "hull_at", "hull_field", "silhouette_distance"]
