"""Frames + cameras -> a vertex-coloured mesh, stage by stage, each stage timed.

    masks (white background or rembg) -> visual hull field on a voxel grid (carve.py) -> optional colour-
    consistency carving (refine.py) -> marching cubes, Taubin smoothing, quadric decimation (surface.py) -> vertex
    colours from the most frontal unoccluded views (colour.py)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from ..errors import SV3DError
from .cameras import Cameras
from .carve import hull_field
from .colour import vertex_colours
from .refine import refine_by_colour
from .surface import SMOOTH_ITERATIONS, extract_surface
from .views import object_masks

DEFAULT_RESOLUTION = 160        # voxels a side: ~7 mm voxels for a unit-size object, enough for 50k faces
DEFAULT_FACES = 50_000
VOLUME_MARGIN = 1.0             # the carved cube's half side as a share of the radius every view sees whole


@dataclass
class Reconstruction:
    """vertices (V, 3) float64, faces (F, 3) int64, colours (V, 3) uint8, and seconds per stage."""
    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray
    seconds: Dict[str, float] = field(default_factory=dict)

    def to_trimesh(self):
        from .deps import require

        trimesh = require("trimesh")
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=self.colours, process=False)


def reconstruct(frames: np.ndarray, cameras: Cameras, *, masks: Optional[np.ndarray] = None,
                mask_mode: str = "white", resolution: int = DEFAULT_RESOLUTION, faces: int = DEFAULT_FACES,
                smooth: int = SMOOTH_ITERATIONS, refine_passes: int = 0,
                checkpoint: Callable[[], None] = lambda: None) -> Reconstruction:
    """A mesh of the object in ``frames`` (T, H, W, 3) uint8 seen by ``cameras``.

    masks: (T, H, W) bool, else computed with ``mask_mode``. resolution: voxels a side of the carved cube.
    faces: the most triangles kept. refine_passes: colour-consistency passes after carving (refine.py; 0 = off).
    checkpoint: called between stages (Ctrl-C handling).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise SV3DError("frames must be uint8 (T, H, W, 3)", got=f"{frames.dtype} {frames.shape}")
    if frames.shape[0] != cameras.count or frames.shape[1:3] != (cameras.height, cameras.width):
        raise SV3DError("frames and cameras disagree", expected=f"{cameras.count} frames of "
                        f"{cameras.height}x{cameras.width}", got=f"{frames.shape[0]} of "
                        f"{frames.shape[1]}x{frames.shape[2]}")
    seconds: Dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now
        checkpoint()

    if masks is None:
        masks = object_masks(frames, mask_mode)
    lap("masks")
    radius = VOLUME_MARGIN * cameras.inscribed_radius()
    hull, grid = hull_field(masks, cameras, resolution, radius)
    lap("carve")
    if refine_passes > 0:
        refine_by_colour(hull, grid, frames, masks, cameras, passes=refine_passes)
        lap("refine")
    mesh = extract_surface(hull, grid, faces, smooth)
    lap("surface")
    edge = float(mesh.edges_unique_length.mean())
    colours = vertex_colours(mesh.vertices, mesh.vertex_normals, frames, masks, cameras, edge)
    lap("colour")
    return Reconstruction(np.asarray(mesh.vertices), np.asarray(mesh.faces), colours, seconds)


__all__ = ["DEFAULT_FACES", "DEFAULT_RESOLUTION", "Reconstruction", "reconstruct"]
