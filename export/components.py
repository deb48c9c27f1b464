"""Which checkpoint component (models/keys.py) each exported graph (runtime/specs.py) is built from, and its size.

MindSpore-free, so that planning an export (option and disk checks) does not import it.
"""
from __future__ import annotations

import numpy as np

GRAPH_COMPONENTS = {"clip_encoder": "clip", "vae_encoder": "vae_encoder", "unet": "unet",
                    "vae_decoder": "vae_decoder"}


def graph_weight_bytes(cfg, name: str, dtype: str) -> int:
    """Bytes of the weights of graph `name` in `dtype` (from the official layout of `cfg`)."""
    from models.keys import component_keys

    count = sum(int(np.prod(s)) for s in component_keys(cfg, GRAPH_COMPONENTS[name]).values())
    return count * np.dtype(dtype).itemsize
