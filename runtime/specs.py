"""The contract of each exported graph: names, shapes and dtypes of its inputs and outputs.

One `GraphSpec` per graph, built from the config and the export shapes. The same object makes the tracing inputs
(export), the manifest entry (export writes, runtime reads) and the runtime's feed checks, so shapes cannot drift
between the three. Inputs are always bound by name.

Graphs (S = resolution, h = w = S / latent_factor, T = num_frames):
  clip_encoder  image (1, 3, S, S) in [-1, 1]                 -> embedding (1, context_dim)
  vae_encoder   image (1, 3, S, S) in [-1, 1] (+cond_aug noise) -> latent (1, latent_channels, h, w)  posterior mean
  unet          x (B, 2*latent_channels, h, w) = [c_in*x | cond latent], timesteps (B,) = c_noise,
                context (B, 1, context_dim), y (B, adm_in_channels) -> out (B, latent_channels, h, w)
                with B = 2T (uncond and cond in one call) or T (one call per branch)
  vae_decoder   latent (chunk, latent_channels, h, w) sampled latent -> image (chunk, 3, S, S), raw decoder output
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from configs.schema import SamplerConfig

from .errors import GraphError
from .sampling import edm_vscaling


@dataclass(frozen=True)
class GraphRole:
    """What the runtime and the benchmarks know about one graph besides its tensors."""
    name: str
    stage: str        # the benchmark stage one call of it is timed as
    repeated: bool    # runs many times per video (the UNet every step, the decoder per chunk): the graphs a
                      # reduced engine precision (OpenVINO bf16) is applied to; the single-call encoders stay f32


GRAPH_ROLES: Dict[str, GraphRole] = {r.name: r for r in (
    GraphRole("clip_encoder", stage="clip_encoder", repeated=False),
    GraphRole("vae_encoder", stage="vae_encoder", repeated=False),
    GraphRole("unet", stage="unet_call", repeated=True),
    GraphRole("vae_decoder", stage="vae_decoder_chunk", repeated=True),
)}
GRAPH_NAMES = tuple(GRAPH_ROLES)


@dataclass(frozen=True)
class DType:
    """One dtype a graph may declare, as each tool spells it. `name` (the numpy name) is the spelling in specs,
    manifests and ExportShapes; engine objects (``mindspore.float16``) are looked up from it where the engine is
    already imported (getattr(mindspore, d.mindspore))."""
    name: str          # numpy: np.dtype(name)
    cli: str           # python -m export --dtype
    onnx: int          # onnx TensorProto.DataType (elem_type)
    ort: str           # onnxruntime NodeArg.type
    mindir: int        # mind_ir.proto TensorProto.DataType
    openvino: str      # openvino Type.get_type_name()
    mindspore: str     # attribute of the mindspore module
    safetensors: str   # safetensors header dtype
    mslite: int        # MindSpore Lite mindspore::DataType (include/api/data_type.h; mindspore_lite.DataType)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.name).itemsize


DTYPES: Dict[str, DType] = {d.name: d for d in (
    DType("float32", cli="fp32", onnx=1, ort="tensor(float)", mindir=1, openvino="f32", mindspore="float32",
          safetensors="F32", mslite=43),
    DType("float16", cli="fp16", onnx=10, ort="tensor(float16)", mindir=10, openvino="f16", mindspore="float16",
          safetensors="F16", mslite=42),
)}


def dtype_where(field: str, value) -> Optional[DType]:
    """The dtype whose `field` (a DType field: cli, onnx, ort, mindir, openvino, ...) is `value`; None if none is.

        dtype_where("ort", "tensor(float16)").name == "float16"
    """
    return next((d for d in DTYPES.values() if getattr(d, field) == value), None)


def dtype_name(field: str, value) -> str:
    """dtype_where(...).name, or a readable stand-in (``onnx 7``) for a dtype no spec declares."""
    d = dtype_where(field, value)
    return d.name if d is not None else f"{field} {value}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorSpec":
        return cls(str(d["name"]), tuple(int(s) for s in d["shape"]), str(d["dtype"]))


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, name: str, d: Mapping) -> "GraphSpec":
        return cls(name, tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in d["outputs"]))

    def example_inputs(self, seed: int = 0,
                       sigma_range: Tuple[float, float] = (SamplerConfig.sigma_min, SamplerConfig.sigma_max)
                       ) -> Dict[str, np.ndarray]:
        """Random inputs of the right names, shapes and dtypes (tracing and parity checks).

        Values are drawn in ranges the pipeline actually feeds: images uniform in [-1, 1], timesteps uniform over
        the c_noise = 0.25 ln(sigma) of ``sigma_range`` (a config's sampler sigma_min, sigma_max; default the
        schema's 0.002 and 700: about [-1.55, 1.64]), everything else standard normal.
        """
        lo, hi = (float(edm_vscaling(s)[3]) for s in sigma_range)
        rng = np.random.default_rng(seed)
        out = {}
        for t in self.inputs:
            if t.name == "image":
                a = rng.uniform(-1.0, 1.0, t.shape)
            elif t.name == "timesteps":
                a = rng.uniform(lo, hi, t.shape)
            else:
                a = rng.standard_normal(t.shape)
            out[t.name] = a.astype(t.dtype)
        return out

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise GraphError unless `feeds` has exactly this graph's inputs with the declared shapes."""
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise GraphError(f"graph {self.name}: expected inputs {list(self.input_names)}, got {sorted(feeds)}"
                             f" (missing {missing}, unexpected {extra})")
        for t in self.inputs:
            shape = tuple(np.shape(feeds[t.name]))
            if shape != t.shape:
                raise GraphError(f"graph {self.name}: input {t.name!r} must have shape {t.shape}, got {shape}")


@dataclass(frozen=True)
class ExportShapes:
    """The static shapes chosen at export."""
    resolution: int
    num_frames: int
    unet_batch: int          # 2*num_frames (cond+uncond per call) or num_frames (two calls per step)
    decode_chunk: int        # frames per decoder call; the last chunk is padded to this size
    dtype: str = "float32"   # weights and activations of the graphs
    attention_chunk: int = 0 # query-chunk size of memory-bounded attention (0 = plain attention)

    def validate(self, latent_factor: int, unet_down: int) -> None:
        from configs import ConfigError   # the config package holds the validation error type

        if self.resolution <= 0 or self.resolution % (latent_factor * unet_down):
            raise ConfigError(f"resolution must be a positive multiple of {latent_factor * unet_down} (latent "
                              f"factor {latent_factor} x UNet down-sampling {unet_down}), got {self.resolution}")
        if self.unet_batch not in (self.num_frames, 2 * self.num_frames):
            raise ConfigError(f"unet_batch must be num_frames ({self.num_frames}, one call per CFG branch) or "
                              f"2*num_frames ({2 * self.num_frames}, both branches in one call), got "
                              f"{self.unet_batch}")
        if not 1 <= self.decode_chunk <= self.num_frames:
            raise ConfigError(f"decode_chunk must be in [1, {self.num_frames}], got {self.decode_chunk}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.attention_chunk < 0:
            raise ConfigError(f"attention_chunk must be >= 0, got {self.attention_chunk}")

    def to_dict(self) -> dict:
        return dict(resolution=self.resolution, num_frames=self.num_frames, unet_batch=self.unet_batch,
                    decode_chunk=self.decode_chunk, dtype=self.dtype, attention_chunk=self.attention_chunk)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ExportShapes":
        return cls(**{k: d[k] for k in ("resolution", "num_frames", "unet_batch", "decode_chunk", "dtype",
                                         "attention_chunk")})


def spec_differences(got: GraphSpec, want: GraphSpec) -> List[str]:
    """Every field in which `got` differs from `want`, one readable line each ([] when equal), e.g.
    ``input x: shape (42, 8, 8, 8), expected (42, 8, 72, 72)``."""
    diffs = []
    if got.name != want.name:
        diffs.append(f"name {got.name!r}, expected {want.name!r}")
    for kind, a, b in (("input", got.inputs, want.inputs), ("output", got.outputs, want.outputs)):
        if [t.name for t in a] != [t.name for t in b]:
            diffs.append(f"{kind}s {[t.name for t in a]}, expected {[t.name for t in b]}")
            continue
        for ta, tb in zip(a, b):
            if ta.shape != tb.shape:
                diffs.append(f"{kind} {ta.name}: shape {ta.shape}, expected {tb.shape}")
            if ta.dtype != tb.dtype:
                diffs.append(f"{kind} {ta.name}: dtype {ta.dtype}, expected {tb.dtype}")
    return diffs


def graph_specs(cfg, shapes: ExportShapes) -> Dict[str, GraphSpec]:
    """All four graph specs for a config (an SV3DConfig) at the given export shapes."""
    s, dt = shapes.resolution, shapes.dtype
    lat = cfg.latent_size(s)
    zc = cfg.latent_channels
    u = cfg.unet
    b = shapes.unet_batch
    image = TensorSpec("image", (1, 3, s, s), dt)
    return {
        "clip_encoder": GraphSpec("clip_encoder", (image,), (TensorSpec("embedding", (1, u.context_dim), dt),)),
        "vae_encoder": GraphSpec("vae_encoder", (image,), (TensorSpec("latent", (1, zc, lat, lat), dt),)),
        "unet": GraphSpec("unet", (
            TensorSpec("x", (b, u.in_channels, lat, lat), dt),
            TensorSpec("timesteps", (b,), dt),
            TensorSpec("context", (b, 1, u.context_dim), dt),
            TensorSpec("y", (b, u.adm_in_channels), dt),
        ), (TensorSpec("out", (b, u.out_channels, lat, lat), dt),)),
        "vae_decoder": GraphSpec("vae_decoder", (TensorSpec("latent", (shapes.decode_chunk, zc, lat, lat), dt),),
                                 (TensorSpec("image", (shapes.decode_chunk, 3, s, s), dt),)),
    }
