"""FLOPs of each SV3D graph, counted from the config alone.

Convention (the one of shared/reference/SV3D_FLOPS.md, i.e. torch.utils.flop_counter): **2 FLOPs per
multiply-accumulate**, and only matrix products and convolutions are counted -- linear layers, convolutions and
the two attention matmuls (Q K^T and P V). Norms, softmax, activations, adds and up-sampling are not counted (a few
percent of the work at most).

Every count is a list of `Term`s (kind, group, block, flops) so that it can be broken down three ways:
  kind   conv | linear | attention                 (the split SV3D_FLOPS.md reports)
  group  what the work is (e.g. "resblock conv3x3", "temporal ff", "spatial attn1")
  block  the top-level module (e.g. "input_blocks.4", "middle_block", "mid", "layers")

Two UNet counts are offered:
  mode="reference"  the official computation, term by term what the PyTorch counter sees;
  mode="executed"   what models/unet.py actually runs. Its cross-attentions see a single context token, where
                    softmax over one key is identically 1, so they compute to_out(to_v(context)) once per
                    context row (no q/k projection, no attention matmuls, no per-token output projection,
                    no repeat of the context over the temporal block's locations), and the frame-position MLP
                    runs once on the T frame indices instead of once per batch row.
Chunked (memory-bounded) attention does not change either count.

Shapes: the UNet runs on `batch` = b * T rows (b videos of T = cfg.num_frames frames); latents are
resolution / latent_factor. All arithmetic is in Python ints, so the counts are exact.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

from runtime.specs import GRAPH_NAMES
from .unet_layout import CONV_IN, DOWNSAMPLE, TIME_POS_EMBED_MULT, unet_layout
from .vae_layout import VAELevel, vae_layout

KINDS = ("conv", "linear", "attention")
MODES = ("reference", "executed")

# SV3D's crossattn is one CLIP embedding per frame: context (B, 1, context_dim) (runtime/specs.py).
CONTEXT_TOKENS = 1
# The FeedForward GEGLU doubles its projection (value | gate).
GEGLU_BRANCHES = 2
# VAE mid-block attention is single-head over all positions (MDL:204-265); the CLIP tower has one class token.
CLIP_CLASS_TOKENS = 1


# ---------------------------------------------------------------------------------------------------------------
# primitives (2 FLOPs per multiply-accumulate)


def conv_flops(n: int, c_in: int, c_out: int, kernel: Tuple[int, ...], out_positions: int) -> int:
    """A dense convolution producing `out_positions` outputs per channel per sample."""
    taps = 1
    for k in kernel:
        taps *= k
    return 2 * n * out_positions * c_in * c_out * taps


def linear_flops(rows: int, f_in: int, f_out: int) -> int:
    """x (rows, f_in) @ W^T (f_in, f_out)."""
    return 2 * rows * f_in * f_out


def attention_flops(groups: int, n_q: int, n_k: int, width: int) -> int:
    """Q K^T and P V for `groups` independent sequences with `width` = heads * head_dim channels in total.

    Per head (d = head_dim): 2 n_q n_k d for the scores and 2 n_q n_k d for P V; summed over heads the head
    dimension adds up to the width, so the head count drops out.
    """
    return 2 * 2 * groups * n_q * n_k * width


@dataclass(frozen=True)
class Term:
    kind: str      # conv | linear | attention
    group: str
    block: str
    flops: int


class FlopCount:
    """The counted FLOPs of one graph at fixed shapes, with breakdowns."""

    def __init__(self, graph: str, terms: Iterable[Term], **shapes):
        self.graph = graph
        self.terms: Tuple[Term, ...] = tuple(terms)
        self.shapes = dict(shapes)
        for t in self.terms:
            if t.kind not in KINDS:
                raise ValueError(f"term kind must be one of {KINDS}, got {t.kind!r}")

    @property
    def total(self) -> int:
        return sum(t.flops for t in self.terms)

    def _by(self, attr: str) -> Dict[str, int]:
        out: Dict[str, int] = OrderedDict()
        for t in self.terms:
            key = getattr(t, attr)
            out[key] = out.get(key, 0) + t.flops
        return out

    def by_kind(self) -> Dict[str, int]:
        d = self._by("kind")
        return OrderedDict((k, d.get(k, 0)) for k in KINDS)

    def by_group(self) -> Dict[str, int]:
        return self._by("group")

    def by_block(self) -> Dict[str, int]:
        return self._by("block")

    def to_dict(self) -> dict:
        return {"graph": self.graph, "shapes": self.shapes, "total": self.total, "by_kind": self.by_kind(),
                "by_group": self.by_group(), "by_block": self.by_block()}

    def __repr__(self) -> str:
        return f"FlopCount({self.graph}, total={self.total:,}, {dict(self.by_kind())})"


class _Terms:
    """Accumulates terms under the current top-level block name."""

    def __init__(self):
        self.items: List[Term] = []
        self.block = ""

    def add(self, kind: str, group: str, flops: int) -> None:
        if flops:
            self.items.append(Term(kind, group, self.block, flops))


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


# ---------------------------------------------------------------------------------------------------------------
# UNet


def unet_flops(cfg, resolution: int, batch: int, mode: str = "reference") -> FlopCount:
    """One VideoUNet forward at `resolution` pixels on `batch` rows (2T = both CFG branches, or T).

    cfg is an SV3DConfig; the frame count T is cfg.num_frames and batch must be a multiple of it.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_positive(resolution=resolution, batch=batch)
    u, T = cfg.unet, cfg.num_frames
    if batch % T:
        raise ValueError(f"UNet batch must be a multiple of num_frames {T} (b videos x T frames), got {batch}")
    if resolution % cfg.latent_factor:
        raise ValueError(f"resolution must be a multiple of latent_factor {cfg.latent_factor}, got {resolution}")
    down = u.downsample_factor
    lat = cfg.latent_size(resolution)
    if lat % down:
        raise ValueError(f"latent size {lat} must be divisible by the UNet's down-sampling {down}")
    B, b = batch, batch // T
    ref = mode == "reference"
    mc, ted, ctx = u.model_channels, u.time_embed_dim, u.context_dim
    kt = u.video_kernel_size[0]
    acc = _Terms()

    def resblock(c_in: int, c_out: int, hw: int) -> None:
        # spatial ResBlock on (B, C, H, W)
        acc.add("conv", "resblock conv3x3", conv_flops(B, c_in, c_out, (3, 3), hw))
        acc.add("conv", "resblock conv3x3", conv_flops(B, c_out, c_out, (3, 3), hw))
        acc.add("linear", "resblock emb_layers", linear_flops(B, ted, c_out))
        if c_in != c_out:
            acc.add("conv", "skip conv1x1", conv_flops(B, c_in, c_out, (1, 1), hw))
        # temporal ResBlock: two (kt,1,1) convs over T frames at every location (zero-padded, T outputs)
        acc.add("conv", "temporal conv", 2 * conv_flops(b, c_out, c_out, (kt, 1, 1), T * hw))
        acc.add("linear", "resblock emb_layers", linear_flops(B, ted, c_out))

    def feed_forward(rows: int, c: int, group: str) -> None:
        inner = u.ff_mult * c
        acc.add("linear", group, linear_flops(rows, c, GEGLU_BRANCHES * inner) + linear_flops(rows, inner, c))

    def transformer(c: int, s: int) -> None:
        tokens = B * s                                                  # (B, S, C) rows
        acc.add("linear", "proj_in/proj_out", 2 * linear_flops(tokens, c, c))
        pos_rows = B if ref else T                                      # frame-position MLP rows
        width = TIME_POS_EMBED_MULT * c
        acc.add("linear", "time_pos_embed", linear_flops(pos_rows, c, width) + linear_flops(pos_rows, width, c))
        for _ in range(u.transformer_depth):
            # spatial BasicTransformerBlock on (B, S, C): self-attention over S tokens
            acc.add("linear", "spatial attn1 q,k,v,out", 4 * linear_flops(tokens, c, c))
            acc.add("attention", "spatial attn1", attention_flops(B, s, s, c))
            if ref:   # cross-attention to the frame's context tokens
                acc.add("linear", "spatial attn2 q,k,v,out", 2 * linear_flops(tokens, c, c)
                        + 2 * linear_flops(B * CONTEXT_TOKENS, ctx, c))
                acc.add("attention", "spatial attn2", attention_flops(B, s, CONTEXT_TOKENS, c))
            else:     # single key: to_out(to_v(context)) per frame, broadcast over the S queries
                acc.add("linear", "spatial attn2 v,out", linear_flops(B, ctx, c) + linear_flops(B, c, c))
            feed_forward(tokens, c, "spatial ff")
            # temporal VideoTransformerBlock on (b*S, T, C): ff_in, self-attention over T frames, cross, ff
            feed_forward(tokens, c, "temporal ff_in")
            acc.add("linear", "temporal attn1 q,k,v,out", 4 * linear_flops(tokens, c, c))
            acc.add("attention", "temporal attn1", attention_flops(b * s, T, T, c))
            if ref:   # the video's first-frame context, repeated at each of the S locations
                acc.add("linear", "temporal attn2 q,k,v,out", 2 * linear_flops(tokens, c, c)
                        + 2 * linear_flops(b * s * CONTEXT_TOKENS, ctx, c))
                acc.add("attention", "temporal attn2", attention_flops(b * s, T, CONTEXT_TOKENS, c))
            else:
                acc.add("linear", "temporal attn2 v,out", linear_flops(b, ctx, c) + linear_flops(b, c, c))
            feed_forward(tokens, c, "temporal ff")

    # 1. embeddings
    acc.block = "time_embed"
    acc.add("linear", "time_embed/label_emb", linear_flops(B, mc, ted) + linear_flops(B, ted, ted))
    acc.block = "label_emb"
    acc.add("linear", "time_embed/label_emb", linear_flops(B, u.adm_in_channels, ted) + linear_flops(B, ted, ted))

    # 2. encoder (models/unet_layout.py); a block at ds works on (lat / ds)^2 positions
    layout = unet_layout(u)
    for blk in layout.input_blocks:
        acc.block = blk.name
        size = lat // blk.ds_out
        if blk.kind == CONV_IN:
            acc.add("conv", "conv_in/out", conv_flops(B, blk.c_in, blk.c_out, (3, 3), size * size))
        elif blk.kind == DOWNSAMPLE:                                    # stride-2 conv, symmetric pad 1
            acc.add("conv", "downsample/upsample conv3x3", conv_flops(B, blk.c_in, blk.c_out, (3, 3), size * size))
        else:
            resblock(blk.c_in, blk.c_out, size * size)
            if blk.attention:
                transformer(blk.c_out, size * size)

    # 3. middle
    m = layout.middle
    acc.block = m.name
    size = lat // m.ds
    resblock(m.channels, m.channels, size * size)
    transformer(m.channels, size * size)
    resblock(m.channels, m.channels, size * size)

    # 4. decoder: each ResBlock takes cat([h, skip])
    for blk in layout.output_blocks:
        acc.block = blk.name
        size = lat // blk.ds
        resblock(blk.resblock_in, blk.c_out, size * size)
        if blk.attention:
            transformer(blk.c_out, size * size)
        if blk.upsample:                                                # nearest x2, then 3x3 conv
            size = lat // blk.ds_out
            acc.add("conv", "downsample/upsample conv3x3", conv_flops(B, blk.c_out, blk.c_out, (3, 3), size * size))

    # 5. head, at ds = 1
    hd = layout.head
    acc.block = hd.name
    acc.add("conv", "conv_in/out", conv_flops(B, hd.c_in, hd.c_out, (3, 3), lat * lat))
    return FlopCount("unet", acc.items, resolution=resolution, latent=lat, batch=batch, frames=T, mode=mode)


# ---------------------------------------------------------------------------------------------------------------
# VAE


def _vae_resblock(acc: _Terms, n: int, c_in: int, c_out: int, hw: int) -> None:
    """ResnetBlock without temb (MDL:94-151): two 3x3 convs, 1x1 nin_shortcut when the width changes."""
    acc.add("conv", "resblock conv3x3", conv_flops(n, c_in, c_out, (3, 3), hw))
    acc.add("conv", "resblock conv3x3", conv_flops(n, c_out, c_out, (3, 3), hw))
    if c_in != c_out:
        acc.add("conv", "nin_shortcut conv1x1", conv_flops(n, c_in, c_out, (1, 1), hw))


def _vae_attention(acc: _Terms, n: int, c: int, hw: int) -> None:
    """AttnBlock (MDL:204-265): 1x1 q, k, v, proj_out convs; single-head attention over all hw positions."""
    acc.add("conv", "attention conv1x1", 4 * conv_flops(n, c, c, (1, 1), hw))
    acc.add("attention", "mid attention", attention_flops(n, hw, hw, c))


def _vae_mid(acc: _Terms, n: int, c: int, hw: int) -> None:
    acc.block = "mid"
    _vae_resblock(acc, n, c, c, hw)
    _vae_attention(acc, n, c, hw)
    _vae_resblock(acc, n, c, c, hw)


def _vae_check(cfg, resolution: int) -> int:
    if resolution % cfg.vae.downsample_factor:
        raise ValueError(f"resolution must be a multiple of the VAE down-sampling {cfg.vae.downsample_factor}, "
                         f"got {resolution}")
    return resolution // cfg.vae.downsample_factor


def _vae_level(acc: _Terms, n: int, level: VAELevel, resolution: int, resampler: str) -> None:
    """A level's ResnetBlocks at resolution / ds, then its resampler's 3x3 conv at the output size."""
    acc.block = level.name
    size = resolution // level.ds
    for c_in, c_out in level.blocks():
        _vae_resblock(acc, n, c_in, c_out, size * size)
    if level.resample:
        size = size * 2 if resampler == "upsample" else size // 2
        acc.add("conv", f"{resampler} conv3x3", conv_flops(n, level.c_out, level.c_out, (3, 3), size * size))


def vae_decoder_flops(cfg, resolution: int, frames: int = 1) -> FlopCount:
    """Image Decoder (MDL:604-748; no post_quant_conv): `frames` latents -> frames x 3 x S x S.

    Per-frame, so chunking (14 + 7) does not change the total for a given number of frames.
    """
    _check_positive(resolution=resolution, frames=frames)
    v, n = cfg.vae, frames
    size = _vae_check(cfg, resolution)
    layout = vae_layout(v)
    acc = _Terms()
    acc.block = "conv_in"
    acc.add("conv", "conv_in/out", conv_flops(n, v.z_channels, layout.mid_channels, (3, 3), size * size))
    _vae_mid(acc, n, layout.mid_channels, size * size)
    for level in layout.decoder:                                        # Upsample: nearest x2, then 3x3 conv
        _vae_level(acc, n, level, resolution, "upsample")
    acc.block = "conv_out"
    acc.add("conv", "conv_in/out", conv_flops(n, layout.head_channels, v.out_ch, (3, 3), resolution * resolution))
    return FlopCount("vae_decoder", acc.items, resolution=resolution, frames=frames)


def vae_encoder_flops(cfg, resolution: int, frames: int = 1) -> FlopCount:
    """Conditioner Encoder (MDL:487-601) + quant_conv (1x1, 2*embed_dim -> 2*embed_dim); the mean is sliced off
    afterwards, so models/vae.py runs exactly this too."""
    _check_positive(resolution=resolution, frames=frames)
    v, n = cfg.vae, frames
    size = _vae_check(cfg, resolution)
    layout = vae_layout(v)
    acc = _Terms()
    acc.block = "conv_in"
    acc.add("conv", "conv_in/out", conv_flops(n, v.in_channels, v.ch, (3, 3), resolution * resolution))
    for level in layout.encoder:                                        # pad (0,1,0,1), 3x3 stride 2, no pad
        _vae_level(acc, n, level, resolution, "downsample")
    _vae_mid(acc, n, layout.mid_channels, size * size)
    acc.block = "conv_out"
    acc.add("conv", "conv_in/out", conv_flops(n, layout.mid_channels, layout.moments, (3, 3), size * size))
    acc.block = "quant_conv"
    acc.add("conv", "attention conv1x1", conv_flops(n, layout.moments, 2 * v.embed_dim, (1, 1), size * size))
    return FlopCount("vae_encoder", acc.items, resolution=resolution, frames=frames)


# ---------------------------------------------------------------------------------------------------------------
# CLIP


def clip_flops(cfg) -> FlopCount:
    """OpenCLIP ViT vision tower on one preprocessed image (image_size^2): the pooled, projected embedding."""
    c = cfg.clip
    acc = _Terms()
    tokens = c.num_patches + CLIP_CLASS_TOKENS
    w, mlp = c.width, c.mlp_width
    acc.block = "conv1"
    acc.add("conv", "patch conv", conv_flops(1, 3, w, (c.patch_size, c.patch_size), c.num_patches))
    acc.block = "transformer"
    for _ in range(c.layers):
        acc.add("linear", "attn in_proj/out_proj", linear_flops(tokens, w, 3 * w) + linear_flops(tokens, w, w))
        acc.add("attention", "attention", attention_flops(1, tokens, tokens, w))
        acc.add("linear", "mlp", linear_flops(tokens, w, mlp) + linear_flops(tokens, mlp, w))
    acc.block = "proj"
    acc.add("linear", "proj", linear_flops(1, w, c.output_dim))
    return FlopCount("clip_encoder", acc.items, image_size=c.image_size)


def clip_resize_flops(cfg, resolution: int) -> FlopCount:
    """The CLIP input resize as two constant matrices per channel (models/clip_preprocess.py):
    M_h (224, S) @ X (S, S), then (224, S) @ M_w^T (S, 224). Not part of the reference count (kornia's resize
    is no matmul); counted where an exported graph does it as matmuls."""
    _check_positive(resolution=resolution)
    o, s = cfg.clip.image_size, resolution
    acc = _Terms()
    acc.block = "preprocess"
    acc.add("linear", "resize matmuls", 3 * (2 * o * s * s + 2 * o * s * o))
    return FlopCount("clip_resize", acc.items, resolution=resolution)


def _clip_encoder_graph(cfg, shapes, mode: str) -> FlopCount:
    tower = clip_flops(cfg)
    if mode == "reference":
        return tower
    return FlopCount("clip_encoder", tower.terms + clip_resize_flops(cfg, shapes.resolution).terms,
                     image_size=shapes.resolution)


# graph name (runtime/specs.py) -> the count of one call at its export shapes (ExportShapes) in a mode
GRAPH_COUNTERS = {
    "clip_encoder": _clip_encoder_graph,
    "vae_encoder": lambda cfg, shapes, mode: vae_encoder_flops(cfg, shapes.resolution),
    "unet": lambda cfg, shapes, mode: unet_flops(cfg, shapes.resolution, shapes.unet_batch, mode),
    "vae_decoder": lambda cfg, shapes, mode: vae_decoder_flops(cfg, shapes.resolution, shapes.decode_chunk),
}
if tuple(GRAPH_COUNTERS) != GRAPH_NAMES:
    raise RuntimeError(f"models/flops.py GRAPH_COUNTERS must count exactly the graphs of runtime/specs.py "
                       f"{GRAPH_NAMES}, got {tuple(GRAPH_COUNTERS)}")


def graph_flops(cfg, graph: str, shapes, mode: str = "executed") -> FlopCount:
    """FLOPs of one call of an exported graph (runtime/specs.py names) at its export shapes (ExportShapes).

    executed: what the graph computes -- the UNet without the single-key cross-attention work, CLIP with the
    resize matmuls models/clip.py builds in; reference: the official computation of the same call.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if graph not in GRAPH_COUNTERS:
        raise ValueError(f"unknown graph {graph!r}; expected one of {', '.join(GRAPH_NAMES)}")
    return GRAPH_COUNTERS[graph](cfg, shapes, mode)


# ---------------------------------------------------------------------------------------------------------------
# whole generation


def generation_flops(cfg, resolution: int, steps: int, unet_batch: int = 0, mode: str = "reference") -> dict:
    """FLOPs of one generation, per stage: {stage: (calls, flops per call, total)} and "total".

    The reference runs the conditioner for c and uc (the uc outputs are then zeroed), i.e. CLIP and the VAE
    encoder twice; "executed" assumes a runtime that runs them once. The UNet runs `steps` times on 2T rows
    (unet_batch = 2T) or 2*steps times on T rows (unet_batch = T).
    """
    _check_positive(steps=steps)
    T = cfg.num_frames
    unet_batch = unet_batch or 2 * T
    calls_per_step = (2 * T) // unet_batch
    cond_calls = 2 if mode == "reference" else 1
    unet = unet_flops(cfg, resolution, unet_batch, mode).total
    stages = OrderedDict([
        ("unet", (steps * calls_per_step, unet)),
        ("vae_decoder", (1, vae_decoder_flops(cfg, resolution, T).total)),
        ("vae_encoder", (cond_calls, vae_encoder_flops(cfg, resolution).total)),
        ("clip_encoder", (cond_calls, clip_flops(cfg).total)),
    ])
    out = OrderedDict((k, {"calls": n, "flops_per_call": f, "flops": n * f}) for k, (n, f) in stages.items())
    out["total"] = sum(v["flops"] for v in out.values())
    return out


def generation_flops_executed(cfg, shapes, steps: int) -> int:
    """What one `SV3DPipeline.generate` runs on an export (ExportShapes): CLIP (with its resize) and the VAE
    encoder once, `steps` x (2T / unet_batch) UNet calls, and ceil(T / decode_chunk) decoder calls of
    decode_chunk frames (the last chunk is zero-padded to the graph's batch, so it costs a full chunk)."""
    _check_positive(steps=steps)
    calls_per_step = (2 * shapes.num_frames) // shapes.unet_batch
    chunks = -(-shapes.num_frames // shapes.decode_chunk)
    return (graph_flops(cfg, "clip_encoder", shapes).total + graph_flops(cfg, "vae_encoder", shapes).total
            + steps * calls_per_step * graph_flops(cfg, "unet", shapes).total
            + chunks * graph_flops(cfg, "vae_decoder", shapes).total)
