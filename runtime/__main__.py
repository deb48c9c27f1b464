"""``python -m runtime`` and the ``sv3d-run`` console script: see runtime/cli.py."""
import os
import sys


def console() -> int:
    os.environ.setdefault("GLOG_v", "3")      # MindSpore's C++/Python log: errors only (read when it is imported)
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(console())
