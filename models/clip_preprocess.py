"""The CLIP input resize of SV3D as constant matrices (numpy only).

The official preprocessing (ENC:624-636; SV3D_REFERENCE.md §3.1) is
    kornia.geometry.resize(x, (224, 224), interpolation="bicubic", align_corners=True, antialias=True)
    x = (x + 1) / 2;  x = (x - mean) / std
Kornia's resize is separable and linear: per axis, an optional Gaussian blur (antialias) followed by PyTorch's
bicubic interpolation. So per axis it is one (out, in) matrix M = B @ G, and the 2D resize of a channel X (H, W)
is M_h @ X @ M_w^T -- two matmuls with constant matrices, which export everywhere.

Kornia facts used here (kornia/geometry/transform/affwarp.py `resize`, kornia/filters/gaussian.py,
kornia/filters/kernels.py `gaussian`; SV3D_REFERENCE.md §3.1 checks the formula against kornia 0.9.0 / 0.6.9):
- antialias is applied when max(in_h/out_h, in_w/out_w) > 1, to *both* axes with
  sigma = max((factor - 1) / 2, 0.001) and kernel size int(max(4 sigma, 3)), made odd (+1 when even);
  an axis that is not down-sampled therefore gets sigma = 0.001 and a 3-tap kernel whose outer taps are
  exp(-1 / 2e-6) == 0 -- the identity. Deciding per axis (blur iff in > out) is therefore the same thing.
- the taps are exp(-x^2 / (2 sigma^2)) at x = -k//2 .. k//2, normalised to sum 1; border "reflect" (PyTorch's
  reflect: index -1 -> 1, n -> n-2, the edge sample is not repeated).
PyTorch bicubic (aten upsample_bicubic2d): source coordinate s = dst * (in-1)/(out-1) with align_corners=True
(else (dst + 0.5) * in/out - 0.5), i = floor(s), t = s - i, taps at i-1 .. i+2 clamped to [0, in-1] with
Keys' cubic convolution weights for coefficient a (-0.75).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# kornia's lower bound on the antialias sigma and its minimum kernel size (affwarp.py `resize`)
_MIN_SIGMA = 0.001
_MIN_KERNEL = 3
_KERNEL_SIGMAS = 4.0        # kernel size = int(max(2 * 2 * sigma, 3))


def cubic_weights(t: float, a: float) -> np.ndarray:
    """Keys' cubic-convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fractional position t in [0, 1)."""

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):   # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return np.array([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], dtype=np.float64)


def bicubic_matrix(in_size: int, out_size: int, *, align_corners: bool = True, a: float = -0.75) -> np.ndarray:
    """(out, in) matrix of PyTorch's 1D bicubic interpolation (border-clamped taps)."""
    _check_sizes(in_size, out_size)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for d in range(out_size):
        if align_corners:
            s = d * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        else:
            s = (d + 0.5) * in_size / out_size - 0.5
        i = math.floor(s)
        w = cubic_weights(s - i, a)
        for k in range(4):
            m[d, min(max(i - 1 + k, 0), in_size - 1)] += w[k]
    return m


def gaussian_taps(sigma: float, size: int) -> np.ndarray:
    """Normalised Gaussian taps at x = -size//2 .. size//2 (odd size)."""
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-x * x / (2.0 * sigma * sigma))
    return g / g.sum()


def antialias_kernel(in_size: int, out_size: int) -> np.ndarray:
    """Kornia's antialias Gaussian for down-scaling in_size -> out_size (only meaningful when in > out)."""
    sigma = max((in_size / out_size - 1.0) / 2.0, _MIN_SIGMA)
    size = int(max(_KERNEL_SIGMAS * sigma, _MIN_KERNEL))
    size = size if size % 2 else size + 1
    return gaussian_taps(sigma, size)


def blur_matrix(size: int, taps: np.ndarray) -> np.ndarray:
    """(size, size) matrix of a 1D 'same' filtering with PyTorch reflect padding."""
    r = len(taps) // 2
    if r >= size:
        raise ValueError(f"blur kernel of {len(taps)} taps needs an axis longer than {r} for reflect padding, "
                         f"got {size}")
    m = np.zeros((size, size), dtype=np.float64)
    for i in range(size):
        for k, w in enumerate(taps):
            j = i + k - r
            j = -j if j < 0 else (2 * (size - 1) - j if j >= size else j)
            m[i, j] += w
    return m


def resize_matrix(in_size: int, out_size: int, *, align_corners: bool = True, antialias: bool = True,
                  a: float = -0.75) -> np.ndarray:
    """(out, in) float64 matrix of kornia's bicubic resize along one axis: bicubic @ (antialias blur)."""
    m = bicubic_matrix(in_size, out_size, align_corners=align_corners, a=a)
    if antialias and in_size > out_size:
        m = m @ blur_matrix(in_size, antialias_kernel(in_size, out_size))
    return m


def preprocess(image: np.ndarray, out_size: int, mean: Sequence[float], std: Sequence[float], *,
               align_corners: bool = True, antialias: bool = True, a: float = -0.75) -> np.ndarray:
    """The whole CLIP preprocessing in numpy: (N, 3, H, W) in [-1, 1] -> (N, 3, out, out) float32."""
    if image.ndim != 4 or image.shape[1] != len(mean):
        raise ValueError(f"expected an image (N, {len(mean)}, H, W), got shape {image.shape}")
    kw = dict(align_corners=align_corners, antialias=antialias, a=a)
    mh = resize_matrix(image.shape[2], out_size, **kw)
    mw = resize_matrix(image.shape[3], out_size, **kw)
    y = mh @ image.astype(np.float64) @ mw.T                         # (N, 3, out, out)
    y = (y + 1.0) / 2.0
    y = (y - np.asarray(mean, np.float64)[:, None, None]) / np.asarray(std, np.float64)[:, None, None]
    return y.astype(np.float32)


def _check_sizes(in_size: int, out_size: int) -> None:
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be >= 1, got in {in_size}, out {out_size}")
