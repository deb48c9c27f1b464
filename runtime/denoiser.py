"""The guided denoiser the sampler calls, built in k-diffusion's layers (k_diffusion/external.py):

    CFGUNet      F(x_in, c_noise) -> (2T, C, h, w): the exported UNet on the CFG batch [uc ; c] with the image's
                 conditioning, in one call of batch 2T or two calls of batch T (the export's ``unet_batch``);
    VDenoiser    D(x, sigma) = c_out * F(c_in * x, c_noise) + c_skip * x      (v-scaling, DSC:51-59; DEN:23-39);
    CFGDenoiser  guided(x, sigma) = D_uc + scale_t * (D_c - D_uc) per frame      (GDR:78-131), on [x ; x].

``CFGDenoiser`` is the ``denoiser(x, sigma) -> D`` of runtime.sampling.sample_euler. After every call it reports
what it did to its ``callback`` (a :class:`DenoiserCall`: the seconds inside the graph, the raw denoised batch of both
branches and the guided result), so the pipeline times steps without reaching into the denoiser.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from .conditioning import Conditioning
from .guidance import apply_guidance, split_cfg_batch
from .sampling import edm_vscaling

F32 = np.float32


@dataclass(frozen=True)
class DenoiserCall:
    """One evaluation of the guided denoiser."""
    sigma: float
    started: float               # time.perf_counter() when the call began
    graph_s: float               # seconds inside the UNet graph call(s)
    denoised_raw: np.ndarray     # (2T, C, h, w) D of both branches, [uc ; c] (the reference's denoised batch)
    denoised: np.ndarray         # (T, C, h, w) the guided D the sampler gets


class CFGUNet:
    """The UNet graph on the CFG batch: F(x_in (2T, C, h, w), c_noise) -> ((2T, C, h, w), graph seconds).

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

    def __call__(self, x_in: np.ndarray, c_noise) -> Tuple[np.ndarray, float]:
        outs, graph_s = [], 0.0
        for rows, concat, ctx, vec in self.calls:
            feeds = {"x": np.concatenate([x_in[rows], concat], axis=1),          # (B, 2C, h, w) (WRP:27)
                     "timesteps": np.full(concat.shape[0], c_noise, dtype=F32),   # (B,) c_noise
                     "context": ctx, "y": vec}
            t0 = time.perf_counter()
            outs.append(self.unet.run(feeds)["out"])
            graph_s += time.perf_counter() - t0
        return (outs[0] if len(outs) == 1 else np.concatenate(outs)), graph_s   # (2T, C, h, w) [uc ; c]


class VDenoiser:
    """D(x, sigma) = c_out * F(c_in * x, c_noise) + c_skip * x for the network F (EDM v-scaling, float32)."""

    def __init__(self, network: CFGUNet) -> None:
        self.network = network

    def __call__(self, x: np.ndarray, sigma) -> Tuple[np.ndarray, float]:
        c_skip, c_out, c_in, c_noise = edm_vscaling(sigma)          # float32 scalars (DSC:51-59)
        net, graph_s = self.network(c_in * x, c_noise)
        return net * c_out + x * c_skip, graph_s                    # DEN:23-39


class CFGDenoiser:
    """guided(x (T, C, h, w), sigma) -> (T, C, h, w): the v-denoiser on [x ; x], then per-frame guidance."""

    def __init__(self, denoiser: VDenoiser, scales: np.ndarray,
                 callback: Optional[Callable[[DenoiserCall], None]] = None) -> None:
        self.denoiser = denoiser
        self.scales = scales                                        # (T,) float32
        self.callback = callback

    def __call__(self, x: np.ndarray, sigma) -> np.ndarray:
        started = time.perf_counter()
        t = x.shape[0]
        raw, graph_s = self.denoiser(np.concatenate([x, x]), sigma)    # (2T, C, h, w) [uc ; c]
        d_uc, d_c = split_cfg_batch(raw, t)
        guided = apply_guidance(d_uc, d_c, self.scales)
        if self.callback is not None:
            self.callback(DenoiserCall(float(sigma), started, graph_s, raw, guided))
        return guided


def cfg_denoiser(unet: Any, unet_batch: int, conditioning: Conditioning, scales: np.ndarray,
                 callback: Optional[Callable[[DenoiserCall], None]] = None) -> CFGDenoiser:
    """The sampler's denoiser for one image: CFGDenoiser(VDenoiser(CFGUNet(unet, ...)))."""
    return CFGDenoiser(VDenoiser(CFGUNet(unet, unet_batch, conditioning)), scales, callback)


__all__ = ["CFGDenoiser", "CFGUNet", "DenoiserCall", "VDenoiser", "cfg_denoiser"]
