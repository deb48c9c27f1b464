"""``python -m runtime.mesh DIR [-o OUT]``: a textured (vertex-coloured) mesh from a result folder of
``python -m runtime`` (frames/NNN.png + info.json).

    python -m runtime.mesh outputs/chair                      # -> outputs/chair/mesh/{mesh.glb,mesh.obj,...}
    python -m runtime.mesh outputs/chair -o chair_mesh --faces 20000 --fov 30

Writes mesh.glb, mesh.obj, preview.png and mesh.json (runtime/mesh/write.py) into a new folder, staged and
renamed into place (an existing folder is never overwritten: OUT_1, OUT_2, ...). Errors print one line and exit 1
(usage errors 2); Ctrl-C exits 130 leaving nothing behind. Needs requirements-mesh.txt.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from configs.limits import LIMITS

from .. import interrupts
from ..command import ExitRule, run_command
from ..errors import SV3DError
from .cameras import DEFAULT_DISTANCE, DEFAULT_FOV_DEG
from .deps import check_all
from .reconstruct import DEFAULT_FACES, DEFAULT_RESOLUTION, reconstruct
from .surface import SMOOTH_ITERATIONS
from .views import MASK_MODES, object_masks, read_views
from .write import write_mesh

PROG = "python -m runtime.mesh"
EXIT_OK, EXIT_ERROR = 0, 1
DEFAULT_NAME = "mesh"
RANDOM_WEIGHTS_NOTE = ("*** these frames come from RANDOM weights (--demo): the mesh is the hull of noise, not an "
                       "object; it shows only that the mesh step runs. ***")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Reconstruct a vertex-coloured mesh (glb, obj, preview) "
                                                       "from the frames of a python -m runtime result.")
    p.add_argument("folder", metavar="DIR", help="a result folder of python -m runtime (frames/ + info.json)")
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help=f"folder to create (default DIR/{DEFAULT_NAME}; if it exists, OUT_1, OUT_2, ...)")
    p.add_argument("--elevation", type=float, nargs="+", metavar="DEG",
                   help="camera elevation(s), 1 or one per frame (default: info.json's orbit)")
    p.add_argument("--azimuths", type=float, nargs="+", metavar="DEG",
                   help="one azimuth per frame, counter-clockwise seen from above (default: info.json's orbit)")
    p.add_argument("--fov", type=float, default=None, metavar="DEG",
                   help=f"vertical field of view (default {DEFAULT_FOV_DEG:g})")
    p.add_argument("--distance", type=float, default=None,
                   help=f"camera distance from the object's centre (default {DEFAULT_DISTANCE:g})")
    p.add_argument("--masks", choices=list(MASK_MODES), default="white",
                   help="white: the object is what is not white background (SV3D's frames); rembg: rembg's mask")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                   help=f"voxels a side of the carved cube, {LIMITS.mesh_min_resolution}.."
                        f"{LIMITS.mesh_max_resolution} (default {DEFAULT_RESOLUTION})")
    p.add_argument("--faces", type=int, default=DEFAULT_FACES,
                   help=f"most triangles kept, {LIMITS.mesh_min_faces}..{LIMITS.mesh_max_faces} "
                        f"(default {DEFAULT_FACES})")
    p.add_argument("--smooth", type=int, default=SMOOTH_ITERATIONS,
                   help=f"Taubin smoothing passes, 0..{LIMITS.mesh_max_smooth} (default {SMOOTH_ITERATIONS})")
    p.add_argument("--refine", type=int, default=0, metavar="PASSES",
                   help="colour-consistency passes after the visual hull, 0..%d: carves concave creases between "
                        "differently coloured parts; off by default (0): untested on real SV3D frames, whose views "
                        "may disagree in shading (runtime/mesh/refine.py; 8 in the tests)" % LIMITS.mesh_max_refine)
    p.add_argument("--quiet", action="store_true", help="print only the folder written")
    return p


def check_mesh_options(resolution: int, faces: int, smooth: int, refine: int = 0) -> None:
    for name, value, low, high in (("--resolution", resolution, LIMITS.mesh_min_resolution,
                                    LIMITS.mesh_max_resolution),
                                   ("--faces", faces, LIMITS.mesh_min_faces, LIMITS.mesh_max_faces),
                                   ("--smooth", smooth, 0, LIMITS.mesh_max_smooth),
                                   ("--refine", refine, 0, LIMITS.mesh_max_refine)):
        if not low <= value <= high:
            raise SV3DError(f"invalid {name}", expected=f"an integer in [{low}, {high}]", got=value,
                            hint="the bounds are configs/limits.py")


def make_mesh(folder, output=None, *, elevation=None, azimuths=None, fov: Optional[float] = None,
              distance: Optional[float] = None, masks: str = "white", resolution: int = DEFAULT_RESOLUTION,
              faces: int = DEFAULT_FACES, smooth: int = SMOOTH_ITERATIONS, refine: int = 0,
              say=lambda *a: None) -> Path:
    """Reconstruct the result folder ``folder`` and publish the mesh folder; returns it. Raises SV3DError."""
    check_mesh_options(resolution, faces, smooth, refine)
    check_all()
    folder = Path(folder)
    out = folder / DEFAULT_NAME if output is None else Path(output)
    elevation = elevation[0] if isinstance(elevation, (list, tuple)) and len(elevation) == 1 else elevation
    views = read_views(folder, elevation=elevation, azimuths=azimuths, fov_deg=fov, distance=distance)
    info = _read_info(folder)
    random_weights = bool(info.get("demo_random_weights"))
    if random_weights:                            # printed even when quiet, like the demo's banner
        print(RANDOM_WEIGHTS_NOTE, file=sys.stderr, flush=True)
    say(f"{folder}: {views.frames.shape[0]} frames of {views.frames.shape[2]}x{views.frames.shape[1]}; cameras: "
        f"{views.source}")
    interrupts.checkpoint()
    rec = reconstruct(views.frames, views.cameras, masks=object_masks(views.frames, masks), resolution=resolution,
                      faces=faces, smooth=smooth, refine_passes=refine, checkpoint=interrupts.checkpoint)
    record = {"source": str(folder), "cameras": {
        "source": views.source, "elevations_deg": list(views.orbit.elevations_deg),
        "azimuths_deg": list(views.orbit.azimuths_deg), "fov_deg": DEFAULT_FOV_DEG if fov is None else fov,
        "distance": DEFAULT_DISTANCE if distance is None else distance},
        "masks": masks, "resolution": resolution, "refine_passes": refine, "demo_random_weights": random_weights}
    if random_weights:
        record["note"] = RANDOM_WEIGHTS_NOTE.strip("* ")
    interrupts.checkpoint()
    written = write_mesh(rec, out.parent, out.name, info=record)
    say(f"{len(rec.vertices)} vertices, {len(rec.faces)} faces; seconds: "
        + ", ".join(f"{k} {v:.2f}" for k, v in rec.seconds.items()))
    return written


def _read_info(folder: Path) -> dict:
    try:
        info = json.loads((folder / "info.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


INTERRUPTED_MESSAGE = "interrupted: nothing partial was written"


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def say(*msg):
        if not args.quiet:
            print(*msg, file=sys.stderr, flush=True)

    def body() -> int:
        folder = make_mesh(args.folder, args.output, elevation=args.elevation, azimuths=args.azimuths, fov=args.fov,
                           distance=args.distance, masks=args.masks, resolution=args.resolution, faces=args.faces,
                           smooth=args.smooth, refine=args.refine, say=say)
        print(folder, flush=True)
        return EXIT_OK

    return run_command(body, interrupted=INTERRUPTED_MESSAGE, rules=[ExitRule(SV3DError, EXIT_ERROR)])


__all__ = ["DEFAULT_NAME", "RANDOM_WEIGHTS_NOTE", "build_parser", "check_mesh_options", "main", "make_mesh"]
