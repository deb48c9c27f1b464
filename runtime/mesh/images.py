"""Sampling images at sub-pixel positions."""
from __future__ import annotations

import numpy as np


def bilinear(image: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Samples of an (H, W) or (H, W, C) image at pixel positions (pixel centres at k + 0.5), clamped to the
    image: (N,) or (N, C) float32. H and W must be at least 2."""
    h, w = image.shape[:2]
    x = np.clip(cols - 0.5, 0, w - 1)
    y = np.clip(rows - 0.5, 0, h - 1)
    x0, y0 = np.minimum(x.astype(np.int32), w - 2), np.minimum(y.astype(np.int32), h - 2)
    extra = (1,) * (image.ndim - 2)                      # broadcast the weights over the channels
    fx, fy = (x - x0).reshape(x.shape + extra), (y - y0).reshape(y.shape + extra)

    def at(yy, xx):
        return image[yy, xx].astype(np.float32)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


__all__ = ["bilinear"]
