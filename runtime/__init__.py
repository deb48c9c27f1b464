"""SV3D runtime: exported graphs + numpy sampling. Importing it needs only numpy; each backend imports its engine
lazily in its own module (runtime/backends/), Pillow/imageio are imported by the functions that write or read
images.

    from runtime import SV3DPipeline
    pipe = SV3DPipeline.from_export("exports/sv3d_p_576", backend="auto", device="cpu")
    result = pipe.generate("chair.png", seed=23, orbit=pipe.make_orbit(elevation=20.0))
    runtime.write_result(result, "outputs", "chair")

Command line: ``python -m runtime --graphs DIR image.png`` (``python -m runtime --help``).
"""
from .backends import (BACKEND_CHOICES, BACKENDS, DEVICES, BackendError, DeviceSpec, RunOptions, load_graph,
                       load_graphs, resolve_backend)
from .conditioning import Conditioning
from .errors import GraphError, InputImageError, OrbitError, OutputError, SV3DError
from .manifest import Manifest
from .options import GenerationOptions, resolve_options
from .orbits import ORBIT_PRESETS, Orbit, build_orbit, default_orbit, dynamic_orbit, make_orbit, preset_orbit
from .outputs import contact_sheet, write_gif, write_mp4, write_result
from .pipeline import Noise, Result, StepTiming, SV3DPipeline, Timings, postprocess
from .preprocess import PreprocessedImage, load_image, prepare_image
from .sample_data import sample_image_path
from .specs import GRAPH_NAMES, ExportShapes, GraphSpec, TensorSpec

__all__ = [
    "SV3DPipeline", "Result", "Noise", "Timings", "StepTiming", "postprocess", "prepare_image", "build_orbit",
    "GenerationOptions", "resolve_options", "Conditioning",
    "BACKENDS", "BACKEND_CHOICES", "DEVICES", "DeviceSpec", "RunOptions", "load_graph", "load_graphs",
    "resolve_backend",
    "SV3DError", "GraphError", "InputImageError", "OrbitError", "OutputError", "BackendError",
    "Manifest", "GraphSpec", "TensorSpec", "ExportShapes", "GRAPH_NAMES",
    "Orbit", "ORBIT_PRESETS", "default_orbit", "dynamic_orbit", "make_orbit", "preset_orbit",
    "PreprocessedImage", "load_image", "sample_image_path",
    "write_result", "write_mp4", "write_gif", "contact_sheet",
]
