"""SV3D's VideoUNet (SV3D_REFERENCE.md §6; VM:89-498) as a MindSpore Cell, config-driven.

Parameter names are the official state-dict names without `model.diffusion_model.` (models/keys.py lists them;
models/checkpoint.py loads them). The one shape difference: temporal (k,1,1) Conv3d weights are (Co, Ci, k, 1)
here (see unet_blocks.temporal_conv).
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from configs import UNetConfig
from .layers import GroupNorm, conv2d, linear, timestep_embedding, timestep_embedding_table
from .unet_blocks import Downsample, EmbedSequential, SiLU, SpatialVideoTransformer, Upsample, VideoResBlock


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
        self.timestep_freqs = Tensor(timestep_embedding_table(mc, cfg.max_period))

        def resblock(cin: int, cout: int) -> VideoResBlock:
            return VideoResBlock(cin, cout, cfg, num_frames)

        def transformer(ch: int) -> SpatialVideoTransformer:
            heads = ch // cfg.num_head_channels                               # VM:278-283
            return SpatialVideoTransformer(ch, heads, cfg.num_head_channels, cfg, num_frames, attention_chunk)

        # 6.2 encoder (VM:191-319): input_blocks.0 is the plain conv; then per level num_res_blocks x
        # [VideoResBlock (+ transformer where ds is an attention resolution)], and a Downsample between levels
        blocks = [nn.SequentialCell([conv2d(cfg.in_channels, mc, 3, padding=1)])]
        skip_chans = [mc]
        ch, ds = mc, 1
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [resblock(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                blocks.append(EmbedSequential(layers))
                skip_chans.append(ch)
            if level != last:
                blocks.append(EmbedSequential([Downsample(ch)]))
                skip_chans.append(ch)
                ds *= 2
        self.input_blocks = nn.CellList(blocks)

        # middle (VM:321-357): always ResBlock, transformer, ResBlock
        self.middle_block = EmbedSequential([resblock(ch, ch), transformer(ch), resblock(ch, ch)])

        # decoder (VM:359-439): per level num_res_blocks + 1 blocks, each taking one skip; Upsample at the end of
        # every level but the first
        blocks = []
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + skip_chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                blocks.append(EmbedSequential(layers))
        self.output_blocks = nn.CellList(blocks)
        self.num_input_blocks = len(self.input_blocks)
        self.num_output_blocks = len(self.output_blocks)

        # head (VM:441-445): GroupNorm32 -> SiLU -> 3x3 conv
        self.out = nn.SequentialCell([GroupNorm(g, ch, eps), SiLU(), conv2d(mc, cfg.out_channels, 3, padding=1)])

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
            h = ops.concat((h, hs[self.num_input_blocks - 1 - i]), axis=1)
            h = self.output_blocks[i](h, emb, context)
        # 5. head
        return self.out(h)                                                   # (B, out_channels, h, w)
