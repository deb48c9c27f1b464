"""The VideoUNet's building blocks (SV3D_REFERENCE.md §6.3-6.4) as MindSpore Cells.

Every Cell mirrors the PyTorch module of Stability-AI/generative-models it replaces, down to the child numbering,
so that `parameters_and_names()` yields the official state-dict names (prefix `model.diffusion_model.` removed).
Parameter-free torch children (SiLU, Dropout(p=0), Identity) are kept as cells so the indices line up
(`in_layers.2`, `out_layers.3`, `emb_layers.1`, `ff.net.2`, `to_out.0`, ...).

Layout conventions (T = frames per video, b = videos, B = b*T, S = H*W tokens):
- spatial blocks work on (B, C, H, W) or (B, S, C), frame-major inside each video as the official code;
- the temporal ResBlock works on (b, C, T, S): its (3,1,1) Conv3d becomes a (3,1) Conv2d over (T, S) (the Conv3d
  padding trap of MINDSPORE_NOTES.md), `pad_mode="same"` giving the official zero padding of 1 frame each side;
- the temporal transformer block works on (b*S, T, C).

The children of a UNet block (VideoResBlock, SpatialVideoTransformer, Downsample, Upsample) all take
(x, emb, context) -- the TimestepEmbedSequential dispatch of OAI:133-153 made static -- so an `EmbedSequential`
can run any mix of them in GRAPH mode.

Citations (file:line) point into generative-models as collected in SV3D_REFERENCE.md: VM video_model.py,
VA video_attention.py, ATT attention.py, OAI openaimodel.py, DU diffusionmodules/util.py.
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from configs import UNetConfig
from .unet_layout import TIME_POS_EMBED_MULT
from runtime.conditioning import timestep_embedding
from .layers import (GroupNorm, LayerNorm, attention, conv2d, gelu_erf, linear, merge_heads, silu, split_heads,
                     upsample_nearest2x)



# ---------------------------------------------------------------------------------------------------------------
# parameter-free placeholders that keep the torch child indices


class SiLU(nn.Cell):
    """nn.SiLU."""

    def construct(self, x):
        return silu(x)


class Identity(nn.Cell):
    """nn.Dropout(p=0) / nn.Identity at inference."""

    def construct(self, x):
        return x


class EmbedSequential(nn.SequentialCell):
    """TimestepEmbedSequential (OAI:133-153) with one static signature: every child takes (x, emb, context)."""

    def construct(self, x, emb, context):
        for cell in self.cell_list:
            x = cell(x, emb, context)
        return x


class AlphaBlender(nn.Cell):
    """AlphaBlender, merge_strategy "learned_with_images" (DU:342-399), for all-video input.

    alpha = 1 where image_only_indicator is set, else sigmoid(mix_factor). SV3D inference passes an all-zero
    indicator (SVS:241-250), so alpha = sigmoid(mix_factor) for every frame and the indicator is no input.
    """

    def __init__(self):
        super().__init__()
        self.mix_factor = Parameter(Tensor(np.zeros(1, np.float32)), name="mix_factor")

    def construct(self, x_spatial, x_temporal):
        alpha = ops.sigmoid(self.mix_factor)
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


# ---------------------------------------------------------------------------------------------------------------
# ResBlocks


def temporal_conv(channels: int, kernel_t: int) -> nn.Conv2d:
    """Conv3d (kernel_t, 1, 1), padding (kernel_t//2, 0, 0), as a (kernel_t, 1) Conv2d over (b, C, T, S).

    pad_mode="same" pads (kernel_t-1)/2 zero frames on each side of T and nothing on S, and is written correctly
    to ONNX (MINDSPORE_NOTES.md); an explicit per-axis padding tuple is not. Weights (Co, Ci, kernel_t, 1): the
    checkpoint's (Co, Ci, kernel_t, 1, 1) minus the last axis.
    """
    return nn.Conv2d(channels, channels, (kernel_t, 1), pad_mode="same", has_bias=True, weight_init="zeros",
                     bias_init="zeros")


class TemporalResBlock(nn.Cell):
    """VideoResBlock.time_stack: ResBlock(dims=3, kernel (k,1,1), exchange_temb_dims) (VM:47-60, OAI:260-404).

    x (b, C, T, S), emb (b*T, E) per frame -> (b, C, T, S). Its GroupNorms normalise each (video, group) over
    C/G x T x S jointly, i.e. across all frames, as GroupNorm on the official 5D tensor does.
    """

    def __init__(self, channels: int, cfg: UNetConfig, num_frames: int):
        super().__init__()
        g, eps, kt = cfg.norm_groups, cfg.resblock_norm_eps, cfg.video_kernel_size[0]
        self.num_frames = num_frames
        self.in_layers = nn.SequentialCell([GroupNorm(g, channels, eps), SiLU(), temporal_conv(channels, kt)])
        self.emb_layers = nn.SequentialCell([SiLU(), linear(cfg.time_embed_dim, channels)])
        self.out_layers = nn.SequentialCell([GroupNorm(g, channels, eps), SiLU(), Identity(),
                                             temporal_conv(channels, kt)])

    def construct(self, x, emb):
        b, c, t, s = x.shape
        h = self.in_layers(x)                                                 # (b, C, T, S)
        e = self.emb_layers(emb)                                              # (b*T, C)
        e = e.reshape(b, t, c).transpose(0, 2, 1).reshape(b, c, t, 1)        # "b t c -> b c t 1" (exchange dims)
        h = self.out_layers(h + e)
        return x + h                                                          # identity skip (C_in == C_out)


class VideoResBlock(nn.Cell):
    """VideoResBlock (VM:17-86): spatial ResBlock, then a temporal ResBlock, blended by a learned alpha.

    x (B, C_in, H, W), emb (B, E) -> (B, C_out, H, W), B = b*T.
    """

    def __init__(self, in_ch: int, out_ch: int, cfg: UNetConfig, num_frames: int):
        super().__init__()
        g, eps = cfg.norm_groups, cfg.resblock_norm_eps
        self.num_frames = num_frames
        self.in_layers = nn.SequentialCell([GroupNorm(g, in_ch, eps), SiLU(), conv2d(in_ch, out_ch, 3, padding=1)])
        self.emb_layers = nn.SequentialCell([SiLU(), linear(cfg.time_embed_dim, out_ch)])
        self.out_layers = nn.SequentialCell([GroupNorm(g, out_ch, eps), SiLU(), Identity(),
                                             conv2d(out_ch, out_ch, 3, padding=1)])
        self.has_skip_conv = in_ch != out_ch
        if self.has_skip_conv:                     # 1x1 conv; nn.Identity (no parameters) otherwise
            self.skip_connection = conv2d(in_ch, out_ch, 1)
        self.time_stack = TemporalResBlock(out_ch, cfg, num_frames)
        self.time_mixer = AlphaBlender()

    def construct(self, x, emb, context):
        # 1. spatial ResBlock on (B, C, H, W) (OAI:378-404, use_scale_shift_norm False)
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(h)
        if self.has_skip_conv:
            x = self.skip_connection(x)
        xs = x + h                                                            # (B, C, H, W)
        # 2. temporal ResBlock on (b, C, T, S) (VM:76-81)
        bt, c, hh, ww = xs.shape
        b = bt // self.num_frames
        xt = xs.reshape(b, self.num_frames, c, hh * ww).transpose(0, 2, 1, 3)  # (b, C, T, S)
        xt = self.time_stack(xt, emb)
        xt = xt.transpose(0, 2, 1, 3).reshape(bt, c, hh, ww)                  # (B, C, H, W)
        # 3. alpha * spatial + (1 - alpha) * temporal (VM:82-84)
        return self.time_mixer(xs, xt)


class Downsample(nn.Cell):
    """Strided 3x3 conv, symmetric padding 1 (OAI:210-257)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = conv2d(channels, channels, 3, stride=2, padding=1)

    def construct(self, x, emb, context):
        return self.op(x)


class Upsample(nn.Cell):
    """Nearest-neighbour x2, then 3x3 conv padding 1 (OAI:157-207)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, padding=1)

    def construct(self, x, emb, context):
        return self.conv(upsample_nearest2x(x))


# ---------------------------------------------------------------------------------------------------------------
# attention and feed-forward


class GEGLU(nn.Cell):
    """proj: Linear(dim -> 2*inner); first half value, second half gate: value * GELU_erf(gate) (ATT:87-94)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.inner = inner
        self.proj = linear(dim, 2 * inner)

    def construct(self, x):
        h = self.proj(x)
        return h[..., :self.inner] * gelu_erf(h[..., self.inner:])


class FeedForward(nn.Cell):
    """FeedForward(glu=True) (ATT:97-113): net = [GEGLU, Dropout(0), Linear(inner -> dim)]."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        inner = dim * mult
        self.net = nn.SequentialCell([GEGLU(dim, inner), Identity(), linear(inner, dim)])

    def construct(self, x):
        return self.net(x)


class Attention(nn.Cell):
    """CrossAttention (ATT:255-453): softmax(q k^T / sqrt(d_head)) v over `heads` heads, no mask.

    to_q/to_k/to_v have no bias; to_out = [Linear, Dropout(0)]. `query_chunk` > 0 bounds the score matrix to
    (batch*heads, query_chunk, keys) (layers.attention).
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int, query_chunk: int = 0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.query_chunk = query_chunk
        self.to_q = linear(query_dim, inner, bias=False)
        self.to_k = linear(context_dim, inner, bias=False)
        self.to_v = linear(context_dim, inner, bias=False)
        self.to_out = nn.SequentialCell([linear(inner, query_dim), Identity()])

    def construct(self, x, context):
        """x (N, Lq, query_dim), context (N, Lk, context_dim) -> (N, Lq, query_dim)."""
        q = split_heads(self.to_q(x), self.heads)                             # (N*heads, Lq, d)
        k = split_heads(self.to_k(context), self.heads)                       # (N*heads, Lk, d)
        v = split_heads(self.to_v(context), self.heads)
        o = attention(q, k, v, self.scale, self.query_chunk)                  # (N*heads, Lq, d)
        return self.to_out(merge_heads(o, self.heads))

    def single_key(self, context):
        """The output for a one-token context (N, 1, context_dim) -> (N, 1, query_dim), for every query.

        Exact: the softmax over a single key is identically 1 whatever q and k are, so each head returns v and
        the result is to_out(to_v(context)) broadcast over the queries; to_q/to_k (and the query's LayerNorm) do
        not influence it. Saves the q/k projections, and the temporal block's repeat of the context per location.
        """
        return self.to_out(self.to_v(context))


class BasicTransformerBlock(nn.Cell):
    """Spatial block (ATT:456-572) on (B, S, C): self-attention over S, cross-attention to the frame's context,
    GEGLU feed-forward; pre-LayerNorm, residual each."""

    def __init__(self, dim: int, heads: int, dim_head: int, cfg: UNetConfig, attention_chunk: int):
        super().__init__()
        eps = cfg.layer_norm_eps
        self.attn1 = Attention(dim, dim, heads, dim_head, attention_chunk)
        self.ff = FeedForward(dim, cfg.ff_mult)
        self.attn2 = Attention(dim, cfg.context_dim, heads, dim_head)
        self.norm1 = LayerNorm(dim, eps)
        self.norm2 = LayerNorm(dim, eps)
        self.norm3 = LayerNorm(dim, eps)

    def construct(self, x, context):
        """x (B, S, C), context (B, L, context_dim) -> (B, S, C)."""
        n = self.norm1(x)
        x = x + self.attn1(n, n)
        if context.shape[1] == 1:
            x = x + self.attn2.single_key(context)                            # (B, 1, C) over all S queries
        else:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class VideoTransformerBlock(nn.Cell):
    """Temporal block (VA:16-141) with ff_in (extra_ff_mix_layer) on (b*S, T, C): attention across frames.

    Order: norm_in/ff_in -> norm1/attn1 (self) -> norm2/attn2 (cross to the time context) -> norm3/ff, each
    residual (inner_dim == dim, so is_res).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, cfg: UNetConfig):
        super().__init__()
        eps = cfg.layer_norm_eps
        self.norm_in = LayerNorm(dim, eps)
        self.ff_in = FeedForward(dim, cfg.ff_mult)
        self.attn1 = Attention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim, cfg.ff_mult)
        self.norm2 = LayerNorm(dim, eps)
        self.attn2 = Attention(dim, cfg.context_dim, heads, dim_head)
        self.norm1 = LayerNorm(dim, eps)
        self.norm3 = LayerNorm(dim, eps)

    def construct(self, x, time_context):
        """x (b, T, S, C), time_context (b, L, context_dim) -> (b, T, S, C)."""
        b, t, s, c = x.shape
        x = x.transpose(0, 2, 1, 3).reshape(b * s, t, c)                     # "(b t) s c -> (b s) t c"
        x = x + self.ff_in(self.norm_in(x))
        n = self.norm1(x)
        x = x + self.attn1(n, n)
        if time_context.shape[1] == 1:
            x = x.reshape(b, s * t, c) + self.attn2.single_key(time_context)  # (b, 1, C) over every (s, t)
            x = x.reshape(b * s, t, c)
        else:
            # official: the context repeated for each of the S locations, "b ... -> (b s) ..."
            _, l, cd = time_context.shape
            ctx = ops.broadcast_to(time_context[:, None], (b, s, l, cd)).reshape(b * s, l, cd)
            x = x + self.attn2(self.norm2(x), ctx)
        x = x + self.ff(self.norm3(x))
        return x.reshape(b, s, t, c).transpose(0, 2, 1, 3)                    # (b, T, S, C)


class SpatialVideoTransformer(nn.Cell):
    """SpatialVideoTransformer (VA:147-302), use_linear, use_spatial_context, ff_in: (B, C, H, W) -> same.

    Per depth: the spatial block over each frame's S tokens, then the temporal block across the T frames of each
    location (input + frame-position embedding, context = the video's first-frame context), blended by alpha.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, cfg: UNetConfig, num_frames: int,
                 attention_chunk: int):
        super().__init__()
        inner = heads * dim_head
        self.num_frames = num_frames
        self.depth = cfg.transformer_depth
        self.norm = GroupNorm(cfg.norm_groups, channels, cfg.transformer_norm_eps)
        self.proj_in = linear(channels, inner)
        self.transformer_blocks = nn.CellList([BasicTransformerBlock(inner, heads, dim_head, cfg, attention_chunk)
                                               for _ in range(self.depth)])
        self.proj_out = linear(inner, channels)
        self.time_stack = nn.CellList([VideoTransformerBlock(inner, heads, dim_head, cfg)
                                       for _ in range(self.depth)])
        width = TIME_POS_EMBED_MULT * channels
        self.time_pos_embed = nn.SequentialCell([linear(channels, width), SiLU(), linear(width, channels)])
        self.time_mixer = AlphaBlender()
        # frame index 0..T-1 -> sinusoid, the same for every video (VA:267-272): a constant (T, C) as [cos | sin],
        # in float32 like torch
        self.frame_sinusoids = Tensor(timestep_embedding(np.arange(num_frames), channels, cfg.max_period,
                                                         float32_math=True))

    def construct(self, x, emb, context):
        """x (B, C, H, W), context (B, L, context_dim) -> (B, C, H, W); emb is unused."""
        bt, c, hh, ww = x.shape
        s = hh * ww
        t = self.num_frames
        b = bt // t
        x_in = x
        # 1. GroupNorm, tokens, proj_in (VA:260-265)
        h = self.norm(x).reshape(bt, c, s).transpose(0, 2, 1)                 # (B, S, C)
        h = self.proj_in(h)
        # 2. temporal context: each video's first-frame context, context[::T] (VA:245-254)
        _, l, cd = context.shape
        time_context = context.reshape(b, t, l, cd)[:, 0]                     # (b, L, context_dim)
        # 3. frame-position embedding (VA:267-277)
        pos = self.time_pos_embed(self.frame_sinusoids).reshape(1, t, 1, c)   # (1, T, 1, C)
        # 4. spatial block, temporal block, blend (VA:279-295)
        for i in range(self.depth):
            h = self.transformer_blocks[i](h, context)                        # (B, S, C)
            h_mix = h.reshape(b, t, s, c) + pos                               # (b, T, S, C)
            h_mix = self.time_stack[i](h_mix, time_context).reshape(bt, s, c)  # (B, S, C)
            h = self.time_mixer(h, h_mix)
        # 5. proj_out, back to (B, C, H, W), residual (VA:296-302)
        h = self.proj_out(h).transpose(0, 2, 1).reshape(bt, c, hh, ww)
        return h + x_in
