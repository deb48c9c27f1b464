"""What an export is asked to do: the CLI's options, also the API's request (`export.export_graphs(options)`).

No `from __future__ import annotations` here: argparse_dataclass reads the field types at runtime.
"""
from dataclasses import dataclass, field
from typing import Optional

from runtime.specs import DTYPES
from .parity import DEFAULT_MAX_GFLOP, GATES

UNET_BATCHES = ("2T", "T")
DTYPE_FLAGS = {d.cli: d.name for d in DTYPES.values()}   # --dtype fp32 -> the spec dtype "float32"
DEFAULT_FORMATS = "mindir,onnx"
ONNX_SOURCES = ("auto", "mindir", "cell")
ISOLATE_CHOICES = ("auto", "on", "off")
ONNX_FORMS = ("fused", "plain")                     # export/onnx_fuse.py


@dataclass
class ExportOptions:
    config: str = field(metadata=dict(args=["-c", "--config"],
                                      help="bundled config name (sv3d_u, sv3d_p, sv3d_u_tiny, ...) or a YAML path"))
    checkpoint: str = field(metadata=dict(args=["-k", "--checkpoint"],
                                          help="official-layout .safetensors checkpoint of that variant"))
    out: str = field(metadata=dict(args=["-o", "--out"],
                                   help="output folder; must not exist unless --overwrite"))
    resolution: Optional[int] = field(default=None, metadata=dict(
        help="square image size in pixels, a multiple of latent_factor x UNet down-sampling (default: config)"))
    decode_chunk: Optional[int] = field(default=None, metadata=dict(
        help="frames per VAE-decoder call, 1..num_frames; the runtime pads the last chunk (default: the largest "
             "divisor of num_frames up to the config's decode_chunk, so no padding is decoded)"))
    unet_batch: str = field(default="2T", metadata=dict(
        choices=list(UNET_BATCHES), help="UNet batch: 2T = both CFG branches per call, T = one branch per call"))
    attention_chunk: int = field(default=0, metadata=dict(
        help="query-chunk size of memory-bounded attention; 0 = plain attention (the full score matrix)"))
    dtype: str = field(default="fp32", metadata=dict(choices=list(DTYPE_FLAGS), help="weights and graph I/O dtype"))
    formats: str = field(default=DEFAULT_FORMATS, metadata=dict(
        help="comma-separated subset of mindir,onnx,mslite (mslite: our ONNX in its mslite form converted by "
             "MindSpore Lite's converter; needs python -m runtime.backends.mslite_native setup, or the "
             "mindspore_lite package)"))
    parity: str = field(default="auto", metadata=dict(
        choices=list(GATES), help="parity gate: full (real size), twin (reduced-shape twin), auto (full when "
                                  "cheap), off (load checks only)"))
    parity_max_gflop: float = field(default=DEFAULT_MAX_GFLOP, metadata=dict(
        help="auto gate: largest FLOP count (in GFLOP) of one graph call that still runs the full-size check"))
    onnx_source: str = field(default="auto", metadata=dict(
        choices=list(ONNX_SOURCES), help="trace ONNX from the MindIR's GraphCell (fast) or from the Cell again "
                                         "(less memory); auto = GraphCell unless the graph runs in workers"))
    onnx_form: str = field(default=ONNX_FORMS[0], metadata=dict(
        choices=list(ONNX_FORMS), help="fused: attention, GELU, LayerNorm and GroupNorm rewritten into the fused "
                                       "ops ONNX Runtime and OpenVINO have kernels for (flash attention: bounded "
                                       "memory); plain: the graph as MindSpore writes it"))
    isolate: str = field(default="auto", metadata=dict(
        choices=list(ISOLATE_CHOICES), help="run each weight-holding step in a worker process (MindSpore keeps "
                                            "compiled weights until exit); auto = for graphs over 1 GiB"))
    seed: int = field(default=0, metadata=dict(help="seed of the tracing and parity inputs"))
    overwrite: bool = field(default=False, metadata=dict(help="replace an existing export folder"))
    reuse: bool = field(default=False, metadata=dict(
        help="update the export at -o in place of replacing it: a graph whose identity (exporter, config, "
             "checkpoint tensors, shapes, dtype, form, gate) is unchanged and whose files verify is carried over "
             "with its recorded gate, not exported or gated again (export/reuse.py); implies --overwrite"))
    quiet: bool = field(default=False, metadata=dict(help="no progress lines"))
