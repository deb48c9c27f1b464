"""``python -m runtime.mesh``: see runtime/mesh/cli.py."""
import sys

from .cli import main

sys.exit(main())
