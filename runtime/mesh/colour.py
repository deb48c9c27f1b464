"""Vertex colours from the views that see each vertex most frontally, without occlusion, blended where they agree.

For vertex v with outward normal n and view k (direction to the camera u_k):
* visible_k: in front of the camera, inside the frame and the object mask, facing it (n . u_k > 0), and not hidden:
  its depth is within ``OCCLUSION_EDGES`` mean edge lengths of the nearest vertex depth in its cell of a per-view
  depth buffer (cells ``ZBUFFER_EDGES`` projected edge lengths wide, so a surface has no holes in it);
* weight_k = (n . u_k) ** FRONTAL_POWER, over the ``BLEND_VIEWS`` best visible views;
* views whose colour differs from the most frontal one by more than ``AGREEMENT`` (RGB distance in [0, 1] units)
  are left out (a highlight, a view that sees past an edge), the rest averaged with their weights.
Vertices no view sees take the colour of the nearest vertex that has one.
"""
from __future__ import annotations

import numpy as np

from .cameras import Cameras
from .deps import require
from .images import bilinear

FRONTAL_POWER = 4.0
BLEND_VIEWS = 3
AGREEMENT = 0.15
OCCLUSION_EDGES = 2.0
ZBUFFER_EDGES = 2.0


def visibility(vertices: np.ndarray, normals: np.ndarray, masks: np.ndarray, cameras: Cameras,
               edge: float):
    """(visible (T, V) bool, cosine (T, V) float32 = n . u_k, cols, rows) -- see the module docstring."""
    cols, rows, depth = cameras.project(vertices)                                    # (T, V)
    cosine = np.einsum("tvc,vc->tv", cameras.view_directions(vertices), normals).astype(np.float32)
    t, h, w = masks.shape
    inside = (depth > 0) & (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    ci, ri = np.clip(cols, 0, w - 1).astype(np.int32), np.clip(rows, 0, h - 1).astype(np.int32)
    visible = inside & (cosine > 0) & masks[np.arange(t)[:, None], ri, ci]
    for k in range(t):
        # depth buffer on cells a few projected edges wide: the surface in front covers every cell it spans
        cell = max(1.0, ZBUFFER_EDGES * edge * cameras.focal_px / float(np.median(depth[k])))
        nx, ny = int(w / cell) + 2, int(h / cell) + 2
        cx = np.clip(cols[k] / cell, -1, nx - 2).astype(np.int64)
        cy = np.clip(rows[k] / cell, -1, ny - 2).astype(np.int64)
        key = (cy.clip(-1, None) + 1) * nx + (cx.clip(-1, None) + 1)
        front = np.full(int(key.max()) + 1, np.inf, dtype=np.float32)
        sel = inside[k]
        np.minimum.at(front, key[sel], depth[k][sel])
        visible[k] &= depth[k] <= front[key] + OCCLUSION_EDGES * edge
    return visible, cosine, cols, rows


def vertex_colours(vertices: np.ndarray, normals: np.ndarray, frames: np.ndarray, masks: np.ndarray,
                   cameras: Cameras, edge: float) -> np.ndarray:
    """(V, 3) uint8 colours of the vertices (module docstring). frames (T, H, W, 3) uint8, masks (T, H, W) bool,
    edge: the mesh's mean edge length (world units)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    visible, cosine, cols, rows = visibility(vertices, normals, masks, cameras, edge)
    t, v = visible.shape
    weight = np.where(visible, np.maximum(cosine, 0.0) ** FRONTAL_POWER, 0.0)        # (T, V)
    order = np.argsort(-weight, axis=0)[:BLEND_VIEWS]                                # (K, V) best views first
    best_w = np.take_along_axis(weight, order, axis=0)                               # (K, V)
    samples = np.zeros((BLEND_VIEWS, v, 3), dtype=np.float32)
    for j in range(BLEND_VIEWS):
        for k in range(t):
            sel = (order[j] == k) & (best_w[j] > 0)
            if sel.any():
                samples[j, sel] = bilinear(frames[k], cols[k, sel], rows[k, sel]) / 255.0
    agree = np.linalg.norm(samples - samples[:1], axis=-1) <= AGREEMENT               # (K, V); the best agrees
    w = np.where(agree, best_w, 0.0)[..., None]
    total = w.sum(axis=0)                                                            # (V, 1)
    colour = (w * samples).sum(axis=0) / np.maximum(total, 1e-12)
    seen = total[:, 0] > 0
    if seen.any() and not seen.all():
        tree = require("scipy.spatial").cKDTree(vertices[seen])
        colour[~seen] = colour[seen][tree.query(vertices[~seen])[1]]
    elif not seen.any():
        colour[:] = 0.5
    return np.clip(np.rint(colour * 255.0), 0, 255).astype(np.uint8)


__all__ = ["vertex_colours", "visibility"]
