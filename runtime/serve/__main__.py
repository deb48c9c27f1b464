"""``python -m runtime.serve``: see runtime/serve/cli.py."""
import os
import sys

os.environ.setdefault("GLOG_v", "3")      # MindSpore's C++/Python log: errors only (read when it is imported)

from .cli import main  # noqa: E402

sys.exit(main())
