"""Thin Cells around the model Cells: what each exported graph takes and returns, and in which dtype.

Tracing concerns live here, not in models/:
- argument names: ONNX graph inputs and MindIR inputs (``<graph>:<argument>``) are named after the `construct`
  arguments, so each wrapper's `construct` spells the spec's input names (runtime/specs.py); `check_signature`
  refuses a wrapper that drifted from the spec;
- outputs: one tensor per graph, cast to the spec's dtype;
- which wrapper belongs to which graph, and which part of it runs in fp16: export/registry.py;
- precision: fp16 graphs get fresh Cells whose parameters are cast with `Parameter.set_dtype` (`set_data(astype)`
  silently keeps fp32, MINDSPORE_NOTES.md) and that run under `Cell.to_float(float16)`.

Two fp16 details of MindSpore 2.10's ONNX converter, found by the parity gate:
- a tensor divided by a Python float is written as Cast(float32) + Div and never cast back, so the next fp16
  Conv gets a float32 input and the model does not load. models.vae.VAEDecoder therefore applies the latent
  scale as a float32 multiply by a constant Tensor, cast back to the latent's dtype;
- constants built as float32 Tensors inside a Cell (CLIP's resize matrices) cannot meet fp16 activations in a
  MatMul, so CLIP's preprocessing runs in float32 and only the vision tower runs in fp16.
"""
from __future__ import annotations

import inspect
from typing import Dict, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from runtime.specs import DTYPES
from .registry import GRAPHS


def ms_dtype(dtype: str):
    """The mindspore dtype object of a spec dtype name (runtime/specs.py DTYPES)."""
    return getattr(ms, DTYPES[dtype].mindspore)


class ClipEncoderGraph(nn.Cell):
    """image (1, 3, S, S) in [-1, 1] -> embedding (1, context_dim). Resize + normalisation in float32."""

    def __init__(self, encoder, dtype: str):
        super().__init__()
        self.encoder = encoder
        self.out_dtype = ms_dtype(dtype)

    def construct(self, image):
        x = self.encoder.preprocess(image.astype(ms.float32))         # (1, 3, image_size, image_size)
        return self.encoder.visual(x).astype(self.out_dtype)         # (1, output_dim)


class VAEEncoderGraph(nn.Cell):
    """image (1, 3, S, S) (the noise-augmented conditioning frame) -> latent (1, z, S/8, S/8), posterior mean."""

    def __init__(self, encoder, dtype: str):
        super().__init__()
        self.encoder = encoder
        self.out_dtype = ms_dtype(dtype)

    def construct(self, image):
        return self.encoder(image).astype(self.out_dtype)


class UNetGraph(nn.Cell):
    """x (B, 2z, h, w), timesteps (B,), context (B, 1, ctx), y (B, adm) -> out (B, z, h, w)."""

    def __init__(self, unet, dtype: str):
        super().__init__()
        self.unet = unet
        self.out_dtype = ms_dtype(dtype)

    def construct(self, x, timesteps, context, y):
        return self.unet(x, timesteps, context, y).astype(self.out_dtype)


class VAEDecoderGraph(nn.Cell):
    """latent (chunk, z, h, w), sampled latent -> image (chunk, 3, 8h, 8w), raw decoder output (VAEDecoder, its
    decode scaling included)."""

    def __init__(self, vae_decoder, dtype: str):
        super().__init__()
        self.vae_decoder = vae_decoder
        self.out_dtype = ms_dtype(dtype)

    def construct(self, latent):
        return self.vae_decoder(latent).astype(self.out_dtype)


def _check_registry() -> None:
    missing = {g.name: g.wrapper for g in GRAPHS.values() if not isinstance(globals().get(g.wrapper), type)}
    if missing:
        raise RuntimeError(f"internal: export/registry.py names wrappers {missing} that export/wrappers.py lacks")


_check_registry()


def check_signature(wrapper: nn.Cell, spec) -> None:
    """The wrapper's construct arguments must be the spec's input names, in order (they name the graph inputs)."""
    params = [p for p in inspect.signature(wrapper.construct).parameters]
    if tuple(params) != spec.input_names:
        raise RuntimeError(f"internal: {type(wrapper).__name__}.construct takes {params}, but graph {spec.name} "
                           f"declares inputs {list(spec.input_names)} (runtime/specs.py); rename the arguments")


def to_half(cell: nn.Cell) -> int:
    """Cast every parameter of `cell` to float16 and run it under to_float(float16); returns the count cast."""
    cell.to_float(ms.float16)
    n = 0
    for p in cell.get_parameters():
        if p.dtype != ms.float16:
            p.set_dtype(ms.float16)
            n += 1
    return n


def build_graph_cell(name: str, reader, *, resolution: int, num_frames: int, attention_chunk: int,
                     dtype: str, spec=None) -> nn.Cell:
    """A fresh wrapper Cell for graph `name`, its model loaded from `reader` (a models.checkpoint reader).

    Fresh every time on purpose: a Cell compiled once keeps its first graph, and a second ONNX export of the
    same instance fails (MINDSPORE_NOTES.md).
    """
    from models.checkpoint import loaded_component

    graph = GRAPHS[name]
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    model = loaded_component(reader, graph.component, num_frames=num_frames, input_size=resolution,
                             attention_chunk=attention_chunk)
    if dtype == "float16":
        to_half(graph.half_target(model))
    wrapper = globals()[graph.wrapper](model, dtype)
    wrapper.set_train(False)
    if spec is not None:
        check_signature(wrapper, spec)
    return wrapper


def run_eager(cell: nn.Cell, spec, feeds: Dict[str, np.ndarray], dtype: Optional[str] = None) -> np.ndarray:
    """Call `cell` eagerly (PyNative) on `feeds` bound by the spec's input order; inputs cast to `dtype`."""
    args = [Tensor(np.asarray(feeds[n], dtype=dtype) if dtype else feeds[n]) for n in spec.input_names]
    return cell(*args).asnumpy()
