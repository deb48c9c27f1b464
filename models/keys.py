"""The official SV3D state-dict layout (names and shapes), derived from a config alone.

Pure Python: no MindSpore, no tensors. The checkpoint loader uses it to validate a file before loading anything,
the random checkpoint writer uses it to produce a file in the official layout, and tests check it against
shared/reference/sv3d_{u,p}.keys.tsv (full size) and oracle/*/keys.json (tiny). Which prefix and layout belong
to which component is stated once, in models/components.py.

Component prefixes (SV3D_REFERENCE.md §10):
  model.diffusion_model.                      VideoUNet
  conditioner.embedders.0.open_clip.model.    OpenCLIP (visual.* used; text leftovers skipped)
  conditioner.embedders.1.encoder.            conditioner VAE (encoder.* + quant_conv.* used; decoder.*,
                                              post_quant_conv.* skipped)
  first_stage_model.                          image decoder (decoder.*)
"""
from __future__ import annotations

from typing import Dict, Tuple

from configs import SV3DConfig, UNetConfig, VAEConfig, CLIPConfig
from .unet_layout import CONV_IN, DOWNSAMPLE, unet_layout
from .vae_layout import VAELevel, vae_layout

Shape = Tuple[int, ...]
Keys = Dict[str, Shape]

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model."
VAE_ENCODER_PREFIX = "conditioner.embedders.1.encoder."
VAE_DECODER_PREFIX = "first_stage_model."


def _linear(keys: Keys, name: str, out_f: int, in_f: int, bias: bool = True) -> None:
    keys[f"{name}.weight"] = (out_f, in_f)
    if bias:
        keys[f"{name}.bias"] = (out_f,)


def _conv(keys: Keys, name: str, out_c: int, in_c: int, *kernel: int) -> None:
    keys[f"{name}.weight"] = (out_c, in_c) + tuple(kernel)
    keys[f"{name}.bias"] = (out_c,)


def _norm(keys: Keys, name: str, c: int) -> None:
    keys[f"{name}.weight"] = (c,)
    keys[f"{name}.bias"] = (c,)


# ---------------------------------------------------------------------------------------------------------- UNet


def _video_resblock(keys: Keys, p: str, cin: int, cout: int, u: UNetConfig) -> None:
    ted, kt = u.time_embed_dim, u.video_kernel_size
    _norm(keys, f"{p}.in_layers.0", cin)
    _conv(keys, f"{p}.in_layers.2", cout, cin, 3, 3)
    _linear(keys, f"{p}.emb_layers.1", cout, ted)
    _norm(keys, f"{p}.out_layers.0", cout)
    _conv(keys, f"{p}.out_layers.3", cout, cout, 3, 3)
    if cin != cout:
        _conv(keys, f"{p}.skip_connection", cout, cin, 1, 1)
    keys[f"{p}.time_mixer.mix_factor"] = (1,)
    t = f"{p}.time_stack"
    _norm(keys, f"{t}.in_layers.0", cout)
    _conv(keys, f"{t}.in_layers.2", cout, cout, *kt)
    _linear(keys, f"{t}.emb_layers.1", cout, ted)
    _norm(keys, f"{t}.out_layers.0", cout)
    _conv(keys, f"{t}.out_layers.3", cout, cout, *kt)


def _transformer_block(keys: Keys, p: str, c: int, u: UNetConfig, ff_in: bool) -> None:
    inner = u.ff_mult * c
    for attn, kv_dim in (("attn1", c), ("attn2", u.context_dim)):
        _linear(keys, f"{p}.{attn}.to_q", c, c, bias=False)
        _linear(keys, f"{p}.{attn}.to_k", c, kv_dim, bias=False)
        _linear(keys, f"{p}.{attn}.to_v", c, kv_dim, bias=False)
        _linear(keys, f"{p}.{attn}.to_out.0", c, c)
    ffs = ("ff", "ff_in") if ff_in else ("ff",)
    for ff in ffs:
        _linear(keys, f"{p}.{ff}.net.0.proj", 2 * inner, c)     # GEGLU: value and gate halves
        _linear(keys, f"{p}.{ff}.net.2", c, inner)
    norms = ("norm1", "norm2", "norm3") + (("norm_in",) if ff_in else ())
    for n in norms:
        _norm(keys, f"{p}.{n}", c)


def _spatial_video_transformer(keys: Keys, p: str, c: int, u: UNetConfig) -> None:
    _norm(keys, f"{p}.norm", c)
    _linear(keys, f"{p}.proj_in", c, c)
    _linear(keys, f"{p}.proj_out", c, c)
    keys[f"{p}.time_mixer.mix_factor"] = (1,)
    _linear(keys, f"{p}.time_pos_embed.0", 4 * c, c)
    _linear(keys, f"{p}.time_pos_embed.2", c, 4 * c)
    for d in range(u.transformer_depth):
        _transformer_block(keys, f"{p}.transformer_blocks.{d}", c, u, ff_in=False)
        _transformer_block(keys, f"{p}.time_stack.{d}", c, u, ff_in=True)


def unet_keys(u: UNetConfig) -> Keys:
    """VideoUNet names relative to model.diffusion_model. (VM:156-445)."""
    keys: Keys = {}
    mc, ted = u.model_channels, u.time_embed_dim
    _linear(keys, "time_embed.0", ted, mc)
    _linear(keys, "time_embed.2", ted, ted)
    _linear(keys, "label_emb.0.0", ted, u.adm_in_channels)
    _linear(keys, "label_emb.0.2", ted, ted)
    layout = unet_layout(u)
    for b in layout.input_blocks:
        if b.kind == CONV_IN:
            _conv(keys, f"{b.name}.0", b.c_out, b.c_in, 3, 3)
        elif b.kind == DOWNSAMPLE:
            _conv(keys, f"{b.name}.0.op", b.c_out, b.c_in, 3, 3)
        else:
            _video_resblock(keys, f"{b.name}.0", b.c_in, b.c_out, u)
            if b.attention:
                _spatial_video_transformer(keys, f"{b.name}.1", b.c_out, u)
    m = layout.middle
    _video_resblock(keys, f"{m.name}.0", m.channels, m.channels, u)
    _spatial_video_transformer(keys, f"{m.name}.1", m.channels, u)
    _video_resblock(keys, f"{m.name}.2", m.channels, m.channels, u)
    for o in layout.output_blocks:
        _video_resblock(keys, f"{o.name}.0", o.resblock_in, o.c_out, u)
        if o.attention:
            _spatial_video_transformer(keys, f"{o.name}.1", o.c_out, u)
        if o.upsample:                                      # the Upsample follows the transformer where there is one
            _conv(keys, f"{o.name}.{2 if o.attention else 1}.conv", o.c_out, o.c_out, 3, 3)
    hd = layout.head
    _norm(keys, f"{hd.name}.0", hd.c_in)
    _conv(keys, f"{hd.name}.2", hd.c_out, hd.c_in, 3, 3)
    return keys


# ----------------------------------------------------------------------------------------------------------- VAE


def _resnet_block(keys: Keys, p: str, cin: int, cout: int) -> None:
    _norm(keys, f"{p}.norm1", cin)
    _conv(keys, f"{p}.conv1", cout, cin, 3, 3)
    _norm(keys, f"{p}.norm2", cout)
    _conv(keys, f"{p}.conv2", cout, cout, 3, 3)
    if cin != cout:
        _conv(keys, f"{p}.nin_shortcut", cout, cin, 1, 1)


def _attn_block(keys: Keys, p: str, c: int) -> None:
    _norm(keys, f"{p}.norm", c)
    for n in ("q", "k", "v", "proj_out"):
        _conv(keys, f"{p}.{n}", c, c, 1, 1)


def _mid(keys: Keys, p: str, c: int) -> None:
    _resnet_block(keys, f"{p}.block_1", c, c)
    _attn_block(keys, f"{p}.attn_1", c)
    _resnet_block(keys, f"{p}.block_2", c, c)


def _level_keys(keys: Keys, p: str, level: VAELevel, resampler: str) -> None:
    for j, (cin, cout) in enumerate(level.blocks()):
        _resnet_block(keys, f"{p}.{level.name}.block.{j}", cin, cout)
    if level.resample:
        _conv(keys, f"{p}.{level.name}.{resampler}.conv", level.c_out, level.c_out, 3, 3)


def vae_encoder_keys(v: VAEConfig) -> Keys:
    """Encoder + quant_conv, relative to conditioner.embedders.1.encoder. (MDL:487-601; AE:437-462)."""
    keys: Keys = {}
    layout = vae_layout(v)
    _conv(keys, "encoder.conv_in", v.ch, v.in_channels, 3, 3)
    for level in layout.encoder:
        _level_keys(keys, "encoder", level, "downsample")
    c = layout.mid_channels
    _mid(keys, "encoder.mid", c)
    _norm(keys, "encoder.norm_out", c)
    _conv(keys, "encoder.conv_out", layout.moments, c, 3, 3)
    _conv(keys, "quant_conv", 2 * v.embed_dim, layout.moments, 1, 1)
    return keys


def vae_decoder_keys(v: VAEConfig) -> Keys:
    """Image Decoder, relative to first_stage_model. (MDL:604-748)."""
    keys: Keys = {}
    layout = vae_layout(v)
    c = layout.mid_channels
    _conv(keys, "decoder.conv_in", c, v.z_channels, 3, 3)
    _mid(keys, "decoder.mid", c)
    for level in layout.decoder:
        _level_keys(keys, "decoder", level, "upsample")
    head = layout.head_channels
    _norm(keys, "decoder.norm_out", head)
    _conv(keys, "decoder.conv_out", v.out_ch, head, 3, 3)
    return keys


# ---------------------------------------------------------------------------------------------------------- CLIP


def clip_visual_keys(c: CLIPConfig) -> Keys:
    """OpenCLIP VisionTransformer, relative to conditioner.embedders.0.open_clip.model."""
    keys: Keys = {}
    w = c.width
    keys["visual.class_embedding"] = (w,)
    keys["visual.positional_embedding"] = (c.num_patches + 1, w)
    keys["visual.proj"] = (w, c.output_dim)
    keys["visual.conv1.weight"] = (w, 3, c.patch_size, c.patch_size)
    _norm(keys, "visual.ln_pre", w)
    _norm(keys, "visual.ln_post", w)
    for i in range(c.layers):
        p = f"visual.transformer.resblocks.{i}"
        _norm(keys, f"{p}.ln_1", w)
        keys[f"{p}.attn.in_proj_weight"] = (3 * w, w)
        keys[f"{p}.attn.in_proj_bias"] = (3 * w,)
        _linear(keys, f"{p}.attn.out_proj", w, w)
        _norm(keys, f"{p}.ln_2", w)
        _linear(keys, f"{p}.mlp.c_fc", c.mlp_width, w)
        _linear(keys, f"{p}.mlp.c_proj", w, c.mlp_width)
    return keys


def clip_text_leftover_keys(c: CLIPConfig) -> Keys:
    """Text-side tensors left in the checkpoint (ENC:600 deletes only `transformer`); unused at inference."""
    return {
        "token_embedding.weight": (c.text_vocab_size, c.text_width),
        "positional_embedding": (c.text_context_length, c.text_width),
        "ln_final.weight": (c.text_width,),
        "ln_final.bias": (c.text_width,),
        "text_projection": (c.text_width, c.output_dim),
        "logit_scale": (),
    }


# ------------------------------------------------------------------------------------------------------ all keys

def unused_keys(cfg: SV3DConfig) -> Keys:
    """Tensors an official checkpoint holds that inference never reads (skipped by name, on purpose)."""
    keys: Keys = {}
    for k, s in clip_text_leftover_keys(cfg.clip).items():
        keys[CLIP_PREFIX + k] = s
    for k, s in vae_decoder_keys(cfg.vae).items():          # the conditioner VAE's own decoder
        keys[VAE_ENCODER_PREFIX + k] = s
    keys[VAE_ENCODER_PREFIX + "post_quant_conv.weight"] = (cfg.vae.z_channels, cfg.vae.embed_dim, 1, 1)
    keys[VAE_ENCODER_PREFIX + "post_quant_conv.bias"] = (cfg.vae.z_channels,)
    return keys


# Name patterns a released file may hold beyond the model's state dict (SV3D_REFERENCE.md §10): ignored too.
IGNORED_PREFIXES = ("model_ema.", "denoiser.", "first_stage_model.encoder.", "first_stage_model.quant_conv.",
                    "first_stage_model.post_quant_conv.", CLIP_PREFIX + "attn_mask", CLIP_PREFIX + "transformer.")
