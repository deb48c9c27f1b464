"""python -m runtime.backends.mslite_native setup|status|clean: the native MindSpore Lite engine (build.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ...errors import SV3DError
from ...interrupts import EXIT_INTERRUPTED, MESSAGE
from . import build


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.backends.mslite_native", description=build.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help=f"download the MindSpore Lite {build.VERSION} wheel with pip, unpack it and "
                                     "build the shim (once; needs g++)")
    s.add_argument("--wheel", type=Path, default=None, help="use this downloaded wheel instead of pip download")
    s.add_argument("--force", action="store_true", help="download and unpack the wheel again")
    sub.add_parser("status", help="where the engine is and whether it is ready (exit 1 if not)")
    sub.add_parser("clean", help="remove the engine folder")
    a = ap.parse_args(argv)
    try:
        if a.command == "setup":
            build.setup(a.wheel, a.force)
        elif a.command == "clean":
            build.clean()
        else:
            print("\n".join(build.status_lines()))
            return 0 if build.problem() is None else 1
    except SV3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{MESSAGE}: the engine folder was left as it was before", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
