"""Run runtime work in a fresh Python process and hand the arrays back through an .npz file.

MindSpore Lite's native engine cannot share a process with MindSpore (runtime/backends/mslite_native), and the test
session imports MindSpore for its exports; so the tests run Lite through this module:

    python -m tests.fresh_process graph EXPORT GRAPH BACKEND FEEDS.npz OUT.npz
    python -m tests.fresh_process generate EXPORT BACKEND INPUTS.npz OUT.npz STEPS[,STEPS...]

``graph`` runs one graph of an export on its feeds; ``generate`` runs the public API on an oracle case's inputs
(explicit noise) and saves latents_N, frames_N and frames_N_uint8 for each step count. Use :func:`run` from a test.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run(args: List[str], out: Path, timeout: float = 900) -> Dict[str, np.ndarray]:
    """Run this module with `args` in a fresh interpreter; its arrays, or AssertionError with its output."""
    done = subprocess.run([sys.executable, "-m", "tests.fresh_process", *map(str, args)], cwd=str(REPO),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"fresh process {args[0]} failed (exit {done.returncode}):\n{done.stdout[-4000:]}")
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def _graph(export: str, graph: str, backend: str, feeds: str, out: str) -> None:
    from runtime.backends import RunOptions, load_graph
    from runtime.manifest import Manifest

    with np.load(feeds) as f:
        arrays = {k: f[k] for k in f.files}
    runner = load_graph(Manifest.load(export), graph, backend=backend, options=RunOptions(precision="f32"))
    np.savez(out, **runner.run(arrays))


def _generate(export: str, backend: str, inputs: str, out: str, steps: str) -> None:
    from runtime import SV3DPipeline

    with np.load(inputs) as f:
        case = {k: f[k] for k in f.files}
    pipe = SV3DPipeline.from_export(export, backend=backend, precision="f32")
    noise = {"cond_noise": case["cond_noise"], "latent_noise": case["latent_noise"]}
    orbit = None
    if "elevations_deg" in case:
        orbit = pipe.make_orbit(elevation=case["elevations_deg"].tolist(), azimuths=case["azimuths_deg"].tolist())
    result = {}
    for n in (int(s) for s in steps.split(",")):
        r = pipe.generate(case["image_m11"], num_steps=n, noise=noise, orbit=orbit)
        result.update({f"latents_{n}": r.latents, f"frames_{n}": r.frames, f"frames_{n}_uint8": r.frames_uint8})
    result["backend"] = np.asarray(pipe.backend)
    np.savez(out, **result)


def main(argv: List[str]) -> int:
    if argv[0] == "graph":
        _graph(*argv[1:6])
    elif argv[0] == "generate":
        _generate(*argv[1:6])
    else:
        raise SystemExit(f"unknown command {argv[0]!r}: expected graph or generate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
