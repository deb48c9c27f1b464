"""python -m export -c sv3d_u -k sv3d_u.safetensors -o graphs/sv3d_u [--resolution 576] [--dtype fp16] ...

Exit status: 0 exported and published; 2 bad options, config, checkpoint (a NaN or Inf tensor found while
loading it too) or output folder (another export writing it too), or the export extra not installed, nothing
written; 3 an exported graph failed its parity gate; 1 the exporter itself failed; 130 interrupted (Ctrl-C; 143 for
SIGTERM). Nothing is published unless 0, and the staging folder is removed on every non-zero exit (after MindSpore
has replaced the SIGINT handler too: runtime/interrupts.py). Only a SIGKILL leaves a staging folder, which the next
export to the same destination removes. The handling is runtime/command.py's, shared with python -m runtime.
"""
import logging
import os
import sys
from typing import Optional

EXIT_USAGE, EXIT_EXPORT, EXIT_PARITY = 2, 1, 3
INTERRUPTED = "interrupted: nothing was published"
NOT_PUBLISHED = "error: {error} (nothing was published)"
NEEDS_EXTRA = ("error: {error}: python -m export needs the export extra (pip install -e '.[export]' in the "
               "repository, or pip install -r requirements.txt)")


def main(argv: Optional[list] = None) -> int:
    from argparse_dataclass import ArgumentParser

    from configs.errors import SV3DError
    from runtime.command import ExitRule, run_command
    from .errors import DestinationError, ExportError, ParityError
    from .options import ExportOptions

    parser = ArgumentParser(ExportOptions, prog="python -m export",
                            description="Export SV3D (config + official checkpoint) to static-shape MindIR/ONNX "
                                        "graphs with a manifest.json, each graph checked against the eager model.")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if opts.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    rules = [                                   # first match wins (ParityError and DestinationError are ExportErrors)
        ExitRule(DestinationError, EXIT_USAGE, NOT_PUBLISHED),          # found while staging too
        ExitRule(ParityError, EXIT_PARITY, "error: parity gate failed, nothing was published: {error}"),
        ExitRule(ExportError, EXIT_EXPORT, NOT_PUBLISHED),
        ExitRule(SV3DError, EXIT_USAGE, NOT_PUBLISHED),                 # config, checkpoint (NaN/Inf found loading it)
        ExitRule(ModuleNotFoundError, EXIT_USAGE, NEEDS_EXTRA),
    ]
    return run_command(lambda: _export(opts), interrupted=INTERRUPTED, rules=rules)


def _export(opts) -> int:
    from configs.errors import SV3DError
    from runtime import interrupts
    from .api import plan, run

    try:
        p = plan(opts)
    except SV3DError as e:                      # planning finds only the user's errors: options, config, ...
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not interrupts.preload("mindspore"):     # (never interrupted halfway: that crashes Python at exit)
        raise ModuleNotFoundError("No module named 'mindspore'", name="mindspore")
    result = run(p)
    m = result.manifest
    for fmt in m.formats():
        for name, entry in m.graphs[fmt].items():
            g = result.graphs[name]
            errs = g.get("results", {}).get(fmt, {})
            check = f"{g['gate']} rel_l2 {errs['rel_l2']:.2e}" if errs else g["gate"]
            how = "reused        " if name in result.reused else f"export {g['formats'][fmt]['export_seconds']:7.1f} s"
            print(f"{fmt:6s} {name:12s} {sum(f.bytes for f in entry.files) / 1e6:10.1f} MB  {how}  parity {check}")
    done = "exported" if result.published else "up to date (--reuse), checked"
    print(f"{result.out}: {done} in {result.seconds:.1f} s, peak RSS {result.peak_rss_bytes / 1e9:.2f} GB "
          f"(largest child process {result.peak_worker_rss_bytes / 1e9:.2f} GB)")
    return 0


def console() -> int:
    """``python -m export`` and the ``sv3d-export`` console script: MindSpore's environment, then :func:`main`."""
    os.environ.setdefault("GLOG_v", "3")      # MindSpore: errors only (set before it is imported)
    from runtime.backends.onednn import cap_onednn_isa
    cap_onednn_isa()                          # the fast oneDNN convolution for the eager parity gate on AVX-512
    return main()


if __name__ == "__main__":
    sys.exit(console())
