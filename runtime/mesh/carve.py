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

import numpy as np

from ..errors import SV3DError
from .cameras import Cameras
from .deps import require

BAND_VOXELS = 2.0          # fine voxels are re-evaluated where |coarse field| < BAND_VOXELS coarse voxel sizes
COARSE_FACTOR = 4          # coarse grid = resolution / COARSE_FACTOR voxels a side
CHUNK = 1 << 20            # voxels per projection batch (bounds the (T, chunk) temporaries: ~100 MB at T = 21)


class EmptyHullError(SV3DError):
    """The silhouettes have no volume in common (no foreground, or cameras that do not fit the frames)."""


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


def silhouette_distance(mask: np.ndarray) -> np.ndarray:
    """(H + 2, W + 2) float32 signed distance in pixels to the mask's edge, negative inside. The image is padded
    with one background pixel on every side (the object is assumed to lie inside the frame), so a mask that
    covers the whole frame still has an edge."""
    distance_transform_edt = require("scipy.ndimage").distance_transform_edt
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    inside = distance_transform_edt(padded)            # to the nearest background pixel, on object pixels
    outside = distance_transform_edt(~padded)          # to the nearest object pixel, on background pixels
    # pixel centres lie half a pixel from the edge between them
    return np.where(padded, 0.5 - inside, outside - 0.5).astype(np.float32)


def hull_at(points: np.ndarray, distances: np.ndarray, cameras: Cameras) -> np.ndarray:
    """(M,) hull signed distance (world units) at (M, 3) points; distances (T, H + 2, W + 2) from
    silhouette_distance. A point behind a camera counts as outside."""
    out = np.empty(points.shape[0], dtype=np.float32)
    t, hp, wp = distances.shape
    for s in range(0, points.shape[0], CHUNK):
        cols, rows, depth = cameras.project(points[s:s + CHUNK])          # (T, m) each
        # +1: the padding; positions beyond the padded image add their distance to it
        c, r = cols + 1.0, rows + 1.0
        ci = np.clip(np.floor(c).astype(np.int32), 0, wp - 1)
        ri = np.clip(np.floor(r).astype(np.int32), 0, hp - 1)
        beyond = np.maximum(np.maximum(-c, c - wp), np.maximum(-r, r - hp)).clip(min=0.0)
        d = distances[np.arange(t)[:, None], ri, ci] + beyond                 # (T, m) pixels
        world = d * np.maximum(depth, 1e-6) / cameras.focal_px
        world[depth <= 0] = np.inf
        out[s:s + CHUNK] = world.max(axis=0)
    return out


def hull_field(masks: np.ndarray, cameras: Cameras, resolution: int, radius: float):
    """(field (n, n, n) float32, Grid) of the visual hull inside the cube [-radius, radius]^3.

    masks (T, H, W) bool. The outermost layer of voxels is forced outside so the surface is closed.
    Raises EmptyHullError when no voxel is inside every silhouette.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] != cameras.count:
        raise SV3DError("one mask per camera", expected=cameras.count, got=masks.shape[0])
    distances = np.stack([silhouette_distance(m) for m in masks])
    n = int(resolution)
    grid = Grid(n, -radius, 2.0 * radius / (n - 1))
    nc = max(8, n // COARSE_FACTOR)
    coarse = Grid(nc, -radius, 2.0 * radius / (nc - 1))
    idx = np.indices((nc, nc, nc), dtype=np.float32).reshape(3, -1).T
    coarse_field = hull_at(coarse.points(idx), distances, cameras).reshape(nc, nc, nc)

    # upsample: trilinear in index space (fine index i sits at coarse index i * (nc - 1) / (n - 1))
    map_coordinates = require("scipy.ndimage").map_coordinates
    axis = np.arange(n, dtype=np.float32) * (nc - 1) / (n - 1)
    field = np.empty((n, n, n), dtype=np.float32)
    finite = np.nan_to_num(coarse_field, posinf=4.0 * radius)
    yy, zz = np.meshgrid(axis, axis, indexing="ij")
    for i in range(n):                                           # slab by slab: bounded temporaries
        field[i] = map_coordinates(finite, [np.full_like(yy, axis[i]), yy, zz], order=1, mode="nearest")
    band = np.argwhere(np.abs(field) < BAND_VOXELS * coarse.step)
    field[tuple(band.T)] = hull_at(grid.points(band.astype(np.float32)), distances, cameras)
    for axis_ in range(3):                                        # the boundary layer on every side
        sl = [slice(None)] * 3
        for end in (0, -1):
            sl[axis_] = end
            field[tuple(sl)] = np.maximum(field[tuple(sl)], grid.step)
    if not (field < 0).any():
        raise EmptyHullError("the views' silhouettes have no volume in common",
                             expected="an object on a white background in every frame, and matching cameras",
                             got=f"{int(masks.any(axis=(1, 2)).sum())} of {masks.shape[0]} frames with foreground",
                             hint="check --fov / --distance / --elevation, or try --masks rembg")
    return field, grid


__all__ = ["EmptyHullError", "Grid", "hull_at", "hull_field", "silhouette_distance"]
