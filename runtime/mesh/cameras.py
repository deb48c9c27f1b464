"""Pinhole cameras of an orbit, in the runtime's camera convention (runtime/orbits.py, CAMERA_CONVENTION):

* world y is up and the object sits at the origin;
* each camera is at distance d from the origin and looks at it;
* elevation e is the angle above the horizontal x-z plane;
* azimuth a = 0 is the input view, camera on +z looking towards -z; a grows counter-clockwise seen from above (a
  right-handed rotation about +y), so a = 90 deg puts the camera on +x:

      centre(e, a) = d * (cos e sin a, sin e, cos e cos a)

* image axes: column to the right (+x for a = 0), row downwards; square pixels, principal point at the image centre;
  ``fov`` is the vertical field of view, so the focal length in pixels is ``f = (H / 2) / tan(fov / 2)``.

A frame recorded in the mirrored convention (``camera_convention = "y_up_cw"``: azimuth clockwise from above) is
read by negating its azimuths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import OrbitError
from ..orbits import CAMERA_CONVENTION, Orbit

DEFAULT_DISTANCE = 2.0
# Vertical field of view. The official code sets none; we found no statement of the training renders' value in the
# sources we could read (generative-models 0ad7de9, the SV3D README). 33.8 deg is the value community SV3D scripts
# use (e.g. chenguolin/sv3d-diffusers, construct_camera(..., radius=2, fov=33.8)); it is a default, not a fact.
DEFAULT_FOV_DEG = 33.8
# camera_convention value -> sign applied to recorded azimuths to get ours
AZIMUTH_SIGN = {CAMERA_CONVENTION: 1.0, "y_up_cw": -1.0}


@dataclass(frozen=True)
class Cameras:
    """T look-at pinhole cameras. centres (T, 3); rotations (T, 3, 3) whose rows are the camera's right, up and
    forward axes in world coordinates (world -> camera: ``R @ (p - c)``); focal length in pixels; image size."""
    centres: np.ndarray
    rotations: np.ndarray
    focal_px: float
    height: int
    width: int

    @property
    def count(self) -> int:
        return int(self.centres.shape[0])

    def project(self, points: np.ndarray):
        """points (N, 3) world -> (cols, rows, depth), each (T, N) float32; see project_view."""
        per_view = [self.project_view(k, points) for k in range(self.count)]
        return tuple(np.stack([v[i] for v in per_view]) for i in range(3))

    def project_view(self, k: int, points: np.ndarray):
        """points (N, 3) world -> (cols, rows, depth) in camera k, each (N,) float32; pixel centres at j + 0.5;
        depth is the distance along the camera's forward axis (> 0 in front of it)."""
        p = np.asarray(points, dtype=np.float32)
        cam = (p - self.centres[k].astype(np.float32)) @ self.rotations[k].T.astype(np.float32)  # (N, 3) r, u, f
        depth = cam[:, 2]
        scale = self.focal_px / np.maximum(depth, 1e-6)
        return 0.5 * self.width + cam[:, 0] * scale, 0.5 * self.height - cam[:, 1] * scale, depth

    def view_directions(self, points: np.ndarray) -> np.ndarray:
        """(T, N, 3) unit vectors from each point towards each camera centre."""
        d = self.centres[:, None, :] - np.asarray(points, dtype=np.float64)[None]
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def inscribed_radius(self) -> float:
        """Radius of the largest origin-centred sphere that every view sees whole (the reconstruction volume):
        d * sin(half the smaller field of view) for the closest camera."""
        half = math.atan(0.5 * min(self.height, self.width) / self.focal_px)
        return float(np.linalg.norm(self.centres, axis=1).min() * math.sin(half))


def focal_from_fov(fov_deg: float, height: int) -> float:
    """Focal length in pixels for a vertical field of view: (H / 2) / tan(fov / 2)."""
    if not 0.0 < fov_deg < 180.0:
        raise OrbitError("invalid field of view", expected="degrees in (0, 180)", got=fov_deg)
    return 0.5 * height / math.tan(math.radians(fov_deg) / 2.0)


def look_at(elevations_deg: Sequence[float], azimuths_deg: Sequence[float], distance: float):
    """(centres (T, 3), rotations (T, 3, 3)) of cameras on the orbit, each looking at the origin with world y up.

    forward = -centre / |centre|; right = forward x y (normalised); up = right x forward. At |elevation| = 90 deg
    forward is parallel to y and the right axis is taken as the azimuth's own (cos a, 0, -sin a), its limit.
    """
    if not (math.isfinite(distance) and distance > 0):
        raise OrbitError("invalid camera distance", expected="a positive number", got=distance)
    e = np.radians(np.asarray(elevations_deg, dtype=np.float64))
    a = np.radians(np.asarray(azimuths_deg, dtype=np.float64))
    centres = distance * np.stack([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)], axis=1)   # (T, 3)
    forward = -centres / distance
    right = np.stack([np.cos(a), np.zeros_like(a), -np.sin(a)], axis=1)        # = forward x y / |...| for |e| < 90
    up = np.cross(right, forward)
    return centres, np.stack([right, up, forward], axis=1)


def orbit_cameras(orbit: Orbit, height: int, width: int, *, fov_deg: float = DEFAULT_FOV_DEG,
                  distance: float = DEFAULT_DISTANCE, convention: str = CAMERA_CONVENTION) -> Cameras:
    """The cameras of an orbit whose angles are meant in ``convention`` (see AZIMUTH_SIGN)."""
    if convention not in AZIMUTH_SIGN:
        raise OrbitError("unknown camera_convention", expected=f"one of {sorted(AZIMUTH_SIGN)}", got=repr(convention))
    azimuths = AZIMUTH_SIGN[convention] * np.asarray(orbit.azimuths_deg, dtype=np.float64)
    centres, rotations = look_at(orbit.elevations_deg, azimuths, distance)
    return Cameras(centres, rotations, focal_from_fov(fov_deg, height), int(height), int(width))


__all__ = ["AZIMUTH_SIGN", "Cameras", "DEFAULT_DISTANCE", "DEFAULT_FOV_DEG", "focal_from_fov", "look_at",
           "orbit_cameras"]
