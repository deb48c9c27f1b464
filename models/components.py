"""The four model components SV3D inference runs, one entry each: checkpoint prefix, key layout, Cell.

The only table keyed by component. The checkpoint loader and the random checkpoint writer read the prefixes and
layouts, `build_component` the Cells; export/registry.py names, per exported graph, the component it is built
from. Pure Python: the Cell modules (MindSpore) are imported only when a Cell is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from configs import SV3DConfig
from .keys import (CLIP_PREFIX, UNET_PREFIX, VAE_DECODER_PREFIX, VAE_ENCODER_PREFIX, Keys, clip_visual_keys,
                   unet_keys, unused_keys, vae_decoder_keys, vae_encoder_keys)


@dataclass(frozen=True)
class Component:
    name: str
    prefix: str                                  # of its official tensor names
    local_keys: Callable[[SV3DConfig], Keys]     # its official names without the prefix -> shape
    # (cfg, num_frames, input_size, attention_chunk) -> the Cell, zero weights; its parameter names are local_keys
    build: Callable[..., object]

    def keys(self, cfg: SV3DConfig) -> Keys:
        """Official names (with prefix) -> shape."""
        return {self.prefix + k: s for k, s in self.local_keys(cfg).items()}


def _unet(cfg, num_frames, input_size, attention_chunk):
    from .unet import VideoUNet
    return VideoUNet(cfg.unet, num_frames, attention_chunk=attention_chunk)


def _clip(cfg, num_frames, input_size, attention_chunk):
    from .clip import CLIPImageEncoder
    return CLIPImageEncoder(cfg.clip, input_size)


def _vae_encoder(cfg, num_frames, input_size, attention_chunk):
    from .vae import VAEEncoder
    return VAEEncoder(cfg.vae, attention_chunk=attention_chunk)


def _vae_decoder(cfg, num_frames, input_size, attention_chunk):
    from .vae import VAEDecoder
    return VAEDecoder(cfg.vae, cfg.scale_factor, attention_chunk=attention_chunk)


COMPONENTS: Dict[str, Component] = {c.name: c for c in (
    Component("unet", UNET_PREFIX, lambda cfg: unet_keys(cfg.unet), _unet),
    Component("clip", CLIP_PREFIX, lambda cfg: clip_visual_keys(cfg.clip), _clip),
    Component("vae_encoder", VAE_ENCODER_PREFIX, lambda cfg: vae_encoder_keys(cfg.vae), _vae_encoder),
    Component("vae_decoder", VAE_DECODER_PREFIX, lambda cfg: vae_decoder_keys(cfg.vae), _vae_decoder),
)}


def component(name: str) -> Component:
    if name not in COMPONENTS:
        raise KeyError(f"unknown component {name!r}; expected one of {sorted(COMPONENTS)}")
    return COMPONENTS[name]


def component_keys(cfg: SV3DConfig, name: str) -> Keys:
    """Official names (with prefix) -> shape for one component."""
    return component(name).keys(cfg)


def official_keys(cfg: SV3DConfig) -> Keys:
    """The full official state dict for this config: every component plus the unused leftovers."""
    keys: Keys = {}
    for c in COMPONENTS.values():
        keys.update(c.keys(cfg))
    keys.update(unused_keys(cfg))
    return keys


def build_component(cfg: SV3DConfig, name: str, *, num_frames: Optional[int] = None,
                    input_size: Optional[int] = None, attention_chunk: int = 0):
    """Instantiate the Cell of one component (zero weights); frames and input size default to the config's."""
    return component(name).build(cfg, num_frames or cfg.num_frames, input_size or cfg.resolution,
                                 attention_chunk)
