"""Synthetic orbits of analytic shapes whose truth is known: the input of the mesh tests and benchmark.

A small numpy sphere tracer renders a shape's signed distance function from the cameras of an orbit, on a white
background, unlit (each pixel is the albedo of the region it hits, so region colours can be checked exactly).
The cameras are built here from the words of the camera convention (README "Mesh"), independently of
runtime/mesh/cameras.py, so a mistake there shows as a bad reconstruction:

    centre = d (cos e sin a, sin e, cos e cos a); forward = -centre / d; right = forward x (0, 1, 0) normalised;
    up = right x forward; the ray through pixel (row i, column j) has direction
    forward + ((j + 0.5 - W / 2) right - (i + 0.5 - H / 2) up) / f,  f = (H / 2) / tan(fov / 2).

    python -m benchmarks.mesh_scenes union OUT [--resolution 576]      # a folder laid out like a result
    python -m runtime.mesh OUT                                         # -> OUT/mesh
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np

Array = np.ndarray
MAX_STEPS = 128
HIT_EPS = 1e-4
FAR = 4.0


@dataclass(frozen=True)
class Shape:
    """sdf (N, 3) -> (N,) signed distance; region (N, 3) -> (N,) int region index of surface points;
    colours (R, 3) uint8 albedo per region; size: the largest side of the shape's bounding box; orbit: (base
    elevation, amplitude) in degrees of the orbit it is seen from: ``base + amplitude * sin(2 pi k / T)``, the
    runtime's dynamic preset (amplitude 0: the default constant-elevation orbit)."""
    name: str
    sdf: Callable[[Array], Array]
    region: Callable[[Array], Array]
    colours: Array
    size: float
    orbit: Tuple[float, float]


def _sphere(p, centre, r):
    return np.linalg.norm(p - np.asarray(centre), axis=1) - r


def _box(p, centre, half):
    q = np.abs(p - np.asarray(centre)) - np.asarray(half)
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def _torus(p, major, minor):
    ring = np.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - major          # axis y: lies in the x-z plane
    return np.sqrt(ring ** 2 + p[:, 1] ** 2) - minor


RED, BLUE, GREEN, ORANGE, PURPLE, TEAL = ((200, 40, 40), (40, 70, 200), (40, 160, 60), (230, 140, 20),
                                          (130, 50, 160), (20, 150, 150))
UNION_SPHERE = ((-0.12, 0.0, -0.04), 0.26)
UNION_BOX = ((0.17, -0.06, 0.14), (0.15, 0.13, 0.12))
BOX_HALF = (0.30, 0.20, 0.24)
TORUS = (0.34, 0.10)
# Orbits (base, amplitude). A visual hull cannot recover a flat face no camera sees edge-on, nor an underside no
# camera sees: from the constant 10 deg orbit the box gets a shallow roof and a keel (1.1 % -> 2.0 % mean |SDF|,
# coverage 82 %), so the box and the union are seen from sv3d_p's dynamic orbit (10 +- 20 deg, the runtime's
# preset), and the torus from a raised orbit that swings from 60 deg above to 20 deg below (its hole is visible
# only beyond asin(minor / major) = 17 deg, and its underside only from below).
DYNAMIC = (10.0, 20.0)
RAISED = (20.0, 40.0)

SHAPES: Dict[str, Shape] = {
    "sphere": Shape("sphere", lambda p: _sphere(p, (0, 0, 0), 0.35),
                    lambda p: (p[:, 1] < 0).astype(int), np.array([RED, BLUE], np.uint8), 0.70, (10.0, 0.0)),
    "box": Shape("box", lambda p: _box(p, (0, 0, 0), BOX_HALF),
                 # the face a point lies on: the axis where it is closest to the box's half size
                 lambda p: np.argmax(np.abs(p) / np.asarray(BOX_HALF), axis=1),
                 np.array([GREEN, ORANGE, PURPLE], np.uint8), 2 * max(BOX_HALF), DYNAMIC),
    "union": Shape("union", lambda p: np.minimum(_sphere(p, *UNION_SPHERE), _box(p, *UNION_BOX)),
                   lambda p: (_box(p, *UNION_BOX) < _sphere(p, *UNION_SPHERE)).astype(int),
                   np.array([RED, BLUE], np.uint8),
                   # x from the sphere's left to the box's right
                   UNION_BOX[0][0] + UNION_BOX[1][0] - (UNION_SPHERE[0][0] - UNION_SPHERE[1]), DYNAMIC),
    "torus": Shape("torus", lambda p: _torus(p, *TORUS), lambda p: (p[:, 0] < 0).astype(int),
                   np.array([TEAL, ORANGE], np.uint8), 2 * (TORUS[0] + TORUS[1]), RAISED),
}


def camera_rays(elevation_deg: float, azimuth_deg: float, size: int, fov_deg: float, distance: float):
    """(origin (3,), directions (size * size, 3)) of one camera, rows first (module docstring)."""
    e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
    centre = distance * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
    forward = -centre / distance
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    i, j = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    d = forward + ((j - size / 2).reshape(-1, 1) * right - (i - size / 2).reshape(-1, 1) * up) / f
    return centre, d / np.linalg.norm(d, axis=1, keepdims=True)


def render(shape: Shape, elevation_deg: float, azimuth_deg: float, size: int, fov_deg: float = 33.8,
           distance: float = 2.0) -> Array:
    """(size, size, 3) uint8: the shape's region albedo where a ray hits it, white elsewhere."""
    origin, dirs = camera_rays(elevation_deg, azimuth_deg, size, fov_deg, distance)
    t = np.zeros(len(dirs))
    active = np.arange(len(dirs))
    hit = np.zeros(len(dirs), dtype=bool)
    for _ in range(MAX_STEPS):
        if active.size == 0:
            break
        d = shape.sdf(origin + t[active, None] * dirs[active])
        t[active] += d
        done = d < HIT_EPS
        hit[active[done]] = True
        active = active[~done & (t[active] < FAR)]
    hit[active] = True          # still marching after MAX_STEPS: grazing the surface (a concave seam), not a miss
    image = np.full((len(dirs), 3), 255, dtype=np.uint8)
    points = origin + t[hit, None] * dirs[hit]
    image[hit] = shape.colours[shape.region(points)]
    return image.reshape(size, size, 3)


def orbit_angles(shape: Shape, frames: int = 21) -> Tuple[Array, Array]:
    """(elevations, azimuths) in degrees of the orbit the shape is seen from (Shape.orbit)."""
    from runtime.orbits import dynamic_orbit

    orbit = dynamic_orbit(frames, *shape.orbit)
    return np.array(orbit.elevations_deg), np.array(orbit.azimuths_deg)


def render_orbit(shape: Shape, size: int, elevations=None, azimuths=None, **camera) -> Tuple[Array, Array, Array]:
    """(frames (T, size, size, 3) uint8, elevations (T,), azimuths (T,)); angles default to orbit_angles."""
    el, az = orbit_angles(shape)
    el = el if elevations is None else np.broadcast_to(np.asarray(elevations, float), az.shape)
    az = az if azimuths is None else np.asarray(azimuths, float)
    return np.stack([render(shape, e, a, size, **camera) for e, a in zip(el, az)]), el, az


def surface_samples(shape: Shape, count: int, seed: int = 0) -> Array:
    """(≈count, 3) points on the surface: uniform in a cube, pushed onto the surface along the SDF gradient,
    kept where they landed on it. Roughly uniform over area for the shapes here."""
    rng = np.random.default_rng(seed)
    half = 0.75 * shape.size
    p = rng.uniform(-half, half, size=(count * 20, 3))
    near = np.abs(shape.sdf(p)) < 0.08 * shape.size
    p = p[near][:count * 4]
    for _ in range(12):                                     # Newton steps along the numerical gradient
        h = 1e-4
        g = np.stack([(shape.sdf(p + h * e) - shape.sdf(p - h * e)) / (2 * h) for e in np.eye(3)], axis=1)
        p = p - shape.sdf(p)[:, None] * g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True) ** 2, 1e-12)
    p = p[np.abs(shape.sdf(p)) < 1e-5]
    # thin out to roughly uniform density: keep one point per small cell
    cell = shape.size / math.sqrt(count) / 2
    _, first = np.unique(np.floor(p / cell).astype(np.int64), axis=0, return_index=True)
    return p[np.sort(first)][:count]


# The settings of tests/test_mesh.py (small, so the default test tier stays fast; the bounds hold there too)
TEST_SIZE, TEST_RESOLUTION, TEST_FACES = 128, 96, 20_000
TEST_REFINE = 8            # colour-consistency passes (runtime/mesh/refine.py): the union's crease needs them
SDF_BOUND = 0.02           # the bounds, as shares of the shape's size
COVERAGE_DISTANCE = 0.03
COVERAGE_BOUND = 0.95
BORDER_SAMPLES = 12        # about 2 % of the size around a vertex, with 20k samples
COLOUR_LEVELS = 40         # a vertex's colour is "recovered" when every channel is within this many levels


def score(shape: Shape, vertices: Array, colours: Array, samples: int = 20000) -> dict:
    """How well a mesh recovers the shape:
    sdf: mean |SDF| of the vertices / size; coverage: share of surface samples within COVERAGE_DISTANCE * size of
    a vertex; colour_median_error[r]: per region, the largest channel error of the median colour of the vertices
    on that region (levels); colour_recovered[r]: share of those vertices within COLOUR_LEVELS on every channel.
    The colour figures count the vertices within COVERAGE_DISTANCE of the true surface (the colour of hull excess
    is whatever the views show behind it, not a region's) whose BORDER_SAMPLES nearest surface samples all lie in
    their region (at a border, colours blend over a few pixels)."""
    from scipy.spatial import cKDTree

    vertices = np.asarray(vertices, dtype=np.float64)
    truth_points = surface_samples(shape, samples)
    dist, _ = cKDTree(vertices).query(truth_points)
    region = shape.region(vertices)
    # vertices on the true surface, away from region borders: the surface samples near them share their region
    near_dist, near = cKDTree(truth_points).query(vertices, k=BORDER_SAMPLES)
    inside_region = (shape.region(truth_points)[near] == region[:, None]).all(axis=1)
    judged = inside_region & (near_dist[:, 0] <= COVERAGE_DISTANCE * shape.size)
    median_error, recovered = [], []
    for r, truth in enumerate(shape.colours.astype(int)):
        c = np.asarray(colours)[(region == r) & judged].astype(int)
        median_error.append(int(np.abs(np.median(c, axis=0) - truth).max()) if len(c) else 255)
        recovered.append(float((np.abs(c - truth).max(axis=1) <= COLOUR_LEVELS).mean()) if len(c) else 0.0)
    return {"sdf": float(np.abs(shape.sdf(vertices)).mean() / shape.size),
            "coverage": float((dist <= COVERAGE_DISTANCE * shape.size).mean()),
            "colour_median_error": median_error, "colour_recovered": recovered}


def write_scene(shape: Shape, out: Path, size: int) -> Path:
    """A folder laid out like a ``python -m runtime`` result: frames/NNN.png + info.json with the orbit."""
    from runtime.orbits import CAMERA_CONVENTION
    from runtime.outputs import write_frames

    frames, el, az = render_orbit(shape, size)
    out.mkdir(parents=True, exist_ok=False)
    write_frames(out / "frames", frames)
    info = {"synthetic_shape": shape.name, "num_frames": len(frames), "resolution": size,
            "orbit": {"elevations_deg": el.tolist(), "azimuths_deg": az.tolist(), "source": "synthetic render"},
            "camera_convention": CAMERA_CONVENTION}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mesh_scenes", description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out", type=Path, help="folder to create (must not exist)")
    ap.add_argument("--resolution", type=int, default=576)
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists", file=sys.stderr)
        return 1
    print(write_scene(SHAPES[args.shape], args.out, args.resolution))
    return 0


if __name__ == "__main__":
    sys.exit(main())
