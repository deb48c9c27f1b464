"""SV3D image -> orbit video over exported graphs, with the numpy sampler in between.

    pipe = SV3DPipeline.from_export("exports/sv3d_u_576", backend="auto", device="cpu")
    result = pipe.generate("chair.png", seed=23)
    result.frames          # (T, 3, S, S) float32 in [0, 1]
    result.frames_uint8    # (T, S, S, 3) uint8
    print(result.timings.summary())

What one ``generate`` call does (SV3D_REFERENCE.md §0-§5, §7; SVS = simple_video_sample.py):
 1. conditioning image (1, 3, S, S) in [-1, 1] (runtime.preprocess for files);
 2. noise: ``numpy.random.default_rng(seed)`` draws, in this order, ``cond_noise`` (1, 3, S, S) and then
    ``latent_noise`` (T, C, h, w), both standard normal float32 (the reference draws them in the same order,
    SVS:210 then SVS:239, from torch's generator, so equal seeds do not give equal pictures across the two;
    pass ``noise=`` to reproduce a reference run exactly);
 3. CLIP once on the clean image, VAE encoder once on ``image + cond_aug * cond_noise``. The reference runs both
    twice (c and uc) and then zeroes the uc outputs (ENC:157-161, 183-184): same result at half the cost.
      crossattn: c = embedding repeated T times (T, 1, D),  uc = zeros
      concat:    c = latent repeated T times (T, C, h, w),  uc = zeros   (unscaled posterior mean, §3.2)
      vector:    runtime.conditioning.vector_conditioning, identical for c and uc (T, V)
 4. Euler over the EDM schedule (runtime.sampling) with x0 = latent_noise * sqrt(1 + sigma0^2). Per step the
    network sees the CFG batch [uc ; c] (uc first, GDR:88-99):
      x_net = [c_in * x | concat], timesteps = c_noise, context = crossattn, y = vector
    in one call of batch 2T or two calls of batch T (the export's ``unet_batch``); D = c_out * F + c_skip * x;
    per-frame guidance D = D_uc + scale_t * (D_c - D_uc) (runtime.guidance);
 5. VAE decoder in chunks of the export's ``decode_chunk`` frames (last chunk padded, padding dropped; the graph
    divides by the 0.18215 scale factor itself); the last frame is replaced by the input image (SVS:255-256);
    frames = clamp((x + 1) / 2, 0, 1); uint8 = (frames * 255).astype(uint8), truncation as the reference.
The reference's invisible watermark and NSFW filter (SVS:266-267) are not applied.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .conditioning import vector_conditioning
from .errors import GraphError, InputImageError, OrbitError, SV3DError
from .guidance import GUIDANCE_KINDS, apply_guidance, guidance_scales, split_cfg_batch
from .manifest import Manifest
from .orbits import ORBIT_PRESETS, Orbit, make_orbit, orbit_to_radians, preset_orbit
from .preprocess import BACKGROUND_MODES, PreprocessedImage, load_image, preprocess_rgba, uint8_to_m11
from .sampling import edm_sigmas, edm_vscaling, initial_latent, sample_euler
from .specs import GRAPH_NAMES, ExportShapes, graph_specs, spec_differences

F32 = np.float32
UINT8_MAX = 255
IMAGE_RANGE_TOLERANCE = 1e-3          # image_m11 may exceed [-1, 1] by float rounding only

ImageInput = Union[str, os.PathLike, np.ndarray, PreprocessedImage]
ProgressCallback = Callable[[Dict[str, Any]], None]


# ----------------------------------------------------------------------------------------------------------------
# inputs and results


@dataclass(frozen=True)
class Noise:
    """The two standard-normal draws of one generation (see the module note for their order)."""
    cond_noise: np.ndarray      # (1, 3, S, S): cond_frames = image + cond_aug * cond_noise (VAE-encoder input)
    latent_noise: np.ndarray    # (T, C, h, w): x0 = latent_noise * sqrt(1 + sigma0^2)

    @classmethod
    def from_seed(cls, seed: int, image_shape: Sequence[int], latent_shape: Sequence[int]) -> "Noise":
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SV3DError("invalid seed", expected="an integer >= 0", got=repr(seed))
        rng = np.random.default_rng(int(seed))
        cond = rng.standard_normal(tuple(image_shape), dtype=F32)
        latent = rng.standard_normal(tuple(latent_shape), dtype=F32)
        return cls(cond, latent)


@dataclass(frozen=True)
class StepTiming:
    index: int
    sigma: float
    graph_s: float      # time inside the UNet graph call(s)
    glue_s: float       # numpy time of the step: preconditioning, batch assembly, guidance, Euler update

    @property
    def total_s(self) -> float:
        return self.graph_s + self.glue_s


@dataclass
class Timings:
    """Seconds per stage (in execution order) and per sampling step."""
    stages: Dict[str, float] = field(default_factory=dict)
    steps: List[StepTiming] = field(default_factory=list)
    precision: Dict[str, str] = field(default_factory=dict)     # graph -> precision it ran at

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + float(seconds)

    def to_dict(self) -> dict:
        return {"stages": dict(self.stages), "precision": dict(self.precision),
                "steps": [{"index": s.index, "sigma": s.sigma, "graph_s": s.graph_s, "glue_s": s.glue_s}
                          for s in self.steps]}

    def summary(self) -> str:
        """A small table: per-stage seconds and share, then per-step mean graph/glue time and steps/s."""
        lines = []
        if self.precision:
            lines.append("precision: " + ", ".join(f"{k} {v}" for k, v in self.precision.items()))
        lines.append(f"{'stage':<16}{'seconds':>10}{'share':>8}")
        total = self.stages.get("total") or sum(v for k, v in self.stages.items() if k != "total") or 1e-12
        for k, v in self.stages.items():
            lines.append(f"{k:<16}{v:>10.4f}{100 * v / total:>7.1f}%")
        if self.steps:
            g = np.array([s.graph_s for s in self.steps])
            u = np.array([s.glue_s for s in self.steps])
            per = g + u
            lines.append(f"{len(self.steps)} steps: {1.0 / max(per.mean(), 1e-12):.2f} step/s; per step median "
                         f"{np.median(per):.4f} s (graph {np.median(g):.4f} s, numpy glue {np.median(u):.4f} s)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Result:
    frames: np.ndarray              # (T, 3, S, S) float32 in [0, 1]; the last frame is the input image
    frames_uint8: np.ndarray        # (T, S, S, 3) uint8
    latents: np.ndarray             # (T, C, h, w) float32, the sampled latents (before the decoder's 1/0.18215)
    input_image: PreprocessedImage  # the conditioning image (uint8 and [-1, 1])
    timings: Timings
    num_steps: int
    seed: Optional[int]             # None when explicit noise was given
    guidance_scales: np.ndarray     # (T,) per-frame scales used
    orbit: Optional[Orbit] = None   # sv3d_p only


# ----------------------------------------------------------------------------------------------------------------
# the pipeline


class SV3DPipeline:
    """An export's four graphs loaded once, and the numpy sampler around them.

    runners: {graph name: runner} for clip_encoder, vae_encoder, unet, vae_decoder (runtime.backends runners, or
    any object with ``spec`` and ``run(feeds) -> {name: array}``); each runner's spec must equal the spec the
    config and shapes define.
    """

    def __init__(self, config, shapes: ExportShapes, runners: Mapping[str, Any], *, backend: str = "custom",
                 device: str = "cpu", manifest: Optional[Manifest] = None) -> None:
        self.config = config
        self.shapes = shapes
        self.backend = backend
        self.device = device
        self.manifest = manifest
        self.load_seconds = 0.0
        self.memory = "resident"            # or "sequential" (from_manifest): graphs loaded per stage
        specs = graph_specs(config, shapes)
        missing = [n for n in GRAPH_NAMES if n not in runners]
        if missing:
            raise GraphError(f"the pipeline needs graphs {list(GRAPH_NAMES)}; missing {missing}")
        for name in GRAPH_NAMES:
            if runners[name].spec != specs[name]:
                raise GraphError(f"graph {name}: the loaded graph's contract differs from the one the config and "
                                 f"shapes define: " + "; ".join(spec_differences(runners[name].spec, specs[name])))
        self.runners = dict(runners)

    @property
    def precisions(self) -> Dict[str, str]:
        """{graph name: the precision it runs at} (f32, bf16, or the export dtype where the engine has no choice)."""
        return {n: getattr(r, "precision", None) or ("f16" if r.spec.inputs[0].dtype == "float16" else "f32")
                for n, r in self.runners.items()}

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_export(cls, folder, backend: str = "auto", device: str = "cpu", *, device_id: int = 0,
                    threads: int = 0, verify_checksums: bool = True, precision: str = "auto",
                    cache_dir: Optional[str] = None, memory: str = "auto") -> "SV3DPipeline":
        """Load an export folder (``python -m export`` output) on a backend.

        backend: auto | mslite | mindspore | onnxruntime | openvino; device: cpu | cuda | ascend (+ device_id);
        threads: intra-op threads (0 = engine default); verify_checksums: sha256 of every graph file against the
        manifest (sizes are always checked; skipping the hash saves a read of the weights); precision and
        cache_dir: openvino's f32 | bf16 | auto and compiled-model cache (runtime.backends.RunOptions).
        memory: resident (all four graphs loaded once, kept for every image), sequential (each graph loaded just
        before its stage and released after it: the peak is the largest stage, not the sum, at the price of
        loading the graphs again for every image -- seconds from OpenVINO's cache, longer on other engines), or
        auto = sequential when the graph files exceed LIMITS.resident_ram_fraction of this machine's RAM.
        """
        t0 = time.perf_counter()
        pipe = cls.from_manifest(Manifest.load(folder), backend, device, device_id=device_id, threads=threads,
                                 verify_checksums=verify_checksums, precision=precision, cache_dir=cache_dir,
                                 memory=memory)
        pipe.load_seconds = time.perf_counter() - t0
        return pipe

    @classmethod
    def from_manifest(cls, manifest: Manifest, backend: str = "auto", device: str = "cpu", *, device_id: int = 0,
                      threads: int = 0, verify_checksums: bool = True, precision: str = "auto",
                      cache_dir: Optional[str] = None, memory: str = "auto") -> "SV3DPipeline":
        """As :meth:`from_export`, for an already loaded manifest."""
        from .backends import RunOptions, backend_format, load_graphs, resolve_backend

        t0 = time.perf_counter()
        name = resolve_backend(backend, manifest, device)
        mode = resolve_memory_mode(memory, manifest, backend_format(name))
        options = RunOptions(intra_op_threads=threads, precision=precision, cache_dir=cache_dir)
        runners = load_graphs(manifest, backend=name, device=device, device_id=device_id, options=options,
                              checksums=verify_checksums, on_demand=mode == "sequential")
        pipe = cls(manifest.sv3d_config(), manifest.shapes, runners, backend=name, device=device, manifest=manifest)
        pipe.memory = mode
        pipe.load_seconds = time.perf_counter() - t0
        return pipe

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def has_camera(self) -> bool:
        return self.config.conditioner.camera_embed_dim > 0

    @property
    def num_frames(self) -> int:
        return self.shapes.num_frames

    @property
    def resolution(self) -> int:
        return self.shapes.resolution

    @property
    def image_shape(self):
        return (1, 3, self.resolution, self.resolution)

    @property
    def latent_shape(self):
        lat = self.resolution // self.config.latent_factor
        return (self.num_frames, self.config.latent_channels, lat, lat)

    # -- inputs ----------------------------------------------------------------------------------------------
    def prepare_image(self, image: ImageInput, *, remove_background: str = "auto") -> PreprocessedImage:
        """The conditioning image (see :func:`prepare_image`)."""
        return prepare_image(self.config, self.resolution, image, remove_background=remove_background)

    def make_orbit(self, elevation=None, azimuths=None, preset: Optional[str] = None) -> Optional[Orbit]:
        """A validated camera orbit for this export (see :func:`build_orbit`)."""
        return build_orbit(self.config, self.num_frames, elevation=elevation, azimuths=azimuths, preset=preset)

    def _noise(self, noise, seed: int) -> Noise:
        if noise is None:
            return Noise.from_seed(seed, self.image_shape, self.latent_shape)
        if isinstance(noise, Mapping):
            try:
                noise = Noise(noise["cond_noise"], noise["latent_noise"])
            except KeyError as e:
                raise SV3DError("explicit noise needs both draws", expected="keys cond_noise and latent_noise",
                                got=sorted(noise)) from None
        if not isinstance(noise, Noise):
            raise SV3DError("invalid noise", expected="None, a Noise, or a mapping", got=type(noise).__name__)
        out = []
        for name, arr, shape in (("cond_noise", noise.cond_noise, self.image_shape),
                                 ("latent_noise", noise.latent_noise, self.latent_shape)):
            a = np.asarray(arr, dtype=F32)
            if a.shape != tuple(shape):
                raise SV3DError(f"{name} has the wrong shape", expected=tuple(shape), got=a.shape)
            if not np.all(np.isfinite(a)):
                raise SV3DError(f"{name} has non-finite values")
            out.append(a)
        return Noise(*out)

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, image: ImageInput, *, seed: Optional[int] = None, num_steps: Optional[int] = None,
                 orbit: Optional[Orbit] = None, guider: Optional[str] = None, min_scale: Optional[float] = None,
                 max_scale: Optional[float] = None, noise=None, callback: Optional[ProgressCallback] = None,
                 remove_background: str = "auto") -> Result:
        """Generate the orbit video of one image.

        image: path / PreprocessedImage / array (see ``prepare_image``). seed: for the noise draws (config seed,
        23, by default); ignored when ``noise`` (a Noise or {"cond_noise", "latent_noise"}) is given.
        num_steps: Euler steps (config default 50). orbit: sv3d_p camera orbit (``make_orbit``; default orbit when
        None); must be None for sv3d_u. guider: triangle | linear | constant, with min/max scale (config default).
        callback: called after every step with {step, num_steps, sigma, graph_s, glue_s, step_s, latent}.
        """
        cfg = self.config
        timings = Timings(precision=self.precisions)
        t_start = time.perf_counter()
        t = self.num_frames

        # 0. options
        steps = cfg.sampler.num_steps if num_steps is None else num_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise SV3DError("invalid number of steps", expected="an integer >= 1", got=repr(num_steps))
        kind = cfg.guider.kind if guider is None else guider
        if kind not in GUIDANCE_KINDS:
            raise SV3DError("unknown guider", expected=f"one of {list(GUIDANCE_KINDS)}", got=repr(kind))
        try:
            lo = float(cfg.guider.min_scale if min_scale is None else min_scale)
            hi = float(cfg.guider.max_scale if max_scale is None else max_scale)
        except (TypeError, ValueError):
            raise SV3DError("guidance scales must be numbers", got=f"min {min_scale!r}, max {max_scale!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise SV3DError("guidance scales must be finite", got=f"min {lo}, max {hi}")
        scales = guidance_scales(kind, t, lo, hi)
        if self.has_camera:
            if orbit is None:
                orbit = self.make_orbit()
            elif not isinstance(orbit, Orbit):
                raise OrbitError("invalid orbit", expected="an Orbit (pipeline.make_orbit) or None",
                                 got=type(orbit).__name__)
            else:                                                   # re-validate count and elevation range
                orbit = self.make_orbit(elevation=list(orbit.elevations_deg), azimuths=list(orbit.azimuths_deg))
            polars, azimuths = orbit_to_radians(orbit, cfg.conditioner.polar_offset_deg)
        elif orbit is not None:
            self.make_orbit(elevation=0.0)                          # raises the sv3d_u "no camera" error
        used_seed = (cfg.seed if seed is None else seed) if noise is None else None

        # 1. conditioning image and noise
        t0 = time.perf_counter()
        pre = self.prepare_image(image, remove_background=remove_background)
        image_m11 = pre.image_m11.astype(F32)
        draws = self._noise(noise, used_seed)
        timings.add("preprocess", time.perf_counter() - t0)

        # 2. CLIP on the clean image, VAE encoder on the noise-augmented one (once each; uc = zeros)
        t0 = time.perf_counter()
        embedding = self._stage("clip_encoder", {"image": image_m11}, timings)["embedding"]    # (1, D)
        cond_frames = image_m11 + F32(cfg.conditioner.cond_aug) * draws.cond_noise              # SVS:210
        cond_latent = self._stage("vae_encoder", {"image": cond_frames}, timings)["latent"]      # (1, C, h, w)

        t0 = time.perf_counter()
        c_ctx = np.repeat(embedding[:, None, :], t, axis=0)                                     # (T, 1, D)
        c_concat = np.repeat(cond_latent, t, axis=0)                                            # (T, C, h, w)
        if self.has_camera:
            vector = vector_conditioning(cfg.conditioner, t, polars_rad=polars, azimuths_rad=azimuths)
        else:
            vector = vector_conditioning(cfg.conditioner, t)                                    # (T, V)
        denoiser = _CFGDenoiser(self.runners["unet"], self.shapes.unet_batch, c_ctx, c_concat, vector, scales)
        sigmas = edm_sigmas(steps, cfg.sampler.sigma_min, cfg.sampler.sigma_max, cfg.sampler.rho)
        x0 = initial_latent(draws.latent_noise, sigmas[0])
        timings.add("conditioning", time.perf_counter() - t0)

        # 3. sampling
        def on_step(info: Dict[str, Any]) -> None:
            now = time.perf_counter()
            graph_s = denoiser.last_graph_s
            step_s = now - denoiser.last_start
            timings.steps.append(StepTiming(int(info["i"]), float(info["sigma"]), graph_s, step_s - graph_s))
            if callback is not None:
                callback({"step": int(info["i"]), "num_steps": int(steps), "sigma": float(info["sigma"]),
                          "graph_s": graph_s, "glue_s": step_s - graph_s, "step_s": step_s,
                          "latent": info["x_next"]})

        self._load("unet", timings)
        t0 = time.perf_counter()
        latents = sample_euler(denoiser, x0, sigmas, callback=on_step)
        sampling_s = time.perf_counter() - t0
        unet_s = sum(s.graph_s for s in timings.steps)
        timings.add("unet", unet_s)
        timings.add("sampling_glue", sampling_s - unet_s)
        self._release("unet")

        # 4. decode and post-process
        self._load("vae_decoder", timings)
        t0 = time.perf_counter()
        decoded = self._decode(latents)                                                         # (T, 3, S, S)
        timings.add("vae_decoder", time.perf_counter() - t0)
        self._release("vae_decoder")
        t0 = time.perf_counter()
        frames, frames_uint8 = postprocess(decoded, image_m11)
        timings.add("postprocess", time.perf_counter() - t0)
        timings.add("total", time.perf_counter() - t_start)
        return Result(frames=frames, frames_uint8=frames_uint8, latents=latents, input_image=pre, timings=timings,
                      num_steps=int(steps), seed=used_seed, guidance_scales=scales,
                      orbit=orbit if self.has_camera else None)

    # -- stages and memory ------------------------------------------------------------------------------------
    def _load(self, name: str, timings: "Timings") -> None:
        """Sequential memory: load graph `name` now, timed as stage load_<name> (nothing to do when resident)."""
        runner = self.runners[name]
        if hasattr(runner, "load") and not getattr(runner, "loaded", True):
            t0 = time.perf_counter()
            runner.load()
            timings.add(f"load_{name}", time.perf_counter() - t0)

    def _release(self, name: str) -> None:
        if self.memory == "sequential" and hasattr(self.runners[name], "release"):
            self.runners[name].release()

    def _stage(self, name: str, feeds: Mapping[str, np.ndarray], timings: "Timings") -> Dict[str, np.ndarray]:
        """Run a once-per-image graph as its own timed stage (loaded and released around it when sequential)."""
        self._load(name, timings)
        t0 = time.perf_counter()
        out = self.runners[name].run(feeds)
        timings.add(name, time.perf_counter() - t0)
        self._release(name)
        return out

    def _decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder over the frames in chunks of decode_chunk; the last chunk is zero-padded (the image decoder
        works per frame, so padding frames do not affect the others) and the padding dropped."""
        chunk = self.shapes.decode_chunk
        runner = self.runners["vae_decoder"]
        parts = []
        for start in range(0, latents.shape[0], chunk):
            part = latents[start:start + chunk]
            n = part.shape[0]
            if n < chunk:
                part = np.concatenate([part, np.zeros((chunk - n,) + part.shape[1:], dtype=F32)], axis=0)
            parts.append(runner.run({"latent": part})["image"][:n])
        return np.concatenate(parts, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# inputs (usable before any graph is loaded)


MEMORY_MODES = ("auto", "resident", "sequential")


def resolve_memory_mode(memory: str, manifest: Manifest, fmt: str) -> str:
    """``auto`` -> sequential when the export's graph files (in the format the backend reads) exceed
    LIMITS.resident_ram_fraction of the machine's RAM, else resident."""
    from configs.limits import LIMITS

    if memory not in MEMORY_MODES:
        raise SV3DError("unknown memory mode", expected=f"one of {list(MEMORY_MODES)}", got=repr(memory))
    if memory != "auto":
        return memory
    total = sum(f.bytes for e in manifest.graphs.get(fmt, {}).values() for f in e.files)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):       # not POSIX: keep everything resident
        return "resident"
    return "sequential" if total > LIMITS.resident_ram_fraction * ram else "resident"


def prepare_image(config, resolution: int, image: ImageInput, *,
                  remove_background: str = "auto") -> PreprocessedImage:
    """The conditioning image from a file path, a PreprocessedImage, or an array: (1, 3, S, S) / (3, S, S) float
    in [-1, 1], (S, S, 3) uint8 RGB, or (H, W, 4) uint8 RGBA (centred and resized like a file).

    Files go through runtime.preprocess.load_image (alpha -> object, or background removal per
    ``remove_background``), resized to ``resolution`` with the config's image_frame_ratio.
    """
    s = int(resolution)
    shape = (1, 3, s, s)
    if isinstance(image, PreprocessedImage):
        pre = image
    elif isinstance(image, (str, os.PathLike)):
        if remove_background not in BACKGROUND_MODES:
            raise InputImageError("invalid remove_background", expected=f"one of {BACKGROUND_MODES}",
                                  got=repr(remove_background))
        pre = load_image(image, size=s, image_frame_ratio=config.image_frame_ratio,
                         remove_background=remove_background)
    elif isinstance(image, np.ndarray):
        pre = _array_image(config, s, image)
    else:
        raise InputImageError("unsupported image input",
                              expected="a path, a PreprocessedImage or a numpy array", got=type(image).__name__)
    if pre.image_m11.shape != shape:
        raise InputImageError("conditioning image of the wrong size for this export", expected=shape,
                              got=pre.image_m11.shape)
    return pre


def _array_image(config, s: int, arr: np.ndarray) -> PreprocessedImage:
    shape = (1, 3, s, s)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 4:
        return preprocess_rgba(arr, size=s, image_frame_ratio=config.image_frame_ratio)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return PreprocessedImage(arr, uint8_to_m11(arr), (0, 0, arr.shape[1], arr.shape[0]), arr.shape[0])
    if np.issubdtype(arr.dtype, np.floating) and arr.shape in (shape, shape[1:]):
        m11 = np.asarray(arr, dtype=F32).reshape(shape)
        if not np.all(np.isfinite(m11)):
            raise InputImageError("the image array has non-finite values")
        lo, hi = float(m11.min()), float(m11.max())
        if lo < -1.0 - IMAGE_RANGE_TOLERANCE or hi > 1.0 + IMAGE_RANGE_TOLERANCE:
            raise InputImageError("float image out of range", expected="values in [-1, 1] (x / 255 * 2 - 1)",
                                  got=f"[{lo:.4g}, {hi:.4g}]")
        rgb = np.clip((m11[0].transpose(1, 2, 0) + F32(1.0)) / F32(2.0), 0.0, 1.0) * UINT8_MAX
        return PreprocessedImage(rgb.astype(np.uint8), m11, (0, 0, s, s), s)
    raise InputImageError("unsupported image array",
                          expected=f"float {shape} or {shape[1:]} in [-1, 1], uint8 ({s}, {s}, 3) RGB, or uint8 "
                                   f"(H, W, 4) RGBA", got=f"{arr.dtype} {arr.shape}")


def build_orbit(config, num_frames: int, *, elevation=None, azimuths=None,
                preset: Optional[str] = None) -> Optional[Orbit]:
    """A validated camera orbit for an sv3d_p config; None for sv3d_u, which refuses any camera input.

    elevation: None (config default), one value, or T values (degrees); azimuths: None (official default) or
    T values (degrees); preset: None / "default" (constant elevation) or "dynamic" (sine elevation around one base
    elevation; no azimuths). Elevations must lie in the config's elevation_range_deg. Raises OrbitError.
    """
    cond = config.conditioner
    if cond.camera_embed_dim <= 0:
        given = [k for k, v in (("elevation", elevation), ("azimuths", azimuths), ("orbit preset", preset))
                 if v is not None]
        if given:
            raise OrbitError(f"this export is {config.variant}, which has no camera conditioning; camera options "
                             f"cannot be used", expected="no elevation / azimuths / orbit preset",
                             got=", ".join(given), hint="use an sv3d_p export for a camera orbit")
        return None
    preset = "default" if preset is None else preset
    if preset not in ORBIT_PRESETS:
        raise OrbitError("unknown orbit preset", expected=f"one of {sorted(ORBIT_PRESETS)}", got=repr(preset))
    if preset == "default":
        return make_orbit(num_frames, elevation=elevation, azimuths=azimuths,
                          elevation_range=cond.elevation_range_deg, default_elevation_deg=cond.default_elevation_deg)
    if azimuths is not None:
        raise OrbitError(f"the {preset!r} orbit preset sets its own azimuths", expected="no azimuths",
                         got=f"{np.asarray(azimuths).size} azimuths")
    try:
        base = np.atleast_1d(np.asarray(cond.default_elevation_deg if elevation is None else elevation,
                                        dtype=np.float64))
    except (TypeError, ValueError):
        raise OrbitError("elevation must be a number", got=repr(elevation)) from None
    if base.shape != (1,):
        raise OrbitError(f"the {preset!r} orbit preset takes one base elevation", expected="a single value",
                         got=f"{base.size} values")
    if not np.isfinite(base[0]):
        raise OrbitError("elevation must be finite", got=float(base[0]))
    orbit = preset_orbit(preset, num_frames, float(base[0]))
    return make_orbit(num_frames, elevation=list(orbit.elevations_deg), azimuths=list(orbit.azimuths_deg),
                      elevation_range=cond.elevation_range_deg)


class _CFGDenoiser:
    """denoiser(x, sigma) -> guided D for the sampler: EDM v-scaling around the UNet graph, CFG batch [uc ; c]."""

    def __init__(self, unet, unet_batch: int, c_ctx, c_concat, vector, scales) -> None:
        t = c_concat.shape[0]
        self.unet = unet
        self.t = t
        self.scales = scales
        self.two_calls = unet_batch == t
        zeros_ctx, zeros_concat = np.zeros_like(c_ctx), np.zeros_like(c_concat)
        if self.two_calls:                 # one call per branch, batch T
            self.branches = [(zeros_concat, zeros_ctx, vector), (c_concat, c_ctx, vector)]
        else:                              # both branches in one call, batch 2T, uc first (GDR:88-99)
            self.branches = [(np.concatenate([zeros_concat, c_concat]), np.concatenate([zeros_ctx, c_ctx]),
                              np.concatenate([vector, vector]))]
        self.last_graph_s = 0.0
        self.last_start = time.perf_counter()

    def __call__(self, x: np.ndarray, sigma) -> np.ndarray:
        self.last_start = time.perf_counter()
        c_skip, c_out, c_in, c_noise = edm_vscaling(sigma)          # float32 scalars (DSC:51-59)
        x_b = x if self.two_calls else np.concatenate([x, x])       # (B, C, h, w), B = T or 2T
        scaled = c_in * x_b
        graph_s = 0.0
        outs = []
        for concat, ctx, vec in self.branches:
            feeds = {"x": np.concatenate([scaled, concat], axis=1),          # (B, 2C, h, w) (WRP:27)
                     "timesteps": np.full(concat.shape[0], c_noise, dtype=F32),
                     "context": ctx, "y": vec}
            g0 = time.perf_counter()
            outs.append(self.unet.run(feeds)["out"])
            graph_s += time.perf_counter() - g0
        net = outs[0] if len(outs) == 1 else np.concatenate(outs)            # (2T, C, h, w) [uc ; c]
        x2 = x_b if not self.two_calls else np.concatenate([x, x])
        denoised = net * c_out + x2 * c_skip                                 # DEN:23-39
        d_uc, d_c = split_cfg_batch(denoised, self.t)
        self.last_graph_s = graph_s
        return apply_guidance(d_uc, d_c, self.scales)


def postprocess(decoded: np.ndarray, image_m11: np.ndarray):
    """Decoder output (T, 3, S, S) -> (frames in [0, 1] (T, 3, S, S) float32, (T, S, S, 3) uint8).

    The last frame becomes the conditioning image (SVS:255-256); clamp((x + 1) / 2, 0, 1) (SVS:257); uint8 by
    truncation of x * 255 (SVS:268-275)."""
    x = np.array(decoded, dtype=F32, copy=True)
    x[-1] = image_m11[0]
    frames = np.clip((x + F32(1.0)) / F32(2.0), F32(0.0), F32(1.0))
    frames_uint8 = (frames.transpose(0, 2, 3, 1) * F32(UINT8_MAX)).astype(np.uint8)
    return frames, frames_uint8
