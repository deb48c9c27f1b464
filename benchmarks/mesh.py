"""``python -m benchmarks.mesh``: what the mesh step costs, and how close it gets to shapes whose truth is known.

1. Speed and memory: a 21-frame orbit of the sphere-and-box union at 576 px (benchmarks/mesh_scenes.py), through
   runtime.mesh.reconstruct to a 50k-face vertex-coloured mesh (the defaults: 160 voxels, no refinement; and with
   the tests' 8 colour-consistency passes), then runtime.mesh.write (glb, obj, preview).
   Each repeat runs in a fresh child process, so its peak resident memory (ru_maxrss) is its own: imports, the
   frames, and every stage. Seconds per stage: median over the repeats (a cold first run is counted like any other:
   the command line always runs cold).
2. Accuracy per test shape, at the test settings (tests/test_mesh.py: 128 px, 96 voxels, 20k faces, 8 refinement
   passes) and for the union at 576 px: mean |SDF| of the vertices, coverage, region colours, seconds, peak
   memory -- each in a child.

Results as JSON (``--json``) and a markdown table on stdout, with the host, the load average before and after,
and the library versions.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np

from runtime.peak_rss import peak_rss_bytes
from .mesh_scenes import SHAPES, TEST_FACES, TEST_REFINE, TEST_RESOLUTION, TEST_SIZE, render_orbit, score
from .peak import machine_info, versions
from .stats import summarize

STAGES = ("masks", "carve", "refine", "surface", "colour", "write")
LIBRARIES = ("numpy", "scipy", "scikit-image", "trimesh", "fast-simplification", "Pillow")


def child(args) -> dict:
    """One measured run (in a child process): reconstruct + write, seconds per stage, peak RSS, score."""
    from runtime.mesh.cameras import orbit_cameras
    from runtime.mesh.reconstruct import reconstruct
    from runtime.mesh.write import write_mesh
    from runtime.orbits import make_orbit

    data = np.load(args.child)
    frames, el, az = data["frames"], data["elevations"], data["azimuths"]
    rss_before = peak_rss_bytes()
    cams = orbit_cameras(make_orbit(len(az), elevation=el.tolist(), azimuths=az.tolist()), frames.shape[1],
                         frames.shape[2])
    rec = reconstruct(frames, cams, resolution=args.resolution, faces=args.faces, refine_passes=args.refine)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_mesh(rec, tmp, "mesh")
    rec.seconds["write"] = time.perf_counter() - t0
    out = {"seconds": rec.seconds, "faces": int(len(rec.faces)), "vertices": int(len(rec.vertices)),
           "rss_after_load_bytes": rss_before,
           "peak_rss_bytes": peak_rss_bytes()}
    out.update(score(SHAPES[args.shape], rec.vertices, rec.colours))
    return out


def run_child(frames_file: Path, shape: str, resolution: int, faces: int, refine: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                       os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.mesh", "--child", str(frames_file), "--shape", shape,
                           "--resolution", str(resolution), "--faces", str(faces), "--refine", str(refine)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(shape: str, size: int, resolution: int, faces: int, refine: int, repeats: int, work: Path) -> dict:
    path = work / f"{shape}_{size}.npz"
    if not path.exists():
        frames, el, az = render_orbit(SHAPES[shape], size)
        np.savez(path, frames=frames, elevations=el, azimuths=az)
    runs = [run_child(path, shape, resolution, faces, refine) for _ in range(repeats)]
    seconds = {s: summarize([r["seconds"].get(s, 0.0) for r in runs]) for s in STAGES}
    totals = [sum(r["seconds"].get(s, 0.0) for s in STAGES if s != "write") for r in runs]
    return {"shape": shape, "size": size, "resolution": resolution, "faces_target": faces, "refine": refine,
            "repeats": repeats,
            "seconds": seconds, "reconstruct_total": summarize(totals),
            "with_write_total": summarize([t + r["seconds"]["write"] for t, r in zip(totals, runs)]),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            "rss_after_load_bytes": max(r["rss_after_load_bytes"] for r in runs),
            **{k: runs[0][k] for k in ("faces", "vertices", "sdf", "coverage", "colour_median_error",
                                       "colour_recovered")}}


def to_markdown(records: List[dict], host: dict) -> str:
    lines = [f"host: {host['machine']['cpu_model']}, {host['machine']['cpus_usable']} CPUs; load average "
             f"before {host['load_before']}, after {host['load_after']}; "
             + ", ".join(f"{k} {v}" for k, v in host["versions"].items() if v), "",
             "| shape | frames | voxels | refine | faces | masks | carve | refine | surface | colour | reconstruct | "
             "+ write (glb, obj, preview) | peak RSS | mean abs SDF | coverage (3 %) | colours within 40 levels |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        s = r["seconds"]
        lines.append(
            f"| {r['shape']} | 21 x {r['size']} px | {r['resolution']}^3 | {r['refine']} | {r['faces']} | "
            + " | ".join(f"{s[k]['median_s']:.2f} s" for k in ("masks", "carve", "refine", "surface", "colour"))
            + f" | **{r['reconstruct_total']['median_s']:.2f} s** | {r['with_write_total']['median_s']:.2f} s | "
              f"{r['peak_rss_bytes'] / 2 ** 20:.0f} MiB | {100 * r['sdf']:.2f} % | {100 * r['coverage']:.1f} % | "
            + " / ".join(f"{100 * c:.0f} %" for c in r["colour_recovered"]) + " |")
    lines.append(f"\nseconds: median over fresh processes ({records[0]['repeats']} for the 576 px rows, 1 for the "
                 f"test-size rows); peak RSS: the largest, imports and frames included "
                 f"({records[0]['rss_after_load_bytes'] / 2 ** 20:.0f} MiB before the first stage).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mesh", description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=576, help="frame size of the speed benchmark")
    ap.add_argument("--resolution", type=int, default=None, help="voxels a side (default: the runtime's)")
    ap.add_argument("--faces", type=int, default=None, help="face target (default: the runtime's, 50000)")
    ap.add_argument("--refine", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", nargs="*", default=None, help="also score these shapes at the test settings "
                                                               "(default: all)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="union", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from runtime.mesh.reconstruct import DEFAULT_FACES, DEFAULT_RESOLUTION

    args.resolution = args.resolution or DEFAULT_RESOLUTION
    args.faces = args.faces or DEFAULT_FACES
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    host = {"machine": machine_info(), "load_before": [round(x, 2) for x in os.getloadavg()],
            "versions": versions(LIBRARIES)}
    shapes = sorted(SHAPES) if args.shapes is None else args.shapes
    with tempfile.TemporaryDirectory() as tmp:
        records = [measure("union", args.size, args.resolution, args.faces, refine, args.repeats, Path(tmp))
                   for refine in (0, TEST_REFINE)]
        records += [measure(name, TEST_SIZE, TEST_RESOLUTION, TEST_FACES, TEST_REFINE, 1, Path(tmp))
                    for name in shapes]
    host["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(to_markdown(records, host))
    if args.json is not None:
        args.json.write_text(json.dumps({"host": host, "records": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
