"""An opt-in int8 UNet for OpenVINO on AMX-INT8, calibrated on the model's own sampling trajectory.

    python -m export.int8 --graphs DIR [--images A.png B.png ...] [--steps 4] [--mode w8a8|hybrid] [--seed 0]
                          [--twin TWIN_DIR]

adds ``openvino_int8/unet.xml`` (+ ``.bin``) to an existing export and records it in the manifest (format
``openvino_int8``, form ``nncf-<mode>``, the calibration under ``parity.int8``); ``python -m runtime --backend
openvino --precision int8`` then runs it, with the other graphs as in bf16.

Calibration data: the UNet inputs of real runs. Each image goes through the export's own pipeline (OpenVINO, f32
UNet) for ``steps`` Euler steps of the EDM schedule; every UNet call's feeds (x, timesteps, context, y), from
sigma_max down to sigma_min, is one calibration sample. With real weights that is what the activations look like;
random inputs are not (they miss the conditioning's structure and the noise levels' ranges).

Modes (NNCF post-training quantization of the OpenVINO model read from the export's ONNX):
  w8a8    every MatMul and Convolution with int8 weights (per channel) and int8 activations (per tensor),
          ``ModelType.TRANSFORMER`` (softmax, norms and attention's own matmuls stay in floating point);
  hybrid  the scheme of NNCF's diffusion notebooks: int8 weights everywhere, int8 activations only for the
          convolutions; the linear layers' activations stay bf16 (smaller error, less speed).

The result's error against the f32 graph on the calibration samples is recorded; the end-to-end error against the
official code is the tests' business (tests/test_int8.py) and benchmarks/README.md's.

``--twin TWIN_DIR``: where the full size cannot be calibrated (NNCF's statistics run needs every quantized
activation at once: 55.5 GB at 576 px), calibrate an export of the same checkpoint at a lower resolution and carry
its quantization over to this export's UNet (export/int8_twin.py). The calibration runs and the error check are
then the twin's, and the manifest records the twin's resolution.
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .onnx_fuse import GROUPNORM_PREFIX
from runtime.errors import GraphError
from runtime.manifest import INT8_FORMAT, INT8_GRAPHS, GraphEntry, GraphFile, Manifest, sha256_file
from runtime.sample_data import sample_image_path
from runtime.specs import GraphSpec

(INT8_GRAPH,) = INT8_GRAPHS
MODES = ("w8a8", "hybrid")
DEFAULT_STEPS = 4
SAMPLE_IMAGE = sample_image_path()


class _Recorder:
    """A UNet runner that keeps a copy of every feed it is given."""

    def __init__(self, runner, feeds: List[Dict[str, np.ndarray]]):
        self.runner, self.feeds, self.spec = runner, feeds, runner.spec

    def run(self, feeds):
        self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.runner.run(feeds)


class ZeroDecoder:
    """Stands in for the VAE decoder where only the sampling loop matters (calibration here, the loop profile of
    benchmarks/openvino_profile.py): zeros of its output shapes."""

    def __init__(self, spec: GraphSpec):
        self.spec = spec

    def run(self, feeds):
        return {t.name: np.zeros(t.shape, np.float32) for t in self.spec.outputs}


def calibration_feeds(folder, images: Sequence, steps: int = DEFAULT_STEPS, seed: int = 0,
                      threads: int = 0, precision: str = "f32") -> List[Dict[str, np.ndarray]]:
    """The UNet feeds of `steps`-step runs of the export's pipeline on each image (OpenVINO, UNet at `precision`:
    f32 follows the exact trajectory, bf16 a close one at half the time)."""
    from runtime import SV3DPipeline

    # no compiled-model cache: these f32 (or twin) compiles are made once and would fill the user's cache
    pipe = SV3DPipeline.from_export(folder, backend="openvino", precision=precision, threads=threads, cache_dir="")
    feeds: List[Dict[str, np.ndarray]] = []
    pipe.runners["unet"] = _Recorder(pipe.runners["unet"], feeds)
    pipe.runners["vae_decoder"] = ZeroDecoder(pipe.runners["vae_decoder"].spec)
    for i, image in enumerate(images):
        pipe.generate(image, num_steps=steps, seed=seed + i)
    return feeds


def quantize(onnx_path: str, feeds: List[Dict[str, np.ndarray]], mode: str = "w8a8", bias_correction: bool = True,
             keep_float: Sequence[str] = ()):
    """The NNCF-quantized OpenVINO model of the ONNX graph at `onnx_path`, calibrated on `feeds`. bias_correction:
    NNCF's fast bias correction (per-layer re-runs; off only to time the int8 graph where accuracy is moot).
    keep_float: operator names (after int8_twin.canonical_names) left in floating point."""
    import nncf
    import openvino as ov

    if mode not in MODES:
        raise ValueError(f"int8 mode must be one of {MODES}, got {mode!r}")
    from .int8_twin import canonical_names

    model = canonical_names(ov.Core().read_model(onnx_path))    # stable node names: a twin's carry over by them
    common = dict(model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.MIXED,
                  subset_size=len(feeds),
                  advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=not bias_correction))
    dataset = nncf.Dataset(feeds)
    # a fused GroupNorm's mean and variance are MatMuls against 1/n columns: statistics, not weights, kept in
    # floating point (in int8 they cost the norm its precision; their columns are also resolution-dependent)
    norms = [rf"{re.escape(GROUPNORM_PREFIX)}\d+/.*"] + [f"^{re.escape(n)}$" for n in keep_float]
    if mode == "w8a8":
        return nncf.quantize(model, dataset, ignored_scope=nncf.IgnoredScope(patterns=norms, validate=False),
                             **common)
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM, ignored_scope=nncf.IgnoredScope(
        types=["Convolution"], patterns=norms, validate=False))
    return nncf.quantize(compressed, dataset, ignored_scope=nncf.IgnoredScope(types=["MatMul"], patterns=norms,
                                                                              validate=False), **common)


def int8_error(onnx_path: str, model, feeds: List[Dict[str, np.ndarray]], output: str, threads: int = 0
               ) -> List[float]:
    """Relative L2 of the int8 model against the f32 graph, per sample, each compiled as the runtime compiles it
    (openvino_backend.compile_properties: the int8 model runs bf16 between its FakeQuantize nodes)."""
    from runtime.backends.openvino_backend import compile_properties, core
    from runtime.run_options import RunOptions

    def props(precision):
        return compile_properties(INT8_GRAPH, RunOptions(backend="openvino", precision=precision, threads=threads,
                                                          cache_dir=""))   # a one-off check: nothing cached

    ref = core().compile_model(onnx_path, "CPU", props("f32"))
    q = core().compile_model(model, "CPU", props("int8"))
    errors = []
    for f in feeds:
        a = np.asarray(ref(f)[output], np.float64)
        b = np.asarray(q(f)[output], np.float64)
        errors.append(float(np.linalg.norm(b - a) / np.linalg.norm(a)))
    del ref, q                                  # both compiled UNets' weights, before the caller goes on
    gc.collect()
    return errors


# what must be equal for a twin's quantization to carry over: the identity fields that decide the graph's
# operators and weights (export/reuse.py), all but its shapes and its parity gate
TWIN_IDENTITY = ("exporter_sha256", "tools", "config_sha256", "weights_sha256", "num_frames", "attention_chunk",
                 "form", "onnx_source")


def check_twin(manifest: Manifest, twin: Manifest) -> None:
    """Raise GraphError unless `twin` holds the same ONNX UNet as `manifest` (other shapes allowed)."""
    def fields(m: Manifest):
        ident = m.parity.get("graphs", {}).get(INT8_GRAPH, {}).get("formats", {}).get("onnx", {}).get("identity")
        if ident is None:
            raise GraphError(f"{m.root}: the manifest records no identity for its ONNX {INT8_GRAPH}, so it "
                             "cannot be checked as a twin; export it again with this version")
        # + the UNet batch: it changes the graph (MindSpore traces batch-dependent attention reshapes), the
        # resolution does not
        return {**{k: ident.get(k) for k in TWIN_IDENTITY}, "unet_batch": m.shapes.unet_batch}

    mine, theirs = fields(manifest), fields(twin)
    differ = [k for k in mine if mine[k] != theirs[k]]
    if differ:
        raise GraphError(f"--twin {twin.root} is not an export of the same UNet as {manifest.root}: "
                         + "; ".join(f"{k} {theirs[k]!r} there, {mine[k]!r} here" for k in differ)
                         + " (export the twin with the same options, only a lower --resolution)")


def add_int8(folder, images: Sequence = (), steps: int = DEFAULT_STEPS, mode: str = "w8a8", seed: int = 0,
             threads: int = 0, check: bool = True, capture_precision: str = "f32", bias_correction: bool = True,
             twin=None, progress=print) -> Manifest:
    """Quantize the export's UNet and add it to the export (written aside, then moved in; manifest last).
    twin: an export of the same UNet at another resolution to calibrate instead (module docstring)."""
    import nncf
    import openvino as ov

    folder = Path(folder)
    manifest = Manifest.load(folder)
    source = manifest.entry("onnx", INT8_GRAPH)
    calibrated = manifest
    if twin is not None:
        calibrated = Manifest.load(twin)
        check_twin(manifest, calibrated)
    calib_source = calibrated.entry("onnx", INT8_GRAPH)
    keep_float: List[str] = []
    if twin is not None:                        # before the calibration: a twin that cannot carry over fails now
        from .int8_twin import canonical_names, shape_dependent

        core = ov.Core()
        keep_float = shape_dependent(
            canonical_names(core.read_model(str(calibrated.path_of(calib_source.model_file)))),
            canonical_names(core.read_model(str(manifest.path_of(source.model_file)))))
        gc.collect()
        progress(f"twin at {calibrated.shapes.resolution} px: the same UNet; {len(keep_float)} operator(s) with "
                 "resolution-dependent constants stay in floating point")
    images = list(images) or [str(SAMPLE_IMAGE)]
    t0 = time.perf_counter()
    feeds = calibration_feeds(calibrated.root, images, steps, seed, threads, capture_precision)
    capture_s = time.perf_counter() - t0
    progress(f"calibration: {len(feeds)} UNet calls from {len(images)} image(s) x {steps} steps at "
             f"{calibrated.shapes.resolution} px ({capture_s:.1f} s)")
    onnx_path = str(calibrated.path_of(calib_source.model_file))
    t0 = time.perf_counter()
    model = quantize(onnx_path, feeds, mode, bias_correction, keep_float)
    quantize_s = time.perf_counter() - t0
    progress(f"quantized ({mode}) in {quantize_s:.1f} s")
    errors = int8_error(onnx_path, model, feeds, source.spec.output_names[0], threads) if check else []
    if errors:
        progress(f"int8 UNet against f32 on the calibration samples: rel L2 median {np.median(errors):.3g}, "
                 f"max {max(errors):.3g}")
    carried = None
    gc.collect()                                # the calibration pipeline's and NNCF's models, before the next UNet
    if twin is not None:
        from .int8_twin import carry_quantization
        t0 = time.perf_counter()
        model, rerouted = carry_quantization(model, ov.Core().read_model(str(manifest.path_of(source.model_file))))
        carried = {"resolution": calibrated.shapes.resolution, "unet_batch": calibrated.shapes.unet_batch,
                   "kept_float": keep_float,
                   "folder": str(calibrated.root), "rerouted_inputs": rerouted,
                   "carry_s": time.perf_counter() - t0}
        progress(f"carried to the {manifest.shapes.resolution} px UNet: {rerouted} inputs re-routed "
                 f"({carried['carry_s']:.1f} s)")
    staging = folder / f".{INT8_FORMAT}.partial"
    final = folder / INT8_FORMAT
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        ov.save_model(model, str(staging / f"{INT8_GRAPH}.xml"), compress_to_fp16=False)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = tuple(GraphFile(f"{INT8_FORMAT}/{p.name}", sha256_file(p), p.stat().st_size)
                  for p in sorted(final.iterdir()))
    entry = GraphEntry(source.spec, INT8_FORMAT, f"{INT8_FORMAT}/{INT8_GRAPH}.xml", files, form=f"nncf-{mode}")
    graphs = {**manifest.graphs, INT8_FORMAT: {INT8_GRAPH: entry}}
    parity = {**manifest.parity, "int8": {
        "graph": INT8_GRAPH, "mode": mode, "images": [Path(i).name for i in images], "steps": steps, "seed": seed,
        "capture_precision": capture_precision, "bias_correction": bias_correction,
        "samples": len(feeds), "capture_s": capture_s, "quantize_s": quantize_s, "twin": carried,
        "rel_l2_vs_f32": {"median": float(np.median(errors)), "max": max(errors)} if errors else None}}
    tools = {**manifest.tools, "nncf": nncf.__version__, "openvino": ov.get_version()}
    replace(manifest, graphs=graphs, parity=parity, tools=tools).save(folder)      # atomic, last
    return Manifest.load(folder)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.int8", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", required=True, help="export folder (manifest.json) with the ONNX UNet")
    p.add_argument("--images", nargs="*", default=[], help=f"calibration images (default: {SAMPLE_IMAGE.name})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Euler steps per calibration run")
    p.add_argument("--mode", choices=MODES, default="w8a8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--capture-precision", choices=("f32", "bf16"), default="f32",
                   help="the UNet's precision while the calibration runs are recorded")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="skip NNCF's bias correction (faster; for timing the int8 graph, not for use)")
    p.add_argument("--no-check", action="store_true", help="skip the error measurement against the f32 graph")
    p.add_argument("--twin", default=None,
                   help="an export of the same UNet at a lower resolution: calibrate it and carry its quantization "
                        "over (for sizes whose calibration does not fit in memory)")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    missing = [i for i in a.images if not Path(i).is_file()]
    if missing:
        p.error(f"calibration image(s) not found: {missing}")
    from configs.errors import SV3DError
    from runtime.command import ExitRule, run_command

    def body() -> int:
        add_int8(a.graphs, a.images, a.steps, a.mode, a.seed, a.threads, check=not a.no_check,
                 capture_precision=a.capture_precision, bias_correction=not a.no_bias_correction, twin=a.twin)
        return 0

    return run_command(body, interrupted="interrupted: the export was left as it was (no int8 graph added)",
                       rules=[ExitRule(SV3DError, 1, "error: no int8 graph was added: {error}"),
                              ExitRule(ModuleNotFoundError, 2,
                                       "error: {error}; install the int8 extra: pip install -e .[int8]")])


if __name__ == "__main__":
    sys.exit(main())
