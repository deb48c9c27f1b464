"""``python -m demo``: see demo/cli.py."""
import sys

from .cli import console

if __name__ == "__main__":          # the export's worker processes (spawn) import this module again
    sys.exit(console())
