"""What export knows about each graph, one frozen entry per graph of runtime.specs.GRAPH_NAMES.

The graph's inputs and outputs are its GraphSpec (runtime/specs.py); the facts here are export's own:
- component: the model component it is built from (models/components.py: checkpoint prefix, key layout, Cell);
- wrapper: the name of its thin wrapper Cell class in export/wrappers.py, which looks it up (and checks at its
  import that every name exists), so that this module, and with it planning an export, stays MindSpore-free;
- half: in an fp16 export, the attribute of the component's Cell that runs in fp16 ("" = the whole Cell); CLIP
  keeps its resize + normalisation in float32 (export/wrappers.py explains why);
- auto_over_budget: the gate `--parity auto` takes when one call costs more than --parity-max-gflop
  (export/parity.py): "twin", or "full" / "frame" for the VAE graphs, which are always gated at the export
  resolution.

Checked against GRAPH_NAMES at import: a graph added to the specs without an entry here fails every import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from runtime.specs import GRAPH_NAMES

AUTO_OVER_BUDGET = ("twin", "full", "frame")


@dataclass(frozen=True)
class GraphExport:
    name: str
    component: str
    wrapper: str
    half: str = ""
    auto_over_budget: str = "twin"

    def half_target(self, model):
        """The sub-Cell of `model` (the component's Cell) that runs in fp16."""
        return getattr(model, self.half) if self.half else model

    def weight_bytes(self, cfg, dtype: str) -> int:
        """Bytes of this graph's weights in `dtype` (from the official layout of `cfg`)."""
        from models.components import component_keys

        count = sum(int(np.prod(s)) for s in component_keys(cfg, self.component).values())
        return count * np.dtype(dtype).itemsize


GRAPHS: Dict[str, GraphExport] = {g.name: g for g in (
    GraphExport("clip_encoder", component="clip", wrapper="ClipEncoderGraph", half="visual"),
    GraphExport("vae_encoder", component="vae_encoder", wrapper="VAEEncoderGraph", auto_over_budget="full"),
    GraphExport("unet", component="unet", wrapper="UNetGraph"),
    GraphExport("vae_decoder", component="vae_decoder", wrapper="VAEDecoderGraph", half="decoder",
                auto_over_budget="frame"),
)}


def _check() -> None:
    from models.components import COMPONENTS

    missing = [n for n in GRAPH_NAMES if n not in GRAPHS]
    extra = [n for n in GRAPHS if n not in GRAPH_NAMES]
    if missing or extra:
        raise RuntimeError(f"internal: export/registry.py must have one entry per graph of runtime.specs.GRAPH_NAMES "
                           f"{list(GRAPH_NAMES)}: missing {missing}, unexpected {extra}")
    unknown = {g.name: g.component for g in GRAPHS.values() if g.component not in COMPONENTS}
    if unknown:
        raise RuntimeError(f"internal: export/registry.py names components {unknown} that models/components.py "
                           f"does not have ({list(COMPONENTS)})")
    bad = [g.name for g in GRAPHS.values() if g.auto_over_budget not in AUTO_OVER_BUDGET]
    if bad:
        raise RuntimeError(f"internal: export/registry.py: auto_over_budget of {bad} must be one of "
                           f"{list(AUTO_OVER_BUDGET)}")


_check()


def graph_weight_bytes(cfg, name: str, dtype: str) -> int:
    """Bytes of the weights of graph `name` in `dtype`."""
    return GRAPHS[name].weight_bytes(cfg, dtype)
