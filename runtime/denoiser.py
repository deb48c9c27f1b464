"""The guided denoiser the sampler calls, built in k-diffusion's layers (k_diffusion/external.py):

    CFGUNet      F(x_in, c_noise) -> (2T, C, h, w): the exported UNet on the CFG batch [uc ; c] with the image's
                 conditioning, in one call of batch 2T or two calls of batch T (the export's ``unet_batch``);
    VDenoiser    D(x, sigma) = c_out * F(c_in * x, c_noise) + c_skip * x      (v-scaling, DSC:51-59; DEN:23-39);
    CFGDenoiser  guided(x, sigma) = D_uc + scale_t * (D_c - D_uc) per frame      (GDR:78-131), on [x ; x].

``CFGDenoiser(VDenoiser(CFGUNet(unet, ...)), scales)`` is the ``denoiser(x, sigma) -> D`` of
runtime.sampling.sample_euler. Every layer keeps that
signature and returns the array alone: what the pipeline measures or shows per step comes from proxies around
the layers (runtime.timings.TimedRunner around the UNet runner, :class:`LastOutput` around the v-denoiser), not from
what the denoiser returns.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .conditioning import Conditioning
from .guidance import apply_guidance, split_cfg_batch
from .sampling import edm_vscaling

F32 = np.float32
Denoiser = Callable[[np.ndarray, Any], np.ndarray]        # f(x, sigma) -> D, the shape of x


class CFGUNet:
    """The UNet graph on the CFG batch: F(x_in (2T, C, h, w), c_noise) -> (2T, C, h, w).

    unet: a runner with ``run(feeds) -> {"out": ...}``; unet_batch: 2T (both branches in one call, uc first,
    GDR:88-99) or T (one call per branch); the uc branch gets zero crossattn and concat, both get the vector.
    """

    def __init__(self, unet: Any, unet_batch: int, conditioning: Conditioning) -> None:
        t = conditioning.num_frames
        ctx, concat, vector = conditioning.crossattn, conditioning.concat, conditioning.vector
        zeros_ctx, zeros_concat = np.zeros_like(ctx), np.zeros_like(concat)
        self.unet = unet
        self.num_frames = t
        if unet_batch == t:                # one call per branch, batch T
            self.calls = [(slice(0, t), zeros_concat, zeros_ctx, vector), (slice(t, 2 * t), concat, ctx, vector)]
        else:                              # both branches in one call, batch 2T
            self.calls = [(slice(0, 2 * t), np.concatenate([zeros_concat, concat]),
                           np.concatenate([zeros_ctx, ctx]), np.concatenate([vector, vector]))]

    def __call__(self, x_in: np.ndarray, c_noise) -> np.ndarray:
        outs = []
        for rows, concat, ctx, vec in self.calls:
            feeds = {"x": np.concatenate([x_in[rows], concat], axis=1),          # (B, 2C, h, w) (WRP:27)
                     "timesteps": np.full(concat.shape[0], c_noise, dtype=F32),   # (B,) c_noise
                     "context": ctx, "y": vec}
            outs.append(self.unet.run(feeds)["out"])
        return outs[0] if len(outs) == 1 else np.concatenate(outs)              # (2T, C, h, w) [uc ; c]


class VDenoiser:
    """D(x, sigma) = c_out * F(c_in * x, c_noise) + c_skip * x for the network F (EDM v-scaling, float32)."""

    def __init__(self, network: CFGUNet) -> None:
        self.network = network

    def __call__(self, x: np.ndarray, sigma) -> np.ndarray:
        c_skip, c_out, c_in, c_noise = edm_vscaling(sigma)          # float32 scalars (DSC:51-59)
        return self.network(c_in * x, c_noise) * c_out + x * c_skip   # DEN:23-39


class LastOutput:
    """A denoiser layer unchanged, f(x, sigma) -> D, that keeps its latest D in ``last`` (the pipeline's per-step
    callback shows the v-denoiser's D of both CFG branches, the reference's denoised batch)."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.last: Optional[np.ndarray] = None

    def __call__(self, x: np.ndarray, sigma) -> np.ndarray:
        self.last = self.denoiser(x, sigma)
        return self.last


class CFGDenoiser:
    """guided(x (T, C, h, w), sigma) -> (T, C, h, w): the v-denoiser on [x ; x], then per-frame guidance."""

    def __init__(self, denoiser: Denoiser, scales: np.ndarray) -> None:
        self.denoiser = denoiser
        self.scales = scales                                        # (T,) float32

    def __call__(self, x: np.ndarray, sigma) -> np.ndarray:
        t = x.shape[0]
        raw = self.denoiser(np.concatenate([x, x]), sigma)          # (2T, C, h, w) [uc ; c]
        d_uc, d_c = split_cfg_batch(raw, t)
        return apply_guidance(d_uc, d_c, self.scales)


__all__ = ["CFGDenoiser", "CFGUNet", "Denoiser", "LastOutput", "VDenoiser"]
