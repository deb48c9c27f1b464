"""SV3D's VideoUNet (SV3D_REFERENCE.md §6; VM:89-498) as a MindSpore Cell, config-driven.

Parameter names are the official state-dict names without `model.diffusion_model.` (models/keys.py lists them;
models/checkpoint.py loads them). The one shape difference: temporal (k,1,1) Conv3d weights are (Co, Ci, k, 1)
here (see unet_blocks.temporal_conv).
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from configs import UNetConfig
from runtime.conditioning import sinusoid_frequencies
from .layers import GroupNorm, conv2d, linear, timestep_embedding
from .unet_blocks import Downsample, EmbedSequential, SiLU, SpatialVideoTransformer, Upsample, VideoResBlock
from .unet_layout import CONV_IN, DOWNSAMPLE, unet_layout


class VideoUNet(nn.Cell):
    """VideoUNet for SV3D inference: F(x, c_noise, crossattn, vector) -> (B, out_channels, h, w).

    Inputs of `construct(x, timesteps, context, y)`:
      x          (B, in_channels, h, w): cat([c_in * noisy latent, conditioning latent], channel axis);
      timesteps  (B,): c_noise = 0.25 ln(sigma);
      context    (B, L, context_dim): crossattn (L = 1 in SV3D: the CLIP image embedding);
      y          (B, adm_in_channels): the "vector" conditioning.
    B = b * num_frames, frame-major within each of the b videos (b = 2 for [uc; c] in one call, 1 for one branch);
    h, w divisible by 2**(len(channel_mult) - 1).

    The official forward also takes image_only_indicator; SV3D inference always passes zeros (SVS:241-250), for
    which every AlphaBlender weight is sigmoid(mix_factor). That is what this Cell computes, so the indicator is
    no input (time_context is None in SV3D too: use_spatial_context takes it from `context`).

    attention_chunk > 0 runs the spatial self-attention over query chunks of that many tokens (memory-bounded);
    0 computes the full score matrix.
    """

    def __init__(self, cfg: UNetConfig, num_frames: int, attention_chunk: int = 0):
        super().__init__()
        if not isinstance(num_frames, int) or num_frames <= 0:
            raise ValueError(f"VideoUNet: num_frames must be a positive int, got {num_frames!r}")
        if not isinstance(attention_chunk, int) or attention_chunk < 0:
            raise ValueError(f"VideoUNet: attention_chunk must be an int >= 0 (0 = no chunking), got "
                             f"{attention_chunk!r}")
        self.cfg = cfg
        self.num_frames = num_frames
        self.attention_chunk = attention_chunk
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        g, eps = cfg.norm_groups, cfg.resblock_norm_eps

        # 6.1 embeddings (VM:156-187): time_embed and label_emb ("sequential")
        self.time_embed = nn.SequentialCell([linear(mc, ted), SiLU(), linear(ted, ted)])
        self.label_emb = nn.SequentialCell([nn.SequentialCell([linear(cfg.adm_in_channels, ted), SiLU(),
                                                               linear(ted, ted)])])
        self.timestep_freqs = Tensor(sinusoid_frequencies(mc, cfg.max_period, float32_math=True))

        def resblock(cin: int, cout: int) -> VideoResBlock:
            return VideoResBlock(cin, cout, cfg, num_frames)

        def transformer(ch: int, heads: int) -> SpatialVideoTransformer:
            return SpatialVideoTransformer(ch, heads, cfg.num_head_channels, cfg, num_frames, attention_chunk)

        def resblock_transformer(cin: int, cout: int, heads: int) -> list:
            return [resblock(cin, cout)] + ([transformer(cout, heads)] if heads else [])

        # the blocks, channels and skips come from models/unet_layout.py (VM:191-445)
        layout = unet_layout(cfg)

        # 6.2 encoder (VM:191-319): the plain conv, ResBlocks (+ transformer), a Downsample between levels
        blocks = []
        for b in layout.input_blocks:
            if b.kind == CONV_IN:
                blocks.append(nn.SequentialCell([conv2d(b.c_in, b.c_out, 3, padding=1)]))
            elif b.kind == DOWNSAMPLE:
                blocks.append(EmbedSequential([Downsample(b.c_out)]))
            else:
                blocks.append(EmbedSequential(resblock_transformer(b.c_in, b.c_out, b.heads)))
        self.input_blocks = nn.CellList(blocks)

        # middle (VM:321-357): always ResBlock, transformer, ResBlock
        m = layout.middle
        self.middle_block = EmbedSequential([resblock(m.channels, m.channels), transformer(m.channels, m.heads),
                                             resblock(m.channels, m.channels)])

        # decoder (VM:359-439): ResBlock on cat([h, skip]) (+ transformer), Upsample ending every level but the first
        blocks = []
        for o in layout.output_blocks:
            layers = resblock_transformer(o.resblock_in, o.c_out, o.heads)
            if o.upsample:
                layers.append(Upsample(o.c_out))
            blocks.append(EmbedSequential(layers))
        self.output_blocks = nn.CellList(blocks)
        self.num_input_blocks = len(self.input_blocks)
        self.num_output_blocks = len(self.output_blocks)
        self.skip_sources = tuple(o.skip for o in layout.output_blocks)     # input block index per output block

        # head (VM:441-445): GroupNorm32 -> SiLU -> 3x3 conv
        hd = layout.head
        self.out = nn.SequentialCell([GroupNorm(g, hd.c_in, eps), SiLU(), conv2d(hd.c_in, hd.c_out, 3, padding=1)])

    def construct(self, x, timesteps, context, y):
        if x.shape[0] % self.num_frames != 0:
            raise ValueError("VideoUNet: the batch must be a multiple of num_frames (b videos x num_frames)")
        # 1. embeddings (VM:461-466): sinusoid(c_noise) -> time_embed, + label_emb(vector)
        t_emb = timestep_embedding(timesteps, self.timestep_freqs)           # (B, model_channels)
        emb = self.time_embed(t_emb) + self.label_emb(y)                     # (B, time_embed_dim)
        # 2. encoder; every block's output is kept for the skips (VM:469-478)
        h = self.input_blocks[0](x)                                          # (B, model_channels, h, w)
        hs = [h]
        for i in range(1, self.num_input_blocks):
            h = self.input_blocks[i](h, emb, context)
            hs.append(h)
        # 3. middle
        h = self.middle_block(h, emb, context)
        # 4. decoder: cat([h, skip]) on channels, skips taken last-in first-out (VM:487-496)
        for i in range(self.num_output_blocks):
            h = ops.concat((h, hs[self.skip_sources[i]]), axis=1)
            h = self.output_blocks[i](h, emb, context)
        # 5. head
        return self.out(h)                                                   # (B, out_channels, h, w)
