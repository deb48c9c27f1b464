"""EDM sampling in numpy: sigma schedule, v-scaling preconditioning, Euler sampler.

Pure functions in the style of k-diffusion: the sampler takes a *denoiser callable* ``denoiser(x, sigma) -> D``
(the guided denoised prediction, same shape as ``x``) and knows nothing about networks or guidance. Everything is
float32 and follows the reference's fp32 operation order, so that, fed the reference's denoised outputs, the
trajectory is reproduced bit for bit (tests/test_sampling.py).

References (Stability-AI/generative-models, see SV3D_REFERENCE.md §4-5):
  DISC:17-39  EDMDiscretization          -> edm_sigmas
  DSC:51-59   VScalingWithEDMcNoise      -> edm_vscaling
  SMP:41-52   prepare_sampling_loop      -> initial_latent
  SMP:83-215, SMPU:34-35  EulerEDMSampler with s_churn = 0 (gamma = 0 always) -> sample_euler
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .errors import GraphError

F32 = np.float32

Denoiser = Callable[[np.ndarray, np.float32], np.ndarray]
StepCallback = Callable[[Dict[str, Any]], None]


# ----------------------------------------------------------------------------------------------------------------
# float32 helpers


def _nearest_f32(q: Fraction) -> np.float32:
    """The float32 nearest to the exact rational ``q`` (ties to even): one rounding, as an FMA does."""
    guess = F32(float(q))                  # float64 then float32: within one float32 ulp of the answer
    candidates = (np.nextafter(guess, F32(-np.inf)), guess, np.nextafter(guess, F32(np.inf)))

    def key(c: np.float32) -> Tuple[Fraction, int]:
        odd = int(np.array(c, dtype=F32).view(np.uint32)) & 1     # ties go to the even significand
        return abs(Fraction(float(c)) - q), odd

    return min(candidates, key=key)


def linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` in float32, bit for bit, as (steps,) float32.

    torch's CPU kernel fills the first half from the start and the second half from the end:
        step = (end - start) / (steps - 1)                      (float32)
        v[i] = start + step * i              for i <  steps // 2
        v[i] = end - step * (steps - 1 - i)  for i >= steps // 2
    and the compiled kernel evaluates each line as one fused multiply-add (a single rounding). The reference
    sigmas show it: evaluated with two roundings, sigmas_50 would miss at indices 27, 28, 32 and 40 by 6-16 ulp,
    while single rounding reproduces all 51 values. ``numpy.linspace`` differs too (e.g. index 9 of 21 frames).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"linspace_f32: steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    start32, end32 = F32(start), F32(end)
    if steps == 1:
        return np.array([start32], dtype=F32)
    step32 = (end32 - start32) / F32(steps - 1)
    s, e, d = Fraction(float(start32)), Fraction(float(end32)), Fraction(float(step32))
    half = steps // 2
    vals = [_nearest_f32(s + d * i) if i < half else _nearest_f32(e - d * (steps - 1 - i)) for i in range(steps)]
    return np.array(vals, dtype=F32)


def _f32_round(x64: np.ndarray) -> np.ndarray:
    """Round float64 results of a transcendental function to float32 (correct rounding up to rare ties)."""
    return np.asarray(x64, dtype=np.float64).astype(F32)


# ----------------------------------------------------------------------------------------------------------------
# schedule and preconditioning


def edm_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """EDM (Karras) noise levels, descending, with 0 appended: (num_steps + 1,) float32 (DISC:17-39).

        ramp    = linspace(0, 1, n)                                           (float32)
        sigma_i = (sigma_max^(1/rho) + ramp_i * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

    The reference computes both ``^(1/rho)`` powers and their difference as Python floats (float64), then rounds
    them to float32 when they meet the float32 ramp; the ``^rho`` power is computed in float64 and rounded
    once (torch's scalar ``std::pow(float, double)``). Bit-identical to the reference for 4 and 50 steps.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"edm_sigmas: num_steps must be a positive integer, got {num_steps!r}")
    if not (0 < sigma_min < sigma_max) or not np.isfinite(sigma_max):
        raise ValueError(f"edm_sigmas: expected 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min!r}, "
                         f"sigma_max={sigma_max!r}")
    if not rho > 0:
        raise ValueError(f"edm_sigmas: rho must be > 0, got {rho!r}")
    ramp = linspace_f32(0.0, 1.0, int(num_steps))
    min_inv_rho = float(sigma_min) ** (1.0 / rho)
    max_inv_rho = float(sigma_max) ** (1.0 / rho)
    base = F32(max_inv_rho) + ramp * F32(min_inv_rho - max_inv_rho)          # float32, as torch
    sigmas = _f32_round(base.astype(np.float64) ** float(rho))
    return np.append(sigmas, F32(0.0)).astype(F32)


def edm_vscaling(sigma) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Preconditioning of VScalingWithEDMcNoise (DSC:51-59), float32, same shape as ``sigma``.

        c_skip  = 1 / (s^2 + 1)
        c_out   = -s / sqrt(s^2 + 1)
        c_in    = 1 / sqrt(s^2 + 1)
        c_noise = 0.25 * ln(s)

    The denoiser is D(x) = c_out * F(c_in * x, c_noise, cond) + c_skip * x (DEN:23-39). ``ln`` is evaluated in
    float64 and rounded once (torch's float32 log is within 1 ulp of that).
    """
    s = np.asarray(sigma, dtype=F32)
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"edm_vscaling: sigma must be finite and > 0, got {s!r}")
    s2p1 = s * s + F32(1.0)
    root = np.sqrt(s2p1)
    c_skip = F32(1.0) / s2p1
    c_out = -s / root
    c_in = F32(1.0) / root
    c_noise = F32(0.25) * _f32_round(np.log(s.astype(np.float64)))
    return c_skip, c_out, c_in, c_noise


# ----------------------------------------------------------------------------------------------------------------
# sampler


def initial_latent(noise: np.ndarray, sigma0) -> np.ndarray:
    """Starting point of the sampler: ``noise * sqrt(1 + sigma0^2)`` in float32 (SMP:41-52).

    ``noise`` is the standard-normal draw of the latent shape (T, C, h, w); ``sigma0`` the first schedule value.
    """
    s0 = F32(sigma0)
    return np.asarray(noise, dtype=F32) * np.sqrt(F32(1.0) + s0 * s0)


def sample_euler(denoiser: Denoiser, x: np.ndarray, sigmas: np.ndarray,
                 callback: Optional[StepCallback] = None) -> np.ndarray:
    """Euler sampler over the schedule ``sigmas`` (EulerEDMSampler with s_churn = 0; SMP:83-215).

    For i = 0 .. len(sigmas) - 2:
        D = denoiser(x, sigma_i)              guided denoised prediction, shape of x
        d = (x - D) / sigma_i                 (SMPU:34-35)
        x = x + (sigma_{i+1} - sigma_i) * d   (SMP:78-79)
    With s_churn = 0 the reference's sigma_hat equals sigma_i and no noise is added. The last step has
    sigma = 0, so the result is (up to rounding) the last D; there is no extra final denoise.

    ``x`` is the initial latent (already scaled by :func:`initial_latent`); it is not modified. After every step
    ``callback`` gets a dict with ``i``, ``sigma`` (sigma_i), ``sigma_next``, ``x`` (the input of step i, as the
    denoiser saw it), ``x_next`` (after the update) and ``denoised`` (D). Returns the final latent, float32.
    """
    sig = np.asarray(sigmas, dtype=F32)
    if sig.ndim != 1 or sig.shape[0] < 2:
        raise ValueError(f"sample_euler: sigmas must be 1-D with at least 2 values, got shape {sig.shape}")
    if np.any(sig[:-1] <= 0) or np.any(~np.isfinite(sig)):
        raise ValueError(f"sample_euler: every sigma but the last must be finite and > 0, got {sig!r}")
    x = np.array(x, dtype=F32, copy=True)
    for i in range(sig.shape[0] - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        denoised = np.asarray(denoiser(x, sigma), dtype=F32)
        if denoised.shape != x.shape:
            raise GraphError(f"denoiser output at step {i} has the wrong shape", expected=x.shape,
                             got=denoised.shape)
        d = (x - denoised) / sigma
        x_next = x + (sigma_next - sigma) * d
        if callback is not None:
            callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "x_next": x_next,
                      "denoised": denoised})
        x = x_next
    return x
