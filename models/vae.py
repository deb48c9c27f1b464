"""SV3D's KL-autoencoder halves: the conditioner's VAE encoder and the first stage's image decoder.

Structure and names follow sgm/modules/diffusionmodules/model.py (MDL) so that checkpoint tensors map 1:1
(SV3D_REFERENCE.md §3.2, §7):
- ResnetBlock (MDL:94-151): GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus the input (through a 1x1
  `nin_shortcut` when the channel count changes); no time embedding (temb_ch = 0), dropout 0.
- AttnBlock (MDL:155-265): GN -> 1x1 q, k, v -> single-head softmax attention over all h*w positions with scale
  C^-0.5 -> 1x1 proj_out -> residual.
- Downsample (MDL:74-91): zero-pad right/bottom by one, conv3x3 stride 2 (no padding).
- Upsample (MDL:57-71): nearest x2, conv3x3.
Every GroupNorm has eps = cfg.norm_eps (1e-6, MDL:52-55).

VAEEncoder (prefix conditioner.embedders.1.encoder.): Encoder (MDL:487-601) -> quant_conv -> the first z channels
(the posterior mean; AE:468-488, REG:21-27). No scale factor (ENC:964, 1025).
VAEDecoder (prefix first_stage_model.): decoder(z * (1 / scale_factor)) (DIF:117-135), no post_quant_conv (AE:210-212),
no tanh, no clamp.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from configs import VAEConfig
from .layers import GroupNorm, attention, conv2d, pad_right_bottom, silu, upsample_nearest2x
from .vae_layout import VAELevel, vae_layout


def _check_supported(cfg: VAEConfig) -> None:
    if cfg.attn_resolutions:
        raise ValueError(f"vae.attn_resolutions must be empty (SV3D has attention only in the mid block), got "
                         f"{list(cfg.attn_resolutions)}")


class ResnetBlock(nn.Cell):
    def __init__(self, cin: int, cout: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = GroupNorm(groups, cin, eps)
        self.conv1 = conv2d(cin, cout, 3, padding=1)
        self.norm2 = GroupNorm(groups, cout, eps)
        self.conv2 = conv2d(cout, cout, 3, padding=1)
        self.has_shortcut = cin != cout
        if self.has_shortcut:
            self.nin_shortcut = conv2d(cin, cout, 1)

    def construct(self, x):
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(silu(self.norm2(h)))
        if self.has_shortcut:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Cell):
    """Single-head self-attention over the h*w positions of (N, C, h, w)."""

    def __init__(self, channels: int, groups: int, eps: float, attention_chunk: int = 0):
        super().__init__()
        self.norm = GroupNorm(groups, channels, eps)
        self.q = conv2d(channels, channels, 1)
        self.k = conv2d(channels, channels, 1)
        self.v = conv2d(channels, channels, 1)
        self.proj_out = conv2d(channels, channels, 1)
        self.scale = channels ** -0.5
        self.chunk = attention_chunk

    def construct(self, x):
        n, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(n, c, h * w).transpose(0, 2, 1)        # (N, hw, C)
        k = self.k(y).reshape(n, c, h * w).transpose(0, 2, 1)
        v = self.v(y).reshape(n, c, h * w).transpose(0, 2, 1)
        o = attention(q, k, v, self.scale, self.chunk)                # (N, hw, C)
        o = o.transpose(0, 2, 1).reshape(n, c, h, w)
        return x + self.proj_out(o)


class Downsample(nn.Cell):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, stride=2)

    def construct(self, x):
        return self.conv(pad_right_bottom(x))                          # (N, C, H, W) -> (N, C, H/2, W/2)


class Upsample(nn.Cell):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv2d(channels, channels, 3, padding=1)

    def construct(self, x):
        return self.conv(upsample_nearest2x(x))                        # (N, C, H, W) -> (N, C, 2H, 2W)


class MidBlock(nn.Cell):
    def __init__(self, channels: int, groups: int, eps: float, attention_chunk: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, eps)
        self.attn_1 = AttnBlock(channels, groups, eps, attention_chunk)
        self.block_2 = ResnetBlock(channels, channels, groups, eps)

    def construct(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Cell):
    """One resolution level (models/vae_layout.VAELevel): its ResnetBlocks `block.{j}`, then the resampler
    `downsample` or `upsample` (`resampler`: "down" | "up") where the level has one."""

    def __init__(self, level: VAELevel, groups: int, eps: float, resampler: str):
        super().__init__()
        self.block = nn.CellList([ResnetBlock(cin, cout, groups, eps) for cin, cout in level.blocks()])
        self.resample = resampler if level.resample else ""
        if self.resample == "down":
            self.downsample = Downsample(level.c_out)
        elif self.resample == "up":
            self.upsample = Upsample(level.c_out)

    def construct(self, x):
        for blk in self.block:
            x = blk(x)
        if self.resample == "down":
            x = self.downsample(x)
        elif self.resample == "up":
            x = self.upsample(x)
        return x


class Encoder(nn.Cell):
    """(N, in_channels, H, W) -> (N, 2z or z, H/f, W/f) with f = 2^(levels-1) (MDL:487-601)."""

    def __init__(self, cfg: VAEConfig, attention_chunk: int = 0):
        super().__init__()
        _check_supported(cfg)
        g, eps = cfg.norm_groups, cfg.norm_eps
        layout = vae_layout(cfg)
        self.conv_in = conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.CellList([Level(lv, g, eps, "down") for lv in layout.encoder])
        self.mid = MidBlock(layout.mid_channels, g, eps, attention_chunk)
        self.norm_out = GroupNorm(g, layout.mid_channels, eps)
        self.conv_out = conv2d(layout.mid_channels, layout.moments, 3, padding=1)

    def construct(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(silu(self.norm_out(h)))


class Decoder(nn.Cell):
    """(N, z, h, w) -> (N, out_ch, f*h, f*w) (MDL:604-748). `up` is indexed by level; the deepest runs first."""

    def __init__(self, cfg: VAEConfig, attention_chunk: int = 0):
        super().__init__()
        _check_supported(cfg)
        g, eps = cfg.norm_groups, cfg.norm_eps
        layout = vae_layout(cfg)
        self.conv_in = conv2d(cfg.z_channels, layout.mid_channels, 3, padding=1)
        self.mid = MidBlock(layout.mid_channels, g, eps, attention_chunk)
        levels = [None] * len(layout.decoder)
        for lv in layout.decoder:                             # built deepest first, as the channels flow
            levels[lv.index] = Level(lv, g, eps, "up")
        self.up = nn.CellList(levels)
        self.num_levels = len(levels)
        head = layout.head_channels
        self.norm_out = GroupNorm(g, head, eps)
        self.conv_out = conv2d(head, cfg.out_ch, 3, padding=1)

    def construct(self, z):
        h = self.mid(self.conv_in(z))
        for i in range(self.num_levels - 1, -1, -1):
            h = self.up[i](h)
        return self.conv_out(silu(self.norm_out(h)))


class VAEEncoder(nn.Cell):
    """Noisy conditioning frame (N, 3, H, W) in [-1, 1] -> posterior mean (N, z, H/8, W/8), unscaled."""

    def __init__(self, cfg: VAEConfig, attention_chunk: int = 0):
        super().__init__()
        self.encoder = Encoder(cfg, attention_chunk)
        self.quant_conv = conv2d(vae_layout(cfg).moments, 2 * cfg.embed_dim, 1)
        self.embed_dim = cfg.embed_dim

    def construct(self, x):
        moments = self.quant_conv(self.encoder(x))                     # (N, 2*embed_dim, h, w): mean | logvar
        return moments[:, :self.embed_dim]


class VAEDecoder(nn.Cell):
    """Sampled latent (N, z, h, w) -> decoded frames (N, 3, 8h, 8w), raw (about [-1, 1], not clamped).

    The decode scaling lives here and nowhere else: decoder(z * (1 / scale_factor)), a multiply as in the official
    decode (DIF:117-135), in float32 by a constant Tensor and cast back to z's dtype. Not `z / scale_factor`:
    MindSpore 2.10's ONNX converter writes a tensor divided by a Python float as Cast(float32) + Div and never
    casts back, so an fp16 graph's next Conv would get a float32 input and not load (export/wrappers.py).
    """

    def __init__(self, cfg: VAEConfig, scale_factor: float, attention_chunk: int = 0):
        super().__init__()
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be > 0, got {scale_factor!r}")
        self.decoder = Decoder(cfg, attention_chunk)
        self.inv_scale = Tensor(np.asarray(1.0 / scale_factor, dtype=np.float32))

    def construct(self, z):
        return self.decoder((z.astype(ms.float32) * self.inv_scale).astype(z.dtype))
