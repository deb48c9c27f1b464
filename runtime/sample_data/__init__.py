"""A small bundled input for demos and tests: ``object.png``, a 128 x 128 RGBA image of a shaded toy (a sphere on
a box) on a transparent background, drawn by ``draw_sample`` (no external assets). Regenerate with
``python -m runtime.sample_data``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_NAME = "object.png"
SAMPLE_SIZE = 128
_LIGHT = np.array([-0.5, -0.6, 0.62])          # direction towards the light (x right, y down, z to the viewer)
_AMBIENT = 0.25


def sample_image_path() -> Path:
    """Path of the bundled RGBA sample image."""
    return Path(__file__).resolve().parent / SAMPLE_NAME


def draw_sample(size: int = SAMPLE_SIZE) -> np.ndarray:
    """(size, size, 4) uint8: a Lambert-shaded orange sphere resting on a blue box, alpha = object mask."""
    light = _LIGHT / np.linalg.norm(_LIGHT)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    rgb = np.zeros((size, size, 3))
    alpha = np.zeros((size, size))

    # box: front face and top face in a simple oblique projection
    x0, x1, y0, y1, depth = 0.22 * size, 0.78 * size, 0.62 * size, 0.90 * size, 0.10 * size
    front = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    top = (yy >= y0 - depth) & (yy < y0) & (xx >= x0 + (y0 - yy)) & (xx < x1 + (y0 - yy))
    blue = np.array([0.25, 0.45, 0.85])
    rgb[front] = blue * (_AMBIENT + (1 - _AMBIENT) * max(light @ np.array([0, 0, 1.0]), 0))
    rgb[top] = blue * (_AMBIENT + (1 - _AMBIENT) * max(light @ np.array([0, -1.0, 0]) * 0.5 + 0.5, 0))
    alpha[front | top] = 1.0

    # sphere on top of the box
    cx, cy, r = 0.5 * size, 0.36 * size, 0.26 * size
    dx, dy = (xx - cx) / r, (yy - cy) / r
    inside = dx * dx + dy * dy < 1.0
    nz = np.sqrt(np.clip(1.0 - dx * dx - dy * dy, 0.0, 1.0))
    lambert = np.clip(dx * light[0] + dy * light[1] + nz * light[2], 0.0, 1.0)
    shade = _AMBIENT + (1 - _AMBIENT) * lambert
    rgb[inside] = np.array([0.95, 0.55, 0.15])[None, :] * shade[inside][:, None]
    alpha[inside] = 1.0

    out = np.concatenate([rgb, alpha[..., None]], axis=-1)
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def write_sample(path=None) -> Path:
    from PIL import Image

    path = Path(path) if path is not None else sample_image_path()
    Image.fromarray(draw_sample()).save(path, format="PNG", optimize=True)
    return path

