"""``python -m runtime``: image(s) -> orbit videos with an exported SV3D model.

    python -m runtime --graphs exports/sv3d_u_576 chair.png mug.png --output outputs
    python -m runtime --graphs exports/sv3d_p_576 chair.png --elevation 20 --orbit dynamic
    python -m runtime --graphs exports/sv3d_u_576 chair.png --mesh    # + <output>/chair/mesh/ (runtime/mesh)

The graphs are loaded once for all images. Every input is read and checked (and the camera options validated)
before the first graph is loaded, so a bad input fails fast and writes nothing. Each image gets a new folder
``<output>/<image stem>`` (``_1``, ``_2``, ... if it exists: nothing is overwritten), written through a temporary
folder and renamed into place, so a failure leaves no partial output (see runtime/outputs.py for the files).

Every user error (bad image, bad option, wrong or corrupted export, unwritable output) prints one message on
stderr and exits with status 1; usage errors exit with 2 (argparse). No tracebacks. Ctrl-C (SIGINT) exits 130
and SIGTERM 143 with "interrupted: ..." and no partial output, on every backend (runtime/interrupts.py keeps the
handler in place after MindSpore replaces it). Sizes that bound work or memory (--steps, --fps, the number of
images) and the guidance scales are checked against configs/limits.py, --threads against the CPUs this process may
use, before anything runs. An output folder this command created is removed again if nothing was written into it.
With the mindspore backend, MindSpore's graph and debug dumps go to a temporary folder that is removed at exit,
never into the working directory, and its import is never interrupted halfway (runtime/interrupts.py: Ctrl-C
exits 130 once it is done).

The demo (a random-weight tiny model exported on the fly, then run) is ``python -m demo``: it needs the exporter,
which this runtime never imports.
"""
# NB: no `from __future__ import annotations` here: argparse_dataclass reads the field types at runtime.
import argparse
import contextlib
import sys
from dataclasses import field
from pathlib import Path
from typing import List, Optional

from argparse_dataclass import ArgumentParser, dataclass

from configs.limits import LIMITS
from configs.schema import GUIDERS, SV3DConfig

from . import interrupts
from .backends import engine_for
from .backends.mindspore_dumps import dumps_into
from .backends.onednn import cap_onednn_isa
from .command import ExitRule, run_command
from .errors import SV3DError
from .manifest import Manifest
from .mesh.cli import make_mesh
from .mesh.deps import check_all as check_mesh_dependencies
from .options import GenerationOptions, OptionNames, resolve_options
from .orbits import ORBIT_PRESETS
from .outputs import (DEFAULT_FPS, check_writable, new_dirs, remove_if_empty, require_video_support, result_name,
                      write_result)
from .pipeline import SV3DPipeline
from .preprocess import BACKGROUND_MODES, prepare_image
from .run_options import BACKEND_CHOICES, DEVICES, MEMORY_MODES, PRECISIONS, RunOptions

PROG = "python -m runtime"
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, interrupts.EXIT_INTERRUPTED
RANDOM_WEIGHTS_BANNER = ("*** DEMO: the model weights are RANDOM; the videos show noise-like frames, not the object. "
                         "Export real SV3D weights with `python -m export` for real results. ***")
DEMO_MOVED = "--demo moved: run `python -m demo` (it needs the export extra: pip install -e '.[export]')"
FLAGS = OptionNames(steps="--steps", seed="--seed", guider="--guider", min_scale="--min-scale",
                    max_scale="--max-scale", elevation="--elevation", azimuths="--azimuths", backend="--backend",
                    device="--device", device_id="--device-id", threads="--threads", precision="--precision",
                    cache_dir="--cache-dir", memory="--memory", verify_checksums="--skip-checksums")
# The help shows the official SV3D values (the schema's defaults, which the bundled configs use); an export's own
# config supplies the defaults at run time.
OFFICIAL = SV3DConfig()


@dataclass
class Options:
    images: List[str] = field(default_factory=list, metadata=dict(
        args=["images"], nargs="*", type=str, metavar="IMAGE",
        help="input image(s): RGBA (alpha marks the object) or RGB (background removed per --remove-background)"))
    graphs: Optional[str] = field(default=None, metadata=dict(
        metavar="DIR", help="export folder written by `python -m export` (holds manifest.json)"))
    output: str = field(default="outputs", metadata=dict(
        args=["-o", "--output"], metavar="DIR",
        help="output folder; each image gets <DIR>/<stem> (or <stem>_1, ... : never overwritten)"))
    backend: str = field(default="auto", metadata=dict(
        choices=list(BACKEND_CHOICES),
        help="engine: auto = the first available whose graphs the export has: cpu openvino, onnxruntime, "
             "mslite, mindspore; cuda onnxruntime first; ascend mslite first"))
    device: str = field(default="cpu", metadata=dict(choices=list(DEVICES), help="device kind"))
    device_id: int = field(default=0, metadata=dict(help="device index (cuda / ascend)"))
    threads: int = field(default=0, metadata=dict(
        help="intra-op threads, at most the CPUs this process may use (0 = the engine's default; the mindspore "
             "backend cannot set them and refuses a value)"))
    precision: str = field(default="auto", metadata=dict(
        choices=list(PRECISIONS),
        help="UNet and decoder compute precision: f32 = as exported; bf16 = openvino on CPUs with AMX / "
             "AVX512_BF16; int8 = openvino's opt-in int8 UNet (python -m export.int8); other backends refuse "
             "both; auto = bf16 where openvino can, else as exported"))
    cache_dir: Optional[str] = field(default=None, metadata=dict(
        metavar="DIR", help="openvino only (other backends refuse it): compiled-model cache (default "
                            "~/.cache/sv3d-runtime/openvino or $SV3D_CACHE_DIR/openvino; '' = off)"))
    memory: str = field(default="auto", metadata=dict(
        choices=list(MEMORY_MODES),
        help="resident: the four graphs loaded once for all images; sequential: each graph loaded for its stage "
             "and released (peak = largest stage; reloads per image); auto: sequential when the graphs exceed "
             f"{100 * LIMITS.resident_ram_fraction:.0f}%% of RAM"))
    steps: Optional[int] = field(default=None, metadata=dict(
        help=f"sampling steps, 1..{LIMITS.max_steps} (default: the export's config, {OFFICIAL.sampler.num_steps} "
             f"officially)"))
    seed: Optional[int] = field(default=None, metadata=dict(
        help=f"noise seed (default: the export's config, {OFFICIAL.seed} officially)"))
    guider: Optional[str] = field(default=None, metadata=dict(
        choices=list(GUIDERS), help=f"per-frame guidance shape (default: the export's config, "
                                    f"{OFFICIAL.guider.kind} officially)"))
    min_scale: Optional[float] = field(default=None, metadata=dict(
        help=f"guidance scale at the ends, 0..{LIMITS.max_guidance_scale:g} and <= --max-scale (default: the "
             f"export's config, {OFFICIAL.guider.min_scale:g} officially)"))
    max_scale: Optional[float] = field(default=None, metadata=dict(
        help=f"guidance scale peak, 0..{LIMITS.max_guidance_scale:g} (default: the export's config, "
             f"{OFFICIAL.guider.max_scale:g} officially)"))
    elevation: Optional[List[float]] = field(default=None, metadata=dict(
        nargs="+", type=float, metavar="DEG",
        help=f"sv3d_p: camera elevation in degrees, one value or one per frame, in "
             f"[{OFFICIAL.conditioner.elevation_range_deg[0]:g}, {OFFICIAL.conditioner.elevation_range_deg[1]:g}] "
             f"(default: the export's config, {OFFICIAL.conditioner.default_elevation_deg:g} officially)"))
    azimuths: Optional[List[float]] = field(default=None, metadata=dict(
        nargs="+", type=float, metavar="DEG",
        help="sv3d_p: one azimuth per frame in degrees (default: evenly spaced, ending at 0 = the input view)"))
    orbit: Optional[str] = field(default=None, metadata=dict(
        choices=sorted(ORBIT_PRESETS),
        help=f"sv3d_p orbit preset: default (constant elevation; the default) or dynamic (the elevation swings +- "
             f"the export's conditioner.dynamic_elevation_amplitude_deg, "
             f"{OFFICIAL.conditioner.dynamic_elevation_amplitude_deg:g} deg in the bundled configs)"))
    remove_background: str = field(default="auto", metadata=dict(
        choices=list(BACKGROUND_MODES),
        help="auto: rembg for images without alpha; rembg: always; none: use the whole image"))
    fps: int = field(default=DEFAULT_FPS, metadata=dict(help="frames per second of the mp4 and gif"))
    skip_checksums: bool = field(default=False, metadata=dict(
        help="do not hash the graph files against the manifest (sizes are still checked)"))
    quiet: bool = field(default=False, metadata=dict(help="no progress bar and no timing summary"))
    mesh: bool = field(default=False, metadata=dict(
        help="after each video, reconstruct a vertex-coloured mesh from its frames into <result>/mesh "
             "(mesh.glb, mesh.obj, preview.png; python -m runtime.mesh with its defaults; needs "
             "requirements-mesh.txt)"))
    demo: bool = field(default=False, metadata=dict(help=argparse.SUPPRESS))     # moved: DEMO_MOVED


def build_parser() -> ArgumentParser:
    return ArgumentParser(Options, prog=PROG, description="Generate an orbit video of an object with SV3D "
                                                          "(sv3d_u / sv3d_p) from exported graphs.")


# ----------------------------------------------------------------------------------------------------------------


def _say(opts: Options, *msg) -> None:
    if not opts.quiet:
        print(*msg, file=sys.stderr, flush=True)


def check_options(opts: Options) -> RunOptions:
    """The options that do not depend on the export (steps, seed, guidance and camera: :func:`generation_options`);
    returns the engine flags as one RunOptions. The service (runtime/serve) checks each job's form with it too."""
    engine = check_bounds(opts)
    if opts.graphs is None:
        raise SV3DError("no export given", expected="--graphs DIR", got="none", hint="the demo is python -m demo")
    if not opts.images:
        raise SV3DError("no input image given", expected="one or more image paths", got="none")
    return engine


def check_bounds(opts: Options) -> RunOptions:
    """The sizes configs/limits.py bounds (--fps, the image count) and the engine flags (--threads, --device-id,
    ...: checked by RunOptions, named as the flags), which it returns."""
    if not 1 <= opts.fps <= LIMITS.max_fps:
        raise SV3DError("invalid --fps", expected=f"an integer in [1, {LIMITS.max_fps}]", got=opts.fps,
                        hint="the bounds are configs/limits.py")
    for name, value in (("--graphs", opts.graphs), ("-o/--output", opts.output)):
        if value == "":                               # Path("") is the working directory
            raise SV3DError(f"invalid {name}", expected="a folder path", got="''")
    if len(opts.images) > LIMITS.max_images:
        raise SV3DError("too many input images", expected=f"at most {LIMITS.max_images} per command",
                        got=len(opts.images))
    return run_options(opts)


def run_options(opts: Options) -> RunOptions:
    """The engine flags as one RunOptions, checked once, its errors naming the flags."""
    return RunOptions(backend=opts.backend, device=opts.device, device_id=opts.device_id, threads=opts.threads,
                      precision=opts.precision, cache_dir=opts.cache_dir, memory=opts.memory,
                      verify_checksums=not opts.skip_checksums, names=FLAGS)


def _warn_small_input(opts: Options, path: Path, pre, resolution: int) -> None:
    side = int(pre.side_len)
    if side < LIMITS.small_input_fraction * resolution:
        w, h = pre.bbox_xywh[2:]
        print(f"warning: {path}: the object ({w}x{h} px, on a {side} px canvas) is upscaled {resolution / side:.0f}x "
              f"to {resolution} px; expect a blurry result (use an image at least "
              f"{int(LIMITS.small_input_fraction * resolution)} px on a side)", file=sys.stderr, flush=True)


def run(opts: Options, random_weights: bool = False) -> int:
    """Every image of ``opts`` through the export ``opts.graphs`` (module docstring). ``random_weights``: the export
    holds random weights (python -m demo): a banner before and after, and each info.json says so."""
    engine_options = check_options(opts)
    made = new_dirs(Path(opts.output))
    stack = contextlib.ExitStack()                  # what _generate_all sets up for the engine (MindSpore dumps)
    try:
        if random_weights:
            print(RANDOM_WEIGHTS_BANNER, file=sys.stderr, flush=True)
        rc = _generate_all(opts, engine_options, Path(opts.graphs), opts.images, stack, random_weights)
        if random_weights:
            print(RANDOM_WEIGHTS_BANNER, file=sys.stderr, flush=True)
        return rc
    finally:
        stack.close()
        remove_if_empty(made)


def _generate_all(opts: Options, engine_options: RunOptions, graphs: Path, images: List[str],
                  stack: contextlib.ExitStack, random_weights: bool) -> int:
    # 1. everything that can fail cheaply, before loading graphs: export contract, options, inputs, output folder
    manifest = Manifest.load(graphs)
    options = generation_options(manifest, opts)
    prepared = [(Path(p), prepare_image(manifest.runtime, manifest.shapes.resolution, p,
                                        remove_background=opts.remove_background)) for p in images]
    for path, pre in prepared:
        _warn_small_input(opts, path, pre, manifest.shapes.resolution)
    require_video_support()
    if opts.mesh:
        check_mesh_dependencies()                 # fail before the graphs load, not after the first video
    output = check_writable(opts.output)

    # 2. graphs, once
    _say(opts, f"loading {manifest.variant} graphs from {graphs} ...")
    with interrupts.held():               # an interrupted `import mindspore` crashes Python at exit (exit 134)
        engine = engine_for(manifest, engine_options)     # refuses the options this backend cannot honour
        if engine.name == "mindspore":
            stack.enter_context(dumps_into())
            cap_onednn_isa()              # before MindSpore loads (runtime/backends/onednn.py)
            interrupts.preload("mindspore")
    pipe = SV3DPipeline.from_engine(engine)
    interrupts.reassert()                         # MindSpore replaces the SIGINT handler when it loads graphs
    _say(opts, f"backend {pipe.backend} on {opts.device}:{opts.device_id}, graphs loaded in "
               f"{pipe.load_seconds:.2f} s; memory {pipe.memory}"
               + ("" if pipe.memory == "resident" else " (graphs load per stage)") + "; precision "
               + ", ".join(f"{k} {v}" for k, v in pipe.precisions.items()))

    # 3. one image at a time
    summaries = []
    for path, pre in prepared:
        bar = _progress_bar(opts, options.num_steps, path.name)
        try:
            result = pipe.generate(pre, options=options, callback=lambda info: _on_step(bar))
        finally:
            if bar is not None:
                bar.close()
        info = {"input": str(path), "graphs": str(graphs), "variant": manifest.variant, "backend": pipe.backend,
                "device": f"{opts.device}:{opts.device_id}", "precision": pipe.precisions,
                "memory": pipe.memory, "demo_random_weights": random_weights}
        interrupts.checkpoint()
        folder = write_result(result, output, result_name(path.stem), fps=opts.fps, info=info)
        print(f"{path} -> {folder}", flush=True)
        if opts.mesh:
            print(f"{path} mesh -> {make_mesh(folder, say=lambda *m: _say(opts, *m))}", flush=True)
        summaries.append((path.name, result.timings))
    if not opts.quiet:
        _say(opts, f"\nlatency (graphs loaded once in {pipe.load_seconds:.2f} s; backend {pipe.backend}, "
                   f"device {opts.device}:{opts.device_id}; precision "
                   + ", ".join(f"{k} {v}" for k, v in pipe.precisions.items()) + ")")
        for name, timings in summaries:
            _say(opts, f"\n[{name}]\n{timings.summary()}")
    return EXIT_OK


def generation_options(manifest: Manifest, opts: Options) -> GenerationOptions:
    """--steps, --seed, --guider, the scales and the camera flags checked against this export (runtime.options),
    named as the flags in the messages. The service (runtime/serve) resolves each job's form with it too."""
    elevation = None if opts.elevation is None else (opts.elevation[0] if len(opts.elevation) == 1
                                                     else opts.elevation)
    return resolve_options(manifest.runtime, manifest.shapes.num_frames, num_steps=opts.steps, seed=opts.seed,
                           guider=opts.guider, min_scale=opts.min_scale, max_scale=opts.max_scale,
                           elevation=elevation, azimuths=opts.azimuths, preset=opts.orbit, names=FLAGS)


def _on_step(bar) -> None:
    interrupts.checkpoint()
    if bar is not None:
        bar.update(1)


def _progress_bar(opts: Options, total: int, name: str):
    if opts.quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=name, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)


INTERRUPTED_MESSAGE = "interrupted: nothing partial was written (results completed before it are kept)"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.demo:
        parser.error(DEMO_MOVED)                  # exits 2, as every usage error
    return run_command(lambda: run(opts), interrupted=INTERRUPTED_MESSAGE, rules=[ExitRule(SV3DError, EXIT_ERROR)])


__all__ = ["FLAGS", "Options", "build_parser", "check_bounds", "check_options", "generation_options", "main", "run",
           "run_options"]
