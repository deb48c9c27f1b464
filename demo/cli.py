"""``python -m demo``: a random checkpoint of the tiny SV3D architecture (models/random_checkpoint.py), exported at
64 px (export/), run on the bundled sample image (runtime/), the video written to ``outputs/``.

    python -m demo                                            # -> outputs/object/
    python -m demo --config sv3d_p_tiny --graphs demo-export --steps 4 --backend onnxruntime

**The weights are random, so the video is noise, not the object**: it shows the whole path working, nothing more;
a banner says so before and after, and each info.json records it. ``--graphs DIR`` keeps the demo export in DIR
and reuses it the next time (default: a temporary folder, removed at the end). Every other flag is
``python -m runtime``'s; those it checks without an export (runtime.cli.check_options: --fps, --threads, the
output, ...) are checked before the export starts, the rest (--steps, the camera) against the export, as always.

Exit status: 0 done; 1 any error (the export's too, and the export extra not installed); 2 usage; 130 interrupted
(143 for SIGTERM), with nothing partial left (runtime/command.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from configs.errors import SV3DError
from runtime import cli as runtime_cli
from runtime import interrupts
from runtime.command import ExitRule, run_command
from runtime.manifest import MANIFEST_NAME
from runtime.sample_data import sample_image_path

CONFIGS = ("sv3d_u_tiny", "sv3d_p_tiny")
RESOLUTION = 64               # tiny demo export: 64 px images, 8 x 8 latents
SEED = 0                      # seed of the random weights
EXIT_ERROR = 1
NEEDS_EXTRA = ("error: {error}: the demo exports a model, which needs the export extra (pip install -e "
               "'.[export]' in the repository, or pip install -r requirements.txt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo", description="Export a RANDOM-WEIGHT tiny SV3D model and run it on the bundled sample "
                                           "image (or the images given): the whole path, not a real result.",
        epilog="Every other flag is python -m runtime's (python -m runtime --help): IMAGE..., -o, --steps, "
               "--backend, ...")
    parser.add_argument("--config", choices=CONFIGS, default=CONFIGS[0], help="the tiny config to export")
    parser.add_argument("--graphs", metavar="DIR", help="keep the demo export in DIR and reuse it the next time "
                                                        "(default: a temporary folder)")
    return parser


def _say(opts: runtime_cli.Options, *msg) -> None:
    if not opts.quiet:
        print(*msg, file=sys.stderr, flush=True)


def export_random_model(config: str, folder: Path, work: Path, opts: runtime_cli.Options) -> None:
    """A random checkpoint of ``config`` written into ``work``, exported at RESOLUTION px into ``folder``, unless
    ``folder`` holds an export already."""
    if (folder / MANIFEST_NAME).is_file():
        _say(opts, f"demo: reusing the export in {folder}")
        return
    _say(opts, f"demo: exporting a RANDOM-WEIGHT {config} model at {RESOLUTION} px into {folder} (about a minute)")
    from configs import load_config
    from export.api import plan, run
    from export.options import ExportOptions
    from models.random_checkpoint import write_random_checkpoint

    checkpoint = work / "random.safetensors"
    write_random_checkpoint(load_config(config), checkpoint, seed=SEED, progress=not opts.quiet)
    p = plan(ExportOptions(config=config, checkpoint=str(checkpoint), out=str(folder), resolution=RESOLUTION,
                           quiet=opts.quiet))
    if not interrupts.preload("mindspore"):    # (never interrupted halfway: that crashes Python at exit)
        raise ModuleNotFoundError("No module named 'mindspore'", name="mindspore")
    run(p)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    opts = runtime_cli.build_parser().parse_args(rest)
    if opts.demo:
        parser.error("--demo: this is the demo")

    def body() -> int:
        with tempfile.TemporaryDirectory(prefix="sv3d-demo-") as work:
            folder = Path(args.graphs) if args.graphs else Path(work) / "export"
            run_opts = dataclasses.replace(opts, graphs=str(folder), images=opts.images or [str(sample_image_path())])
            runtime_cli.check_options(run_opts)           # fails now, not after the export
            export_random_model(args.config, folder, Path(work), run_opts)
            return runtime_cli.run(run_opts, random_weights=True)

    return run_command(body, interrupted=runtime_cli.INTERRUPTED_MESSAGE,
                       rules=[ExitRule(SV3DError, EXIT_ERROR), ExitRule(ModuleNotFoundError, EXIT_ERROR, NEEDS_EXTRA)])


def console() -> int:
    """``python -m demo`` and the ``sv3d-demo`` console script: MindSpore's environment, then :func:`main`."""
    os.environ.setdefault("GLOG_v", "3")      # MindSpore: errors only (set before it is imported)
    from runtime.backends.onednn import cap_onednn_isa
    cap_onednn_isa()                          # the fast oneDNN convolution for the export's eager parity gate
    return main()


__all__ = ["CONFIGS", "build_parser", "console", "export_random_model", "main"]
