"""The VideoUNet's block layout (SV3D_REFERENCE.md §6; VM:89-498), derived from a UNetConfig alone.

Pure Python: no MindSpore, no tensors. This is the one place that walks the levels (channel_mult x
num_res_blocks); models/unet.py builds its Cells from it, models/keys.py the state-dict names, models/flops.py
the FLOP count and export/api.py the attention-memory estimate.

    input_blocks.0               conv_in: 3x3 conv in_channels -> model_channels, at ds = 1
    input_blocks.1 ...           per level l (ds = 2**l): num_res_blocks x VideoResBlock (+ SpatialVideoTransformer
                                 where ds is in attention_resolutions), then a Downsample unless l is the last level
    middle_block                 VideoResBlock, SpatialVideoTransformer, VideoResBlock at the deepest ds
    output_blocks.0 ...          per level, deepest first: num_res_blocks + 1 x VideoResBlock on cat([h, skip])
                                 (+ transformer as above), the level's last block ending in an Upsample unless l = 0
    out                          GroupNorm -> SiLU -> 3x3 conv model_channels -> out_channels

`ds` is the down-sampling factor relative to the latent: a block at ds works on (latent / ds)^2 positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Tuple

if TYPE_CHECKING:                      # annotations only: importing this module needs nothing but Python
    from configs import UNetConfig

CONV_IN = "conv_in"
RESBLOCK = "resblock"          # VideoResBlock, followed by a SpatialVideoTransformer where heads > 0
DOWNSAMPLE = "downsample"      # 3x3 conv, stride 2
# SpatialVideoTransformer.time_pos_embed is Linear(C -> 4C) -> SiLU -> Linear(4C -> C): the 4 is written into
# the official module (VA:233, `time_embed_dim = self.in_channels * 4`), it is no config field. The Cells
# (models/unet_blocks.py) and the FLOP count (models/flops.py) read it here.
TIME_POS_EMBED_MULT = 4


@dataclass(frozen=True)
class InputBlock:
    """input_blocks.{index}: (B, c_in, H, W) at ds -> (B, c_out, H', W') at ds_out; its output is a skip."""
    index: int
    kind: str                  # conv_in | resblock | downsample
    c_in: int
    c_out: int
    ds: int                    # down-sampling factor of the block's input
    heads: int = 0             # > 0: the ResBlock is followed by a transformer with this many heads

    @property
    def name(self) -> str:
        return f"input_blocks.{self.index}"

    @property
    def attention(self) -> bool:
        return self.heads > 0

    @property
    def ds_out(self) -> int:
        return 2 * self.ds if self.kind == DOWNSAMPLE else self.ds


@dataclass(frozen=True)
class MiddleBlock:
    """middle_block: VideoResBlock, SpatialVideoTransformer, VideoResBlock, all at `channels` (VM:321-357)."""
    channels: int
    ds: int
    heads: int

    name = "middle_block"


@dataclass(frozen=True)
class OutputBlock:
    """output_blocks.{index}: VideoResBlock(c_in + skip_channels -> c_out) on cat([h, input_blocks[skip]]),
    then a transformer where heads > 0, then a nearest-x2 Upsample (3x3 conv) where `upsample`."""
    index: int
    c_in: int                  # channels of h, from the block before
    skip: int                  # index of the input block whose output is concatenated (last in, first out)
    skip_channels: int
    c_out: int
    ds: int                    # down-sampling factor of the ResBlock and transformer
    heads: int
    upsample: bool

    @property
    def name(self) -> str:
        return f"output_blocks.{self.index}"

    @property
    def attention(self) -> bool:
        return self.heads > 0

    @property
    def resblock_in(self) -> int:
        return self.c_in + self.skip_channels

    @property
    def ds_out(self) -> int:
        return self.ds // 2 if self.upsample else self.ds


@dataclass(frozen=True)
class Head:
    """out: GroupNorm32 -> SiLU -> 3x3 conv c_in -> c_out, at ds = 1 (VM:441-445)."""
    c_in: int
    c_out: int

    name = "out"


@dataclass(frozen=True)
class UNetLayout:
    input_blocks: Tuple[InputBlock, ...]
    middle: MiddleBlock
    output_blocks: Tuple[OutputBlock, ...]
    head: Head

    def transformers(self) -> Iterator[Tuple[str, int, int, int]]:
        """(block name, channels, ds, heads) of every SpatialVideoTransformer, in execution order."""
        for b in self.input_blocks:
            if b.attention:
                yield b.name, b.c_out, b.ds, b.heads
        yield self.middle.name, self.middle.channels, self.middle.ds, self.middle.heads
        for o in self.output_blocks:
            if o.attention:
                yield o.name, o.c_out, o.ds, o.heads


def unet_layout(cfg: UNetConfig) -> UNetLayout:
    """Every block of the VideoUNet for `cfg`, in execution order (VM:191-445)."""
    mc = cfg.model_channels
    if cfg.channel_mult[0] != 1:
        # the head normalises the last decoder width but convolves model_channels (VM:441-445)
        raise ValueError(f"unet.channel_mult must start with 1 (the output head convolves model_channels), "
                         f"got {list(cfg.channel_mult)}")

    def heads(ch: int, ds: int) -> int:
        # transformer where ds is an attention resolution; heads = ch / num_head_channels (VM:278-283)
        return ch // cfg.num_head_channels if ds in cfg.attention_resolutions else 0

    # encoder (VM:191-319): input_blocks.0 is the plain conv; then per level num_res_blocks x
    # [VideoResBlock (+ transformer where ds is an attention resolution)], and a Downsample between levels
    inputs = [InputBlock(0, CONV_IN, cfg.in_channels, mc, 1)]
    ch, ds = mc, 1
    last = len(cfg.channel_mult) - 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            inputs.append(InputBlock(len(inputs), RESBLOCK, ch, mult * mc, ds, heads(mult * mc, ds)))
            ch = mult * mc
        if level != last:
            inputs.append(InputBlock(len(inputs), DOWNSAMPLE, ch, ch, ds))
            ds *= 2

    # middle (VM:321-357): always ResBlock, transformer, ResBlock
    middle = MiddleBlock(ch, ds, ch // cfg.num_head_channels)

    # decoder (VM:359-439): per level num_res_blocks + 1 blocks, each taking one skip (the encoder outputs last in,
    # first out); Upsample at the end of every level but the first
    outputs = []
    skips = list(inputs)
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            skip = skips.pop()
            up = bool(level) and i == cfg.num_res_blocks
            outputs.append(OutputBlock(len(outputs), ch, skip.index, skip.c_out, mult * mc, ds,
                                       heads(mult * mc, ds), up))
            ch = mult * mc
            if up:
                ds //= 2

    # head (VM:441-445)
    return UNetLayout(tuple(inputs), middle, tuple(outputs), Head(ch, cfg.out_channels))
