"""SV3D image -> orbit video over exported graphs, with the numpy sampler in between.

    pipe = SV3DPipeline.from_export("exports/sv3d_u_576", backend="auto", device="cpu")   # or (folder, RunOptions)
    result = pipe.generate("chair.png", seed=23)
    result.frames          # (T, 3, S, S) float32 in [0, 1]
    result.frames_uint8    # (T, S, S, 3) uint8
    print(result.timings.summary())

What one ``generate`` call does (SV3D_REFERENCE.md §0-§5, §7; SVS = simple_video_sample.py):
 0. options (steps, seed, guider and scales, orbit) checked once into a frozen GenerationOptions (runtime.options);
 1. conditioning image (1, 3, S, S) in [-1, 1] (runtime.preprocess.prepare_image), and the
    noise: ``numpy.random.default_rng(seed)`` draws, in this order, ``cond_noise`` (1, 3, S, S) and then
    ``latent_noise`` (T, C, h, w), both standard normal float32 (the reference draws them in the same order,
    SVS:210 then SVS:239, from torch's generator, so equal seeds do not give equal pictures across the two;
    pass ``noise=`` to reproduce a reference run exactly);
 2. conditioning (runtime.conditioning.Conditioning; ``SV3DPipeline.conditioning`` returns it): CLIP once on the
    clean image, VAE encoder once on ``image + cond_aug * cond_noise``. The reference runs both twice (c and uc)
    and then zeroes the uc outputs (ENC:157-161, 183-184): same result at half the cost.
      crossattn: c = embedding repeated T times (T, 1, D),  uc = zeros
      concat:    c = latent repeated T times (T, C, h, w),  uc = zeros   (unscaled posterior mean, §3.2)
      vector:    runtime.conditioning.vector_conditioning, identical for c and uc (T, V)
 3. Euler over the EDM schedule (runtime.sampling) with x0 = latent_noise * sqrt(1 + sigma0^2) and the guided
    denoiser of runtime.denoiser. Per step the network sees the CFG batch [uc ; c] (uc first, GDR:88-99):
      x_net = [c_in * x | concat], timesteps = c_noise, context = crossattn, y = vector
    in one call of batch 2T or two calls of batch T (the export's ``unet_batch``); D = c_out * F + c_skip * x;
    per-frame guidance D = D_uc + scale_t * (D_c - D_uc) (runtime.guidance);
 4. VAE decoder in chunks of the export's ``decode_chunk`` frames (last chunk padded, padding dropped; the graph
    divides by the config's scale_factor itself); the last frame is replaced by the input image (SVS:255-256);
    frames = clamp((x + 1) / 2, 0, 1); uint8 = (frames * 255).astype(uint8), truncation as the reference.
The reference's invisible watermark and NSFW filter (SVS:266-267) are not applied.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np

from configs.schema import SV3DConfig

from .conditioning import Conditioning, vector_conditioning
from .denoiser import CFGDenoiser, CFGUNet, LastOutput, VDenoiser
from .errors import GraphError, SV3DError
from .manifest import Manifest
from .options import GenerationOptions, resolve_options
from .orbits import Orbit, build_orbit
from .preprocess import ImageInput, PreprocessedImage, prepare_image
from .run_options import RunOptions
from .sampling import initial_latent, sample_euler
from .specs import GRAPH_NAMES, ExportShapes, GraphSpec, graph_specs, spec_differences
from .timings import StepTiming, TimedRunner, Timings

F32 = np.float32
UINT8_MAX = 255

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
        """The draws of ``seed`` (an integer >= 0, checked by runtime.options.resolve_options)."""
        rng = np.random.default_rng(int(seed))
        cond = rng.standard_normal(tuple(image_shape), dtype=F32)
        latent = rng.standard_normal(tuple(latent_shape), dtype=F32)
        return cls(cond, latent)


@dataclass(frozen=True)
class Result:
    frames: np.ndarray              # (T, 3, S, S) float32 in [0, 1]; the last frame is the input image
    frames_uint8: np.ndarray        # (T, S, S, 3) uint8
    latents: np.ndarray             # (T, C, h, w) float32, the sampled latents (before the decoder's 1/scale_factor)
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

    config: the export's RuntimeConfig (``manifest.runtime``) or an SV3DConfig; runners: {graph name: runner} for
    clip_encoder, vae_encoder, unet, vae_decoder (runtime.backends runners, or any object with ``spec`` and
    ``run(feeds) -> {name: array}``); specs: the graph contracts the runners must meet (default: the manifest's
    entries, else graph_specs(config, shapes) of an SV3DConfig).
    """

    def __init__(self, config, shapes: ExportShapes, runners: Mapping[str, Any], *, backend: str = "custom",
                 device: str = "cpu", manifest: Optional[Manifest] = None,
                 specs: Optional[Mapping[str, GraphSpec]] = None) -> None:
        self.config = config.runtime_config() if isinstance(config, SV3DConfig) else config
        self.shapes = shapes
        self.backend = backend
        self.device = device
        self.manifest = manifest
        self.load_seconds = 0.0
        self.memory = "resident"            # or "sequential" (from_manifest): graphs loaded per stage
        missing = [n for n in GRAPH_NAMES if n not in runners]
        if missing:
            raise GraphError(f"the pipeline needs graphs {list(GRAPH_NAMES)}; missing {missing}")
        if specs is None:
            if not isinstance(config, SV3DConfig):
                raise GraphError("a pipeline built from a RuntimeConfig needs the graph contracts",
                                 expected="specs= (e.g. a manifest's entries) or an SV3DConfig", got="neither")
            specs = graph_specs(config, shapes)
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
    def from_export(cls, folder, options: Optional[RunOptions] = None, **fields) -> "SV3DPipeline":
        """Load an export folder (``python -m export`` output) to run as ``options`` say.

        options: a runtime.run_options.RunOptions, and/or its fields by keyword, which replace its own:
        backend (auto | mslite | mindspore | onnxruntime | openvino), device (cpu | cuda | ascend) and device_id,
        threads (intra-op threads, 0 = the engine's default, at most the CPUs this process may use),
        precision and cache_dir (the compute precision and a compiled-model cache, where the backend has them:
        one it cannot honour is refused), verify_checksums (sha256 of every graph file against the manifest;
        sizes are always checked), memory: resident (all four graphs loaded once, kept for every image),
        sequential (each graph loaded just before its stage and released after it: the peak is the largest
        stage, not the sum, at the price of loading the graphs again for every image -- seconds from OpenVINO's
        cache, longer on other engines), or auto = sequential when the graph files exceed
        LIMITS.resident_ram_fraction of this machine's RAM.
        """
        t0 = time.perf_counter()
        pipe = cls.from_manifest(Manifest.load(folder), options, **fields)
        pipe.load_seconds = time.perf_counter() - t0
        return pipe

    @classmethod
    def from_manifest(cls, manifest: Manifest, options: Optional[RunOptions] = None, **fields) -> "SV3DPipeline":
        """As :meth:`from_export`, for an already loaded manifest."""
        from .backends import engine_for

        t0 = time.perf_counter()
        pipe = cls.from_engine(engine_for(manifest, options, **fields))
        pipe.load_seconds = time.perf_counter() - t0
        return pipe

    @classmethod
    def from_engine(cls, engine) -> "SV3DPipeline":
        """The graphs of ``engine.manifest`` on a backend already chosen, with its options checked
        (runtime.backends.engine_for)."""
        t0 = time.perf_counter()
        manifest = engine.manifest
        mode = resolve_memory_mode(engine.options.memory, manifest, engine.format)
        runners = engine.load_all(on_demand=mode == "sequential")
        pipe = cls(manifest.runtime, manifest.shapes, runners, backend=engine.name, device=engine.options.device,
                   manifest=manifest, specs={n: engine.spec(n) for n in GRAPH_NAMES})
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
        lat = self.config.latent_size(self.resolution)
        return (self.num_frames, self.config.latent_channels, lat, lat)

    # -- inputs ----------------------------------------------------------------------------------------------
    def prepare_image(self, image: ImageInput, *, remove_background: str = "auto") -> PreprocessedImage:
        """The conditioning image (see :func:`runtime.preprocess.prepare_image`)."""
        return prepare_image(self.config, self.resolution, image, remove_background=remove_background)

    def make_orbit(self, elevation=None, azimuths=None, preset: Optional[str] = None) -> Optional[Orbit]:
        """A validated camera orbit for this export (see :func:`runtime.orbits.build_orbit`)."""
        return build_orbit(self.config, self.num_frames, elevation=elevation, azimuths=azimuths, preset=preset)

    def resolve_options(self, **options) -> GenerationOptions:
        """Every generation option checked once, defaults from the export's config (runtime.options)."""
        return resolve_options(self.config, self.num_frames, **options)

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
            try:
                a = np.asarray(arr)
            except (TypeError, ValueError):              # ragged nesting
                a = np.asarray(None)
            if a.dtype.kind not in "fiu":               # complex would lose its imaginary part; str, None, ...
                raise SV3DError(f"{name} must be real numbers", expected="a float32 array",
                                got=f"{type(arr).__name__} of dtype {a.dtype}")
            a = a.astype(F32, copy=False)
            if a.shape != tuple(shape):
                raise SV3DError(f"{name} has the wrong shape", expected=tuple(shape), got=a.shape)
            if not np.all(np.isfinite(a)):
                raise SV3DError(f"{name} has non-finite values")
            out.append(a)
        return Noise(*out)

    def _options(self, options: Optional[GenerationOptions], **given) -> GenerationOptions:
        if options is None:
            return self.resolve_options(**given)
        if not isinstance(options, GenerationOptions):
            raise SV3DError("invalid options", expected="a GenerationOptions (pipeline.resolve_options)",
                            got=type(options).__name__)
        twice = sorted(k for k, v in given.items() if v is not None)
        if twice:
            raise SV3DError("options given twice", expected="options= or the separate arguments", got=twice)
        return options

    # -- generation ------------------------------------------------------------------------------------------
    def conditioning(self, image: ImageInput, *, seed: Optional[int] = None, noise=None,
                     orbit: Optional[Orbit] = None, options: Optional[GenerationOptions] = None,
                     remove_background: str = "auto") -> Conditioning:
        """The UNet conditioning :meth:`generate` computes for these inputs (CLIP embedding, conditioning latent,
        vector; runtime.conditioning.Conditioning), without sampling: e.g. to compare with the reference's
        c_/uc_ crossattn, concat and vector (``.branches()``). Same arguments as :meth:`generate`."""
        opts = self._options(options, seed=seed, orbit=orbit)
        pre = self.prepare_image(image, remove_background=remove_background)
        draws = self._noise(noise, opts.seed)
        return self._encode(pre.image_m11.astype(F32), draws, opts, Timings())

    def generate(self, image: ImageInput, *, seed: Optional[int] = None, num_steps: Optional[int] = None,
                 orbit: Optional[Orbit] = None, guider: Optional[str] = None, min_scale: Optional[float] = None,
                 max_scale: Optional[float] = None, noise=None, callback: Optional[ProgressCallback] = None,
                 remove_background: str = "auto", options: Optional[GenerationOptions] = None) -> Result:
        """Generate the orbit video of one image.

        image: path / PreprocessedImage / array (see ``prepare_image``). seed: for the noise draws (config seed by
        default); ignored when ``noise`` (a Noise or {"cond_noise", "latent_noise"}) is given. num_steps: Euler
        steps (config default). orbit: sv3d_p camera orbit (``make_orbit``; default orbit when None); must be None
        for sv3d_u. guider: triangle | linear | constant, with min/max scale (config default). options: all of
        these resolved beforehand (``resolve_options``), instead of the separate arguments.
        callback: called after every step with a dict: step, num_steps, sigma, graph_s, glue_s, step_s, x (the
        step's input latent), denoised_raw ((2T, C, h, w) D of both CFG branches, [uc ; c]), denoised (the guided
        (T, C, h, w) D) and latent (after the Euler update).
        """
        timings = Timings(precision=self.precisions)
        t_start = time.perf_counter()

        # 0. options, checked once
        opts = self._options(options, seed=seed, num_steps=num_steps, orbit=orbit, guider=guider,
                             min_scale=min_scale, max_scale=max_scale)

        # 1. conditioning image and noise
        t0 = time.perf_counter()
        pre = self.prepare_image(image, remove_background=remove_background)
        image_m11 = pre.image_m11.astype(F32)
        draws = self._noise(noise, opts.seed)
        timings.add("preprocess", time.perf_counter() - t0)

        # 2. conditioning: CLIP and VAE encoder once each
        cond = self._encode(image_m11, draws, opts, timings)

        # 3. sampling
        latents = self._sample(cond, draws, opts, timings, callback)

        # 4. decode and post-process
        with self._graph("vae_decoder", timings) as decoder:
            t0 = time.perf_counter()
            decoded = decode_in_chunks(decoder, latents, self.shapes.decode_chunk)             # (T, 3, S, S)
            timings.add("vae_decoder", time.perf_counter() - t0)
        t0 = time.perf_counter()
        frames, frames_uint8 = postprocess(decoded, image_m11)
        timings.add("postprocess", time.perf_counter() - t0)
        timings.add("total", time.perf_counter() - t_start)
        return Result(frames=frames, frames_uint8=frames_uint8, latents=latents, input_image=pre, timings=timings,
                      num_steps=opts.num_steps, seed=opts.seed if noise is None else None,
                      guidance_scales=opts.scales, orbit=opts.orbit if self.has_camera else None)

    # -- stages ----------------------------------------------------------------------------------------------
    def _encode(self, image_m11: np.ndarray, draws: "Noise", opts: GenerationOptions,
                timings: "Timings") -> Conditioning:
        """CLIP on the clean image, the VAE encoder on the noise-augmented one (SVS:210); the vector."""
        embedding = self._stage("clip_encoder", {"image": image_m11}, timings)["embedding"]     # (1, D)
        cond_frames = image_m11 + F32(self.config.conditioner.cond_aug) * draws.cond_noise
        latent = self._stage("vae_encoder", {"image": cond_frames}, timings)["latent"]          # (1, C, h, w)
        t0 = time.perf_counter()
        vector = vector_conditioning(self.config.conditioner, self.num_frames, polars_rad=opts.polars_rad,
                                     azimuths_rad=opts.azimuths_rad)                            # (T, V)
        timings.add("conditioning", time.perf_counter() - t0)
        return Conditioning(embedding, latent, vector)

    def _sample(self, cond: Conditioning, draws: "Noise", opts: GenerationOptions, timings: "Timings",
                callback: Optional[ProgressCallback]) -> np.ndarray:
        """Euler over the EDM schedule with the guided denoiser (k-diffusion's layers, each f(x, sigma) -> D); a
        step's graph seconds from a timing proxy around the UNet runner, its glue seconds the rest of the step."""
        t0 = time.perf_counter()
        unet = TimedRunner(self.runners["unet"])
        branches = LastOutput(VDenoiser(CFGUNet(unet, self.shapes.unet_batch, cond)))   # D of [uc ; c], (2T, ...)
        denoiser = CFGDenoiser(branches, opts.scales)                                     # guided D, (T, C, h, w)
        x0 = initial_latent(draws.latent_noise, opts.sigmas[0])
        timings.add("conditioning", time.perf_counter() - t0)
        step_started = 0.0

        def on_step(info: Dict[str, Any]) -> None:
            nonlocal step_started
            step_s = time.perf_counter() - step_started
            graph_s = unet.take()
            glue_s = step_s - graph_s
            timings.steps.append(StepTiming(int(info["i"]), float(info["sigma"]), graph_s, glue_s))
            if callback is not None:
                callback({"step": int(info["i"]), "num_steps": opts.num_steps, "sigma": float(info["sigma"]),
                          "graph_s": graph_s, "glue_s": glue_s, "step_s": step_s, "x": info["x"],
                          "denoised_raw": branches.last, "denoised": info["denoised"], "latent": info["x_next"]})
            step_started = time.perf_counter()            # the next step starts when this callback returns

        with self._graph("unet", timings):
            t0 = step_started = time.perf_counter()
            latents = sample_euler(denoiser, x0, opts.sigmas, callback=on_step)
            sampling_s = time.perf_counter() - t0
        unet_s = sum(s.graph_s for s in timings.steps)
        timings.add("unet", unet_s)
        timings.add("sampling_glue", sampling_s - unet_s)
        return latents

    # -- graphs and memory -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _graph(self, name: str, timings: "Timings") -> Iterator[Any]:
        """Graph `name` for the block. Sequential memory: loaded on entering (timed as the stage load_<name>) and
        released when the block ends, on an error too; resident: the runner, loaded once for every image. A runner
        without load/release (one a caller swapped in, e.g. export/int8.py's recorder) is used as it is."""
        runner = self.runners[name]
        sequential = self.memory == "sequential" and hasattr(runner, "load") and hasattr(runner, "release")
        if sequential:
            t0 = time.perf_counter()
            runner.load()
            timings.add(f"load_{name}", time.perf_counter() - t0)
        try:
            yield runner
        finally:
            if sequential:
                runner.release()

    def _stage(self, name: str, feeds: Mapping[str, np.ndarray], timings: "Timings") -> Dict[str, np.ndarray]:
        """Run a once-per-image graph as its own timed stage."""
        with self._graph(name, timings) as runner:
            t0 = time.perf_counter()
            out = runner.run(feeds)
            timings.add(name, time.perf_counter() - t0)
        return out


def decode_in_chunks(decoder: Any, latents: np.ndarray, chunk: int) -> np.ndarray:
    """The decoder over latents (T, C, h, w) in chunks of the export's decode_chunk frames -> (T, 3, S, S); the last
    chunk is zero-padded (the image decoder works per frame, so padding frames do not affect the others) and the
    padding dropped."""
    parts = []
    for start in range(0, latents.shape[0], chunk):
        part = latents[start:start + chunk]
        n = part.shape[0]
        if n < chunk:
            part = np.concatenate([part, np.zeros((chunk - n,) + part.shape[1:], dtype=F32)], axis=0)
        parts.append(decoder.run({"latent": part})["image"][:n])
    return np.concatenate(parts, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# memory mode and post-processing


def resolve_memory_mode(memory: str, manifest: Manifest, fmt: str) -> str:
    """RunOptions.memory (runtime.run_options.MEMORY_MODES) for this export: ``auto`` -> sequential when the
    export's graph files (in the format the backend reads) exceed LIMITS.resident_ram_fraction of the machine's
    RAM, else resident."""
    from configs.limits import LIMITS

    if memory != "auto":
        return memory
    total = sum(f.bytes for e in manifest.graphs.get(fmt, {}).values() for f in e.files)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):       # not POSIX: keep everything resident
        return "resident"
    return "sequential" if total > LIMITS.resident_ram_fraction * ram else "resident"


def postprocess(decoded: np.ndarray, image_m11: np.ndarray):
    """Decoder output (T, 3, S, S) -> (frames in [0, 1] (T, 3, S, S) float32, (T, S, S, 3) uint8).

    The last frame becomes the conditioning image (SVS:255-256); clamp((x + 1) / 2, 0, 1) (SVS:257); uint8 by
    truncation of x * 255 (SVS:268-275)."""
    x = np.array(decoded, dtype=F32, copy=True)
    x[-1] = image_m11[0]
    frames = np.clip((x + F32(1.0)) / F32(2.0), F32(0.0), F32(1.0))
    frames_uint8 = (frames.transpose(0, 2, 3, 1) * F32(UINT8_MAX)).astype(np.uint8)
    return frames, frames_uint8
