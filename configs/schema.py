"""Typed, validated SV3D configuration.

Every architecture dimension and pipeline constant of SV3D lives in these dataclasses; the YAML files beside
this module fill them. Citations (file:line) point into Stability-AI/generative-models, as collected in
../shared/reference/SV3D_REFERENCE.md.

Only the standard library is imported here (YAML is parsed lazily in ``loader``), so the numpy-only runtime can
rebuild a config from the JSON a manifest carries.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from .errors import SV3DError

VARIANTS = ("sv3d_u", "sv3d_p")
GUIDERS = ("triangle", "linear", "constant")


class ConfigError(SV3DError, ValueError):
    """A config field is missing, of the wrong type, or inconsistent with another field."""


@dataclass(frozen=True)
class UNetConfig:
    """VideoUNet (VM:89-498; CU:14-34)."""
    in_channels: int = 8                    # 4 noisy-latent + 4 conditioning-latent channels (WRP:27)
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: Tuple[int, ...] = (4, 2, 1)   # down-sampling factors ds that get a transformer
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024                 # CLIP image-embedding width (crossattn)
    adm_in_channels: int = 256              # width of the "vector" conditioning
    time_embed_mult: int = 4                # time_embed_dim = 4 * model_channels (VM:156)
    video_kernel_size: Tuple[int, int, int] = (3, 1, 1)
    max_period: int = 10000                 # timestep / frame-position embedding (DU:237-261)
    norm_groups: int = 32                   # GroupNorm32 (DU:289-306)
    resblock_norm_eps: float = 1e-5         # GroupNorm32 in ResBlocks and the `out` head
    transformer_norm_eps: float = 1e-6      # SpatialTransformer.norm (ATT:125-128)
    layer_norm_eps: float = 1e-5            # LayerNorms inside the transformer blocks
    ff_mult: int = 4                        # GEGLU inner width = ff_mult * C (ATT:97-113)

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * self.time_embed_mult

    @property
    def downsample_factor(self) -> int:
        """A Downsample between consecutive levels (VM:191-319): latent sizes must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class VAEConfig:
    """KL autoencoder: Encoder (conditioner, MDL:487-601) and image Decoder (first stage, MDL:604-748)."""
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    double_z: bool = True
    attn_resolutions: Tuple[int, ...] = ()  # only the mid block has attention in SV3D
    norm_groups: int = 32
    norm_eps: float = 1e-6                  # every GroupNorm of the VAE (MDL:52-55)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class CLIPConfig:
    """OpenCLIP ViT image tower (ViT-H/14 officially) and its preprocessing (ENC:579-650)."""
    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    heads: int = 16
    mlp_ratio: float = 4.0
    output_dim: int = 1024
    layer_norm_eps: float = 1e-5
    mean: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)   # ENC:612-617
    std: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    resize_align_corners: bool = True       # kornia.geometry.resize(..., align_corners=True) (ENC:626-632)
    resize_antialias: bool = True
    bicubic_a: float = -0.75                # PyTorch's bicubic coefficient
    # Text-tower leftovers that the official checkpoint still holds (only `transformer` is deleted, ENC:600).
    # Unused at inference: the loader skips them by name; the random checkpoint writer reproduces them.
    text_vocab_size: int = 49408
    text_context_length: int = 77
    text_width: int = 1024

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class ConditionerConfig:
    """Conditioning constants (SVS:70-94, 205-213; CU/CP embedder list)."""
    cond_aug: float = 1e-5                  # forced for sv3d (SVS:70-81)
    cond_aug_embed_dim: int = 256           # ConcatTimestepEmbedderND(outdim) for cond_aug
    camera_embed_dim: int = 0               # outdim for polars_rad and azimuths_rad (sv3d_p: 512; sv3d_u: 0)
    default_elevation_deg: float = 10.0     # SVS:25-39
    polar_offset_deg: float = 90.0          # polar = 90 - elevation (SVS:87)
    max_period: int = 10000
    elevation_range_deg: Tuple[float, float] = (-90.0, 90.0)   # validity range for user orbits
    # "dynamic" orbit preset (runtime/orbits.py): elevation_k = base + amplitude * sin(2 pi k / T). Our choice, not
    # an official constant: 20 deg keeps the default orbit (base 10 deg) within [-10, 30] deg.
    dynamic_elevation_amplitude_deg: float = 20.0

    @property
    def vector_dim(self) -> int:
        return self.cond_aug_embed_dim + 2 * self.camera_embed_dim


@dataclass(frozen=True)
class SamplerConfig:
    """EulerEDMSampler with EDMDiscretization (SMP:83-215; DISC:17-39)."""
    num_steps: int = 50
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0


@dataclass(frozen=True)
class GuiderConfig:
    """Per-frame classifier-free guidance (GDR:78-131)."""
    kind: str = "triangle"
    min_scale: float = 1.0
    max_scale: float = 2.5
    triangle_period: float = 1.0            # TrianglePredictionGuider period: one triangle over the orbit (GDR:102-131)


@dataclass(frozen=True)
class SV3DConfig:
    variant: str = "sv3d_u"
    num_frames: int = 21
    resolution: int = 576                   # default export/inference size (square)
    latent_channels: int = 4
    latent_factor: int = 8                  # pixels per latent (VAE down-sampling)
    scale_factor: float = 0.18215           # latent -> decoder input: z / scale_factor (DIF:117-135); decode only
    decode_chunk: int = 14                  # most frames per VAE-decoder call (decoding_t, SVS:253)
    seed: int = 23
    image_frame_ratio: Optional[float] = None
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    conditioner: ConditionerConfig = field(default_factory=ConditionerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    guider: GuiderConfig = field(default_factory=GuiderConfig)
    name: str = ""                          # free-form label (e.g. "sv3d_u_tiny")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def has_camera(self) -> bool:
        return self.variant == "sv3d_p"

    def latent_size(self, resolution: Optional[int] = None) -> int:
        """Latent side at ``resolution`` pixels (default: the config's)."""
        return _latent_size(self.resolution if resolution is None else resolution, self.latent_factor)

    def decoder_call_frames(self) -> int:
        """Frames per VAE-decoder call an export uses by default: the largest divisor of num_frames that is at
        most decode_chunk (21 frames, decoding_t 14 -> 7). The image decoder works frame by frame, so the chunk
        changes no output; a divisor decodes no padding frames (chunks of 14 decode 14 + 7 padded to 14 = 28
        frames for 21), and the smaller chunk bounds the decoder's activations (at 576 px one 256-channel
        full-resolution tensor is 0.32 GiB per frame)."""
        return max(d for d in range(1, min(self.decode_chunk, self.num_frames) + 1) if self.num_frames % d == 0)

    def runtime_config(self) -> "RuntimeConfig":
        """The part of this config the numpy runtime reads (an export's manifest carries it)."""
        return RuntimeConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RuntimeConfig)})

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def replace(self, **changes: Any) -> "SV3DConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RuntimeConfig:
    """What the numpy runtime needs of an SV3DConfig: no architecture, only the constants of the pipeline around the
    graphs. An export's manifest carries it as its ``runtime`` section (runtime/manifest.py), next to the export's
    ``shapes`` (frames, resolution, UNet batch, decode chunk); the runtime reads it once per load.

    Field names equal the SV3DConfig's, so a helper that reads e.g. ``cfg.conditioner`` takes either.
    """
    variant: str
    latent_channels: int
    latent_factor: int                      # pixels per latent
    scale_factor: float                     # the decoder graph divides by it; Result.latents are before that
    seed: int                               # default noise seed
    image_frame_ratio: Optional[float]      # object size on the canvas (runtime.preprocess)
    conditioner: ConditionerConfig          # cond_aug, vector embeddings, orbit constants
    sampler: SamplerConfig                  # default steps, sigma range, rho
    guider: GuiderConfig                    # default guider and scales

    def __post_init__(self) -> None:
        validate_runtime_fields(self)

    @property
    def has_camera(self) -> bool:
        return self.variant == "sv3d_p"

    def latent_size(self, resolution: int) -> int:
        """Latent side at ``resolution`` pixels."""
        return _latent_size(resolution, self.latent_factor)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))


def _latent_size(resolution: int, latent_factor: int) -> int:
    return int(resolution) // int(latent_factor)


# ----------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with typed errors


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, where)
    if origin is typing.Union:                      # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _build(cls: Any, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, where: str = "config") -> SV3DConfig:
    return _top_level(SV3DConfig, data, where)


def runtime_config_from_dict(data: dict, where: str = "runtime") -> RuntimeConfig:
    """A RuntimeConfig from its JSON form (every field required)."""
    missing = sorted({f.name for f in dataclasses.fields(RuntimeConfig)} - set(data or {}))
    if isinstance(data, dict) and missing:
        raise ConfigError(f"{where}: missing field(s) {missing}")
    return _top_level(RuntimeConfig, data, where)


def _top_level(cls: Any, data: dict, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}: {k}") for k, v in data.items()}
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# cross-field validation


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _positive(obj: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(v > 0, f"{prefix}.{n} must be > 0, got {v!r}")


def validate(cfg: SV3DConfig) -> None:
    validate_runtime_fields(cfg)
    _positive(cfg, "config", "num_frames", "resolution", "decode_chunk")
    _check(cfg.resolution % cfg.latent_factor == 0,
           f"resolution {cfg.resolution} must be a multiple of latent_factor {cfg.latent_factor}")

    u = cfg.unet
    _positive(u, "unet", "in_channels", "out_channels", "model_channels", "num_res_blocks", "num_head_channels",
              "transformer_depth", "context_dim", "adm_in_channels", "norm_groups", "ff_mult", "time_embed_mult")
    _check(len(u.channel_mult) > 0 and all(m > 0 for m in u.channel_mult),
           f"unet.channel_mult must be a non-empty list of positive ints, got {list(u.channel_mult)}")
    levels = [2 ** i for i in range(len(u.channel_mult))]
    for ds in u.attention_resolutions:
        _check(ds in levels, f"unet.attention_resolutions entry {ds} is no level's down-sampling factor {levels}")
    for m in u.channel_mult:
        c = u.model_channels * m
        _check(c % u.norm_groups == 0, f"unet channels {c} (model_channels*{m}) not divisible by "
                                       f"norm_groups {u.norm_groups}")
        _check(c % u.num_head_channels == 0, f"unet channels {c} not divisible by num_head_channels "
                                             f"{u.num_head_channels}")
    _check(u.model_channels % u.norm_groups == 0,
           f"unet.model_channels {u.model_channels} not divisible by norm_groups {u.norm_groups}")
    _check(u.model_channels % 2 == 0, f"unet.model_channels must be even, got {u.model_channels}")
    _check(tuple(u.video_kernel_size[1:]) == (1, 1) and u.video_kernel_size[0] % 2 == 1,
           f"unet.video_kernel_size must be [odd, 1, 1], got {list(u.video_kernel_size)}")
    _check(u.in_channels == 2 * cfg.latent_channels,
           f"unet.in_channels must be 2*latent_channels = {2 * cfg.latent_channels} (noisy latent + "
           f"conditioning latent), got {u.in_channels}")
    _check(u.out_channels == cfg.latent_channels,
           f"unet.out_channels must equal latent_channels {cfg.latent_channels}, got {u.out_channels}")
    _check(cfg.latent_size() % u.downsample_factor == 0,
           f"latent size {cfg.latent_size()} must be divisible by the UNet's down-sampling {u.downsample_factor}")

    v = cfg.vae
    _positive(v, "vae", "in_channels", "out_ch", "ch", "num_res_blocks", "z_channels", "embed_dim", "norm_groups")
    _check(v.downsample_factor == cfg.latent_factor,
           f"vae.ch_mult {list(v.ch_mult)} down-samples by {v.downsample_factor}, but latent_factor is "
           f"{cfg.latent_factor}")
    _check(v.embed_dim == cfg.latent_channels and v.z_channels == cfg.latent_channels,
           f"vae.embed_dim/z_channels ({v.embed_dim}/{v.z_channels}) must equal latent_channels "
           f"{cfg.latent_channels}")
    for m in v.ch_mult:
        _check((v.ch * m) % v.norm_groups == 0,
               f"vae channels {v.ch * m} not divisible by norm_groups {v.norm_groups}")

    c = cfg.clip
    _positive(c, "clip", "image_size", "patch_size", "width", "layers", "heads", "mlp_ratio", "output_dim")
    _check(c.image_size % c.patch_size == 0,
           f"clip.image_size {c.image_size} must be a multiple of clip.patch_size {c.patch_size}")
    _check(c.width % c.heads == 0, f"clip.width {c.width} must be divisible by clip.heads {c.heads}")
    _check(all(s > 0 for s in c.std), f"clip.std must be positive, got {list(c.std)}")
    _check(c.output_dim == u.context_dim,
           f"clip.output_dim {c.output_dim} must equal unet.context_dim {u.context_dim}")

    _check(cfg.conditioner.vector_dim == u.adm_in_channels,
           f"unet.adm_in_channels {u.adm_in_channels} must equal the vector width cond_aug_embed_dim + "
           f"2*camera_embed_dim = {cfg.conditioner.vector_dim}")


def validate_runtime_fields(cfg: Any) -> None:
    """The checks of the fields an SV3DConfig shares with its RuntimeConfig (variant and the conditioner,
    sampler and guider sections)."""
    _check(cfg.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {cfg.variant!r}")
    _positive(cfg, "config", "latent_channels", "latent_factor", "scale_factor")
    _check(cfg.image_frame_ratio is None or 0 < cfg.image_frame_ratio <= 1,
           f"image_frame_ratio must be null or in (0, 1], got {cfg.image_frame_ratio!r}")
    k = cfg.conditioner
    _positive(k, "conditioner", "cond_aug_embed_dim", "max_period")
    _check(k.cond_aug >= 0, f"conditioner.cond_aug must be >= 0, got {k.cond_aug}")
    _check(k.cond_aug_embed_dim % 2 == 0 and k.camera_embed_dim % 2 == 0,
           "conditioner embedding widths must be even (cos|sin halves)")
    if cfg.variant == "sv3d_p":
        _check(k.camera_embed_dim > 0, "variant sv3d_p needs conditioner.camera_embed_dim > 0 "
                                       "(polar and azimuth embeddings)")
    else:
        _check(k.camera_embed_dim == 0, f"variant sv3d_u has no camera conditioning; conditioner.camera_embed_dim "
                                        f"must be 0, got {k.camera_embed_dim}")
    lo, hi = k.elevation_range_deg
    _check(lo < hi, f"conditioner.elevation_range_deg must be [low, high] with low < high, got {[lo, hi]}")
    _check(lo <= k.default_elevation_deg <= hi,
           f"conditioner.default_elevation_deg {k.default_elevation_deg} must lie in elevation_range_deg {[lo, hi]}")
    amp = k.dynamic_elevation_amplitude_deg
    _check(0 <= amp and lo <= k.default_elevation_deg - amp and k.default_elevation_deg + amp <= hi,
           f"conditioner.dynamic_elevation_amplitude_deg {amp} must be >= 0 and keep the dynamic orbit around the "
           f"default elevation ({k.default_elevation_deg} +- {amp}) within elevation_range_deg {[lo, hi]}")

    s = cfg.sampler
    _positive(s, "sampler", "num_steps", "sigma_min", "sigma_max", "rho")
    _check(s.sigma_min < s.sigma_max, f"sampler.sigma_min {s.sigma_min} must be < sigma_max {s.sigma_max}")

    g = cfg.guider
    _check(g.kind in GUIDERS, f"guider.kind must be one of {GUIDERS}, got {g.kind!r}")
    _check(g.min_scale <= g.max_scale, f"guider.min_scale {g.min_scale} must be <= max_scale {g.max_scale}")
    _check(g.triangle_period > 0, f"guider.triangle_period must be > 0, got {g.triangle_period}")
