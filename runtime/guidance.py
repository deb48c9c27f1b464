"""Per-frame classifier-free guidance (GDR:78-131; SV3D_REFERENCE.md §4.2).

The network is run on the CFG batch ``[uc ; c]`` (2T frames: T unconditional, then T conditional, GDR:88-99);
the guided denoised prediction of frame t is

    D_t = D_uc,t + scale_t * (D_c,t - D_uc,t)

with a per-frame scale vector. SV3D uses the triangle guider (1.0 at the first and last frame, max in the
middle), which is applied to the *denoised* prediction D, not to epsilon or v.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from configs.schema import GUIDERS, GuiderConfig

from .sampling import linspace_f32

F32 = np.float32


def guidance_scales(kind: str, num_frames: int, min_scale: float, max_scale: float,
                    triangle_period: float = GuiderConfig.triangle_period) -> np.ndarray:
    """Per-frame guidance scales, (num_frames,) float32, as the reference guiders build them in float32.

    triangle (TrianglePredictionGuider, GDR:102-131):
        v = linspace(0, 1, T); tri = 2 * |v / p - floor(v / p + 0.5)| with period p (guider.triangle_period, 1)
        scale = tri * (max - min) + min          -> min at both ends, max in the middle
    linear (LinearPredictionGuider, GDR:60-76):   scale = linspace(min, max, T)
    constant (VanillaCFG, GDR:24-31):            scale = max for every frame
    ``max - min`` is a Python (float64) difference rounded to float32, as in the reference.
    """
    if kind not in GUIDERS:
        raise ValueError(f"unknown guidance kind: expected one of {GUIDERS}, got {kind!r}")
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"guidance_scales: num_frames must be a positive integer, got {num_frames!r}")
    if not (np.isfinite(min_scale) and np.isfinite(max_scale)):
        raise ValueError(f"guidance_scales: scales must be finite, got min={min_scale!r}, max={max_scale!r}")
    if not 0 <= min_scale <= max_scale:
        raise ValueError(f"guidance_scales: expected 0 <= min_scale <= max_scale, got min={min_scale!r}, "
                         f"max={max_scale!r}")
    n = int(num_frames)
    if kind == "triangle":
        if not triangle_period > 0:
            raise ValueError(f"guidance_scales: triangle_period must be > 0, got {triangle_period!r}")
        period = F32(triangle_period)
        v = linspace_f32(0.0, 1.0, n)
        tri = F32(2.0) * np.abs(v / period - np.floor(v / period + F32(0.5)))
        return (tri * F32(float(max_scale) - float(min_scale)) + F32(min_scale)).astype(F32)
    if kind == "linear":
        return linspace_f32(float(min_scale), float(max_scale), n)
    return np.full(n, max_scale, dtype=F32)


def split_cfg_batch(denoised: np.ndarray, num_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split the network's CFG output (2T, ...) into (unconditional, conditional), each (T, ...).

    The reference puts the unconditional half first (``cat((uc, c))``, GDR:88-99).
    """
    out = np.asarray(denoised)
    if out.ndim < 1 or out.shape[0] != 2 * num_frames:
        raise ValueError(f"CFG batch must have 2 * num_frames = {2 * num_frames} entries on axis 0 "
                         f"([uncond ; cond]), got shape {out.shape}")
    return out[:num_frames], out[num_frames:]


def apply_guidance(denoised_uc: np.ndarray, denoised_c: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Guided prediction ``uc + scale[t] * (c - uc)`` per frame, float32.

    denoised_uc, denoised_c: (T, C, H, W) (any trailing shape); scales: (T,).
    """
    uc = np.asarray(denoised_uc, dtype=F32)
    c = np.asarray(denoised_c, dtype=F32)
    s = np.asarray(scales, dtype=F32)
    if uc.shape != c.shape:
        raise ValueError(f"apply_guidance: unconditional and conditional predictions differ in shape: "
                         f"{uc.shape} vs {c.shape}")
    if s.ndim != 1 or uc.ndim < 1 or s.shape[0] != uc.shape[0]:
        raise ValueError(f"apply_guidance: expected one scale per frame ({uc.shape[0] if uc.ndim else '?'},), "
                         f"got scales of shape {s.shape}")
    s = s.reshape((-1,) + (1,) * (uc.ndim - 1))
    return uc + s * (c - uc)
