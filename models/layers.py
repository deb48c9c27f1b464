"""Building blocks written only with ops that MindSpore 2.10 exports correctly to both MindIR and ONNX.

MINDSPORE_NOTES.md (shared/reference) lists what the ONNX exporter cannot write -- GroupNorm, Erf, Rsqrt, Sign,
Reciprocal, PadV3, ResizeNearestNeighborV2 -- and the trap that asymmetric per-axis conv padding is written in the
wrong order. Hence:
- GroupNorm / LayerNorm are spelled out (mean, variance, divide by sqrt(var + eps)), in float32 even in an fp16
  graph (input cast up, output cast back); GroupNorm's
  statistics are staged means (`staged_mean`), which keep fp32 precision over groups of a million values;
- exact GELU uses an erf built from Abs/Exp/Pow (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7), sign-free;
- nearest 2x up-sampling is reshape + broadcast + reshape;
- convolutions use symmetric integer padding only; anything else pads by concatenating zeros;
- attention is BatchMatMul + softmax (optionally over query chunks to bound memory).
Parameter names follow the official PyTorch layout (`weight`/`bias`) so checkpoints map 1:1.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

# Abramowitz & Stegun 7.1.26 coefficients: erf(x) ~= 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p x), x >= 0
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def erf_nonneg(x: Tensor) -> Tensor:
    """erf(x) for x >= 0 from exportable ops (Pow(-1) instead of Reciprocal)."""
    t = ops.pow(1.0 + _AS_P * x, -1.0)
    poly = t * (_AS_A[0] + t * (_AS_A[1] + t * (_AS_A[2] + t * (_AS_A[3] + t * _AS_A[4]))))
    return 1.0 - poly * ops.exp(-x * x)


def gelu_erf(x: Tensor) -> Tensor:
    """Exact (erf) GELU without Sign: 0.5 x (1 + erf(x/sqrt2)) == 0.5 x + 0.5 |x| erf(|x|/sqrt2)."""
    ax = ops.abs(x)
    return 0.5 * x + 0.5 * ax * erf_nonneg(ax * _INV_SQRT2)


def silu(x: Tensor) -> Tensor:
    return x * ops.sigmoid(x)


def to_float32(x: Tensor) -> Tensor:
    """x in float32: the norms compute their statistics and affine in fp32 whatever the graph dtype (torch autocast
    keeps group_norm / layer_norm in fp32 too); a no-op, and no Cast node, in a float32 graph."""
    if x.dtype == ms.float32:
        return x
    return x.astype(ms.float32)


def staged_mean(g: Tensor) -> Tensor:
    """Mean of (N, G, R, H, W) over (R, H, W), keepdims: over W, then H, then R (the mean of equal-sized means
    is the mean).

    One fp32 reduction over a whole GroupNorm group (331,776 values in the 576 px VAE encoder, ~1.1 M in the
    UNet's temporal blocks) lost 2-3e-4 relative precision per mean on ONNX Runtime's CPU ReduceMean, which
    reached the encoder latent as 1.5e-3 rel-L2; reductions of a few hundred values each keep it at the fp32
    floor on every engine (benchmarks/README.md, "normalisation precision").
    """
    return g.mean(axis=-1, keep_dims=True).mean(axis=-2, keep_dims=True).mean(axis=-3, keep_dims=True)


class GroupNorm(nn.Cell):
    """GroupNorm over (N, C, *spatial): statistics per (sample, group) over C/G x all spatial positions.

    Works for 4D (N, C, H, W) and 5D (N, C, T, H, W) input -- the temporal ResBlock's GroupNorm spans all frames.
    The statistics are staged means over (N, G, C/G [x T], H, W) (`staged_mean`).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels not divisible by {num_groups} groups")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.weight = Parameter(Tensor(np.ones(num_channels, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(num_channels, np.float32)), name="bias")

    def construct(self, x):
        dtype = x.dtype
        x = to_float32(x)
        shape = x.shape
        g = x.reshape(shape[0], self.num_groups, -1, shape[-2], shape[-1])   # (N, G, C/G [x T], H, W)
        mean = staged_mean(g)
        d = g - mean
        var = staged_mean(d * d)
        g = d / ops.sqrt(var + self.eps)
        x = g.reshape(shape)
        affine = (1, self.num_channels) + (1,) * (len(shape) - 2)
        y = x * to_float32(self.weight).reshape(affine) + to_float32(self.bias).reshape(affine)
        return y.astype(dtype)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis (PyTorch semantics, explicit eps)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(dim, np.float32)), name="bias")

    def construct(self, x):
        dtype = x.dtype
        x = to_float32(x)
        mean = x.mean(axis=-1, keep_dims=True)
        d = x - mean
        var = (d * d).mean(axis=-1, keep_dims=True)
        y = d / ops.sqrt(var + self.eps) * to_float32(self.weight) + to_float32(self.bias)
        return y.astype(dtype)


def linear(in_features: int, out_features: int, bias: bool = True) -> nn.Dense:
    """nn.Dense with weight (out, in) like torch.nn.Linear; zero init (weights always come from a checkpoint)."""
    return nn.Dense(in_features, out_features, weight_init="zeros", bias_init="zeros", has_bias=bias)


def conv2d(in_ch: int, out_ch: int, kernel, stride: int = 1, padding: int = 0, bias: bool = True) -> nn.Conv2d:
    """nn.Conv2d with symmetric integer padding only (see the module docstring for why)."""
    if not isinstance(padding, int):
        raise ValueError(f"conv2d: only symmetric integer padding exports correctly, got {padding!r}")
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, pad_mode="pad" if padding else "valid",
                     padding=padding, has_bias=bias, weight_init="zeros", bias_init="zeros")


def upsample_nearest2x(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), nearest neighbour, via broadcast (exact, exportable)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1)
    x = ops.broadcast_to(x, (n, c, h, 2, w, 2))
    return x.reshape(n, c, h * 2, w * 2)


def pad_right_bottom(x: Tensor) -> Tensor:
    """Zero-pad (N, C, H, W) by one column on the right and one row at the bottom (VAE Downsample, MDL:74-91)."""
    n, c, h, w = x.shape
    x = ops.concat((x, ops.zeros((n, c, h, 1), x.dtype)), axis=3)
    return ops.concat((x, ops.zeros((n, c, 1, w + 1), x.dtype)), axis=2)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, heads*D) -> (B*heads, N, D)."""
    b, n, hd = x.shape
    d = hd // heads
    return x.reshape(b, n, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, n, d)


def merge_heads(x: Tensor, heads: int) -> Tensor:
    """(B*heads, N, D) -> (B, N, heads*D)."""
    bh, n, d = x.shape
    b = bh // heads
    return x.reshape(b, heads, n, d).transpose(0, 2, 1, 3).reshape(b, n, heads * d)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float, query_chunk: int = 0) -> Tensor:
    """softmax(q k^T * scale) v for q (B, Nq, D), k/v (B, Nk, D) -> (B, Nq, D).

    query_chunk > 0 splits the queries into static slices of that many tokens (memory-bounded attention: the
    (B, chunk, Nk) score matrix instead of (B, Nq, Nk)); 0 computes the plain full matrix.
    """
    kt = k.transpose(0, 2, 1)
    nq = q.shape[1]
    if query_chunk <= 0 or query_chunk >= nq:
        p = ops.softmax(ops.bmm(q, kt) * scale, axis=-1)
        return ops.bmm(p, v)
    outs = []
    for start in range(0, nq, query_chunk):
        qc = q[:, start:min(start + query_chunk, nq)]
        p = ops.softmax(ops.bmm(qc, kt) * scale, axis=-1)
        outs.append(ops.bmm(p, v))
    return ops.concat(outs, axis=1)


def timestep_embedding(t: Tensor, freqs: Tensor) -> Tensor:
    """(N,) -> (N, 2*half) as [cos(t f) | sin(t f)], in the graph: runtime.conditioning.timestep_embedding of a
    graph input; freqs from runtime.conditioning.sinusoid_frequencies(..., float32_math=True)."""
    args = t.astype(ms.float32)[:, None] * freqs[None]
    return ops.concat((ops.cos(args), ops.sin(args)), axis=-1)
