"""Where MindSpore writes its graph and debug dumps (stdlib only; MindSpore itself is not imported here).

MindSpore writes ``rank_0/om/analyze_fail.ir`` (after an interrupted or failed compile) under ``MS_OM_PATH`` and
any graph dumps under ``MS_DEV_SAVE_GRAPHS_PATH``, both by default into the working directory. :func:`dumps_into`
points both at a folder for the duration of a block: the export's staging folder (removed with it) or, for
``python -m runtime --backend mindspore``, a temporary folder removed at the end. The variables are inherited by
the processes started inside the block (the export's workers). A variable the user set is theirs and left alone.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

DUMP_ENVS = ("MS_DEV_SAVE_GRAPHS_PATH", "MS_OM_PATH")
TEMP_PREFIX = "sv3d-mindspore-debug-"


def _tell_loaded_mindspore(folder: Optional[Path]) -> None:
    """A MindSpore already imported read MS_DEV_SAVE_GRAPHS_PATH into its context once: set it there too (None: the
    default, the working directory)."""
    ms = sys.modules.get("mindspore")
    if ms is None:
        return
    try:
        ms.context._context().set_param(ms.context.ms_ctx_param.save_graphs_path, str(folder or "."))
    except Exception:          # an internal API; the environment variable still covers new processes
        pass


@contextlib.contextmanager
def dumps_into(folder: Optional[Path] = None) -> Iterator[Path]:
    """MindSpore's dumps go into ``folder`` (created if needed) inside the block; None: a new temporary folder,
    removed on the way out. Yields the folder."""
    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX)) if own else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ours = [k for k in DUMP_ENVS if k not in os.environ]
    os.environ.update({k: str(folder) for k in ours})
    if DUMP_ENVS[0] in ours:
        _tell_loaded_mindspore(folder)
    try:
        yield folder
    finally:
        for k in ours:
            if os.environ.get(k) == str(folder):
                del os.environ[k]
        if DUMP_ENVS[0] in ours:
            _tell_loaded_mindspore(None)
        if own:
            shutil.rmtree(folder, ignore_errors=True)


__all__ = ["DUMP_ENVS", "dumps_into"]
