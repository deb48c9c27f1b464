"""SV3D's image conditioning: the OpenCLIP ViT image tower with its preprocessing built in.

Official path (SV3D_REFERENCE.md §3.1; ENC:579-650, open_clip VisionTransformer):
  preprocess: kornia bicubic resize (align_corners, antialias) to image_size -> (x + 1) / 2 -> (x - mean) / std
  visual:     conv1 (patch x patch, stride patch, no bias) -> g*g tokens, class token prepended, + positional
              embedding -> ln_pre -> `layers` pre-LN residual blocks -> ln_post -> token 0 -> @ proj
The resize is linear per axis, so it is two matmuls with constant matrices from models/clip_preprocess.py; the
Cell takes the [-1, 1] image at a fixed input size (the export size), so the exported graph needs nothing else.
Parameter names are the official ones without the prefix conditioner.embedders.0.open_clip.model.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from configs import CLIPConfig
from .clip_preprocess import resize_matrix
from .layers import LayerNorm, attention, conv2d, gelu_erf, linear, merge_heads, split_heads


def _zeros(*shape: int) -> Tensor:
    """Lazily initialised zeros (weights always come from a checkpoint; the full tower is 632M values)."""
    return initializer("zeros", shape, ms.float32)


class MultiheadAttention(nn.Cell):
    """torch.nn.MultiheadAttention self-attention, batch first: packed in_proj (q | k | v), out_proj."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.in_proj_weight = Parameter(_zeros(3 * width, width), name="in_proj_weight")
        self.in_proj_bias = Parameter(_zeros(3 * width), name="in_proj_bias")
        self.out_proj = linear(width, width)
        self.matmul_t = ops.MatMul(transpose_b=True)
        self.width = width
        self.heads = heads
        self.scale = (width // heads) ** -0.5

    def construct(self, x):
        n, l, w = x.shape                                             # (N, L, W)
        qkv = self.matmul_t(x.reshape(n * l, w), self.in_proj_weight) + self.in_proj_bias   # (N*L, 3W)
        q = split_heads(qkv[:, :w].reshape(n, l, w), self.heads)      # (N*heads, L, W/heads)
        k = split_heads(qkv[:, w:2 * w].reshape(n, l, w), self.heads)
        v = split_heads(qkv[:, 2 * w:].reshape(n, l, w), self.heads)
        o = merge_heads(attention(q, k, v, self.scale), self.heads)   # (N, L, W)
        return self.out_proj(o.reshape(n * l, w)).reshape(n, l, w)


class MLP(nn.Cell):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = linear(width, hidden)
        self.c_proj = linear(hidden, width)

    def construct(self, x):                                           # (T, W) -> (T, W)
        return self.c_proj(gelu_erf(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    """x += attn(ln_1 x); x += mlp(ln_2 x) (open_clip ResidualAttentionBlock, no layer scale)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.attn = MultiheadAttention(cfg.width, cfg.heads)
        self.ln_2 = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.mlp = MLP(cfg.width, cfg.mlp_width)

    def construct(self, x):
        n, l, w = x.shape
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x).reshape(n * l, w)).reshape(n, l, w)


class Transformer(nn.Cell):
    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.resblocks = nn.CellList([ResidualAttentionBlock(cfg) for _ in range(cfg.layers)])

    def construct(self, x):
        for blk in self.resblocks:
            x = blk(x)
        return x


class VisionTransformer(nn.Cell):
    """Normalised (N, 3, S, S) with S = image_size -> pooled, projected embedding (N, output_dim)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        w, grid = cfg.width, cfg.image_size // cfg.patch_size
        self.conv1 = conv2d(3, w, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = Parameter(_zeros(w), name="class_embedding")
        self.positional_embedding = Parameter(_zeros(grid * grid + 1, w), name="positional_embedding")
        self.ln_pre = LayerNorm(w, cfg.layer_norm_eps)
        self.transformer = Transformer(cfg)
        self.ln_post = LayerNorm(w, cfg.layer_norm_eps)
        self.proj = Parameter(_zeros(w, cfg.output_dim), name="proj")
        self.width = w

    def construct(self, x):
        x = self.conv1(x)                                             # (N, W, g, g)
        n = x.shape[0]
        x = x.reshape(n, self.width, -1).transpose(0, 2, 1)           # (N, g*g, W)
        cls = ops.broadcast_to(self.class_embedding.reshape(1, 1, self.width), (n, 1, self.width))
        x = ops.concat((cls, x), axis=1) + self.positional_embedding  # (N, 1 + g*g, W)
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x)[:, 0]                                     # (N, W): class token
        return ops.matmul(x, self.proj)                               # (N, output_dim)


class CLIPImageEncoder(nn.Cell):
    """[-1, 1] image (N, 3, S, S) at a fixed input size S -> CLIP image embedding (N, output_dim)."""

    def __init__(self, cfg: CLIPConfig, input_size: int):
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        m = resize_matrix(input_size, cfg.image_size, align_corners=cfg.resize_align_corners,
                          antialias=cfg.resize_antialias, a=cfg.bicubic_a)            # (image_size, S)
        self.resize_t = Tensor(np.ascontiguousarray(m.T), ms.float32)                 # (S, image_size)
        self.mean = Tensor(np.asarray(cfg.mean, np.float32).reshape(1, 3, 1, 1))
        self.inv_std = Tensor((1.0 / np.asarray(cfg.std, np.float64)).astype(np.float32).reshape(1, 3, 1, 1))
        self.input_size = input_size
        self.out_size = cfg.image_size
        self.visual = VisionTransformer(cfg)

    def preprocess(self, image):
        """(N, 3, S, S) in [-1, 1] -> (N, 3, image_size, image_size) normalised CLIP input."""
        n, c, s, o = image.shape[0], image.shape[1], self.input_size, self.out_size
        y = ops.matmul(image.reshape(n * c * s, s), self.resize_t)   # rows resized along W: (N*C*S_h, O_w)
        y = y.reshape(n * c, s, o).transpose(0, 2, 1).reshape(n * c * o, s)
        y = ops.matmul(y, self.resize_t)                              # along H: (N*C*O_w, O_h)
        y = y.reshape(n, c, o, o).transpose(0, 1, 3, 2)               # (N, C, O_h, O_w)
        y = (y + 1.0) / 2.0
        return (y - self.mean) * self.inv_std

    def construct(self, image):
        return self.visual(self.preprocess(image))
