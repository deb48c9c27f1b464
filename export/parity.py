"""The parity gate: every exported graph, loaded and run by the runtime's backend for its format (export/checks.py),
against the eager MindSpore Cell.

Gates (--parity):
  full  the real-size graph on spec.example_inputs(), engine vs eager fp32 Cell;
  twin  a reduced-shape twin of the same graph (same weights, same wrapper, same dtype and attention chunking)
        exported to a scratch folder and compared there; the real-size files are only loaded and their declared
        inputs/outputs checked (plus ONNX's strict shape inference). For full-size SV3D a real-size forward costs
        tens of TFLOP (and MindSpore's CPU 3x3 convolution runs at ~1 GFLOP/s), which a gate cannot afford;
  auto  full where the counted FLOPs of one call are at most --parity-max-gflop; the VAE graphs are always gated at
        the export resolution -- the encoder in full (one image), the decoder on a one-frame twin of the same
        resolution ("frame") -- because GroupNorm's group size grows with the resolution and with it the
        precision an engine's reductions lose (a 32 px twin cannot show it); the rest twin (per graph:
        export/registry.py auto_over_budget);
  off   load and declared-I/O checks only.

Memory (measured on the 24 GB CPU machine, full sv3d_u): every step stays under ~13 GB in fp32 (the UNet's MindIR
load check), but MindSpore's CPU GraphCell running an fp16 graph needs far more than its weights (the fp16 CLIP
twin at 64 px: >19 GB, OOM-killed), so an fp16 MindIR export of the full model cannot be gated numerically on
such a machine: export it with --parity off (load and I/O checks still run) or gate it where MindSpore runs fp16
natively. The ONNX checks load at ONNX Runtime's optimisation level ALL, as the runtime does: for an fp16 graph its
cast insertion and constant folding hold fp32 copies of the weights at load (measured before on the full CLIP tower:
3.3x the fp16 weights, against 1x at level BASIC), so an fp16 check needs that much memory, as a user's run does.

The twin takes the smallest valid shapes: resolution = latent_factor x UNet down-sampling (one latent pixel at
the deepest UNet level), as many frames as the temporal kernel is long (every temporal tap meets a real
frame), one CFG branch per UNet call, two frames per decoder call (a batch > 1), and, when attention is
chunked, a chunk small enough that the twin's attention is chunked too, with a ragged last chunk.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from models.flops import graph_flops as count_flops
from runtime.specs import ExportShapes
from .registry import GRAPHS

GATES = ("auto", "full", "twin", "off")
# shared/reference/oracle/README.md, "How close is close enough": fp32 below 1e-4 relative L2, fp16 below 1e-2
TOLERANCE = {"float32": 1e-4, "float16": 1e-2}
DEFAULT_MAX_GFLOP = 10.0
TWIN_DECODE_CHUNK = 2


def twin_shapes(cfg, shapes: ExportShapes) -> ExportShapes:
    """The smallest valid shapes that still run every code path of the real-size graph (module docstring)."""
    resolution = cfg.latent_factor * cfg.unet.downsample_factor
    frames = min(shapes.num_frames, cfg.unet.video_kernel_size[0])
    chunk = 0
    if shapes.attention_chunk > 0:
        tokens = cfg.latent_size(resolution) ** 2            # per frame at the top latent level
        chunk = min(shapes.attention_chunk, tokens // 3 + 1)  # three chunks, the last one shorter
    return ExportShapes(resolution=resolution, num_frames=frames, unet_batch=frames,
                        decode_chunk=min(TWIN_DECODE_CHUNK, frames), dtype=shapes.dtype, attention_chunk=chunk)


def graph_flops(cfg, name: str, shapes: ExportShapes) -> int:
    """Counted FLOPs of one call of graph `name` (models/flops.py, what the graph executes)."""
    return int(count_flops(cfg, name, shapes).total)


def choose_gate(requested: str, cfg, name: str, shapes: ExportShapes, max_gflop: float) -> Tuple[str, str]:
    """(gate, reason) for graph `name`: `requested` unless it is auto."""
    if requested != "auto":
        return requested, "requested"
    gflop = graph_flops(cfg, name, shapes) / 1e9
    if gflop <= max_gflop:
        return "full", f"auto: {gflop:.3g} GFLOP per call <= {max_gflop:g}"
    gate = GRAPHS[name].auto_over_budget                 # export/registry.py
    if gate == "full":
        return "full", f"auto: graph {name} is gated at the export resolution ({gflop:.3g} GFLOP)"
    if gate == "frame":
        return "frame", (f"auto: graph {name} is gated at the export resolution on one frame "
                         f"({graph_flops(cfg, name, frame_shapes(shapes)) / 1e9:.3g} GFLOP)")
    return "twin", f"auto: {gflop:.3g} GFLOP per call > {max_gflop:g}"


def frame_shapes(shapes: ExportShapes) -> ExportShapes:
    """The export's shapes with one frame per decoder call (the decoder works per frame)."""
    return ExportShapes(resolution=shapes.resolution, num_frames=shapes.num_frames, unet_batch=shapes.unet_batch,
                        decode_chunk=1, dtype=shapes.dtype, attention_chunk=shapes.attention_chunk)


def compare(out: np.ndarray, ref: np.ndarray) -> dict:
    """rel_l2 = ||out - ref|| / ||ref|| and max |out - ref|, in float64; non-finite outputs count as failures."""
    a = np.asarray(out, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return {"rel_l2": float("inf"), "max_abs": float("inf"), "problem": f"shape {a.shape} != {b.shape}"}
    if not np.isfinite(a).all():
        return {"rel_l2": float("inf"), "max_abs": float("inf"),
                "problem": f"{int((~np.isfinite(a)).sum())} non-finite values"}
    den = np.linalg.norm(b)
    return {"rel_l2": float(np.linalg.norm(a - b) / (den if den > 0 else 1.0)),
            "max_abs": float(np.abs(a - b).max()) if a.size else 0.0}
