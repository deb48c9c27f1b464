"""The KL-autoencoder's level layout (MDL:487-748), derived from a VAEConfig alone.

Pure Python: no MindSpore, no tensors. The one place that walks the VAE levels (ch_mult x num_res_blocks);
models/vae.py builds its Cells from it, models/keys.py the state-dict names and models/flops.py the FLOP counts.

    Encoder (MDL:487-601): conv_in -> per level i (shallowest first) num_res_blocks ResnetBlocks, then a Downsample
             unless i is the last level -> mid -> norm_out -> conv_out (2 z_channels when double_z)
    Decoder (MDL:604-748): conv_in -> mid -> per level i (deepest first) num_res_blocks + 1 ResnetBlocks, then an
             Upsample unless i = 0 -> norm_out -> conv_out

Level i works at down-sampling factor ds = 2**i relative to the image, in both halves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Tuple

if TYPE_CHECKING:                      # annotations only: importing this module needs nothing but Python
    from configs import VAEConfig


@dataclass(frozen=True)
class VAELevel:
    """`down.{index}` (encoder) or `up.{index}` (decoder): num_blocks ResnetBlocks, then an optional resampler."""
    name: str
    index: int
    c_in: int                  # channels into the first ResnetBlock
    c_out: int                 # channels out of every ResnetBlock (and of the resampler)
    num_blocks: int
    ds: int                    # down-sampling factor of the ResnetBlocks' inputs (2**index)
    resample: bool             # Downsample (encoder) / Upsample (decoder) after the blocks

    def blocks(self) -> Iterator[Tuple[int, int]]:
        """(c_in, c_out) of each ResnetBlock: the first changes the width, the rest keep it."""
        cin = self.c_in
        for _ in range(self.num_blocks):
            yield cin, self.c_out
            cin = self.c_out


@dataclass(frozen=True)
class VAELayout:
    encoder: Tuple[VAELevel, ...]   # in execution order, shallowest first
    decoder: Tuple[VAELevel, ...]   # in execution order, deepest first
    mid_channels: int               # both mid blocks (ResnetBlock, AttnBlock, ResnetBlock) and conv_in/conv_out
    moments: int                    # the encoder's conv_out width: 2 * z_channels when double_z (mean | logvar)

    @property
    def head_channels(self) -> int:
        """Width into the decoder's norm_out and conv_out (its shallowest level's)."""
        return self.decoder[-1].c_out


def vae_layout(cfg: VAEConfig) -> VAELayout:
    """Both halves' levels for `cfg`, in execution order (MDL:487-748)."""
    ch, mults, last = cfg.ch, tuple(cfg.ch_mult), len(cfg.ch_mult) - 1
    # encoder (MDL:487-601): level i maps ch * in_ch_mult[i] -> ch * ch_mult[i], in_ch_mult = (1,) + ch_mult
    in_mult = (1,) + mults
    encoder = tuple(VAELevel(f"down.{i}", i, ch * in_mult[i], ch * m, cfg.num_res_blocks, 2 ** i, i != last)
                    for i, m in enumerate(mults))
    # decoder (MDL:604-748): built and run deepest first, from the mid width down to ch * ch_mult[i]
    decoder = []
    block_in = ch * mults[-1]
    for i in reversed(range(len(mults))):
        decoder.append(VAELevel(f"up.{i}", i, block_in, ch * mults[i], cfg.num_res_blocks + 1, 2 ** i, i != 0))
        block_in = ch * mults[i]
    moments = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
    return VAELayout(encoder, tuple(decoder), ch * mults[-1], moments)
