"""The output folder: staged beside the destination, published by rename only when complete.

An export writes into `<parent>/.<name>.partial-<pid>-<random>/` and renames it to `<parent>/<name>` after every
graph and manifest.json are written and checked, so the destination either does not exist or holds a complete
export: an interrupted export never leaves a graph set that looks valid (the runtime only trusts folders with a
manifest.json). A failed export removes its staging folder; one killed outright (SIGKILL, power loss) leaves it
behind, and the next export to the same destination removes it once its process is gone.

--overwrite replaces an existing destination only if it is empty or an export (holds manifest.json): the old
folder is renamed aside, the new one renamed in, then the old one deleted. A failed `--reuse` export keeps the
graphs it completed in `<parent>/.<name>.unfinished/` (no manifest.json: never taken for an export) for the next
`--reuse` export; publishing any export to `<name>` removes that folder.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import List, Tuple

from runtime.manifest import MANIFEST_NAME
from .errors import DestinationError

PARTIAL = ".partial-"
OLD = ".old-"
UNFINISHED = ".unfinished"      # the graphs a failed --reuse export completed (export/reuse.py)


def _partial_prefix(out: Path) -> str:
    return f".{out.name}{PARTIAL}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # exists, owned by someone else
        return True
    return True


def unfinished_folder(out: Path) -> Path:
    """Where a failed `--reuse` export to `out` keeps the graphs it completed, for the next one to reuse."""
    return out.parent / f".{out.name}{UNFINISHED}"


def _leftovers(out: Path) -> List[Tuple[Path, int]]:
    """Staging and aside folders of exports to `out` that exist now, each with the id of the process that made it."""
    pattern = re.compile(re.escape(f".{out.name}") + rf"(?:{re.escape(PARTIAL)}|{re.escape(OLD)})(\d+)-")
    if not out.parent.is_dir():
        return []
    return [(p, int(m.group(1))) for p in sorted(out.parent.iterdir())
            for m in [pattern.match(p.name)] if m and p.is_dir()]


def check_no_live_writer(out: Path) -> None:
    """Refuse `out` while another live process has a staging folder for it."""
    for p, pid in _leftovers(out):
        if pid != os.getpid() and _pid_alive(pid):
            raise DestinationError(f"another export (process {pid}) is writing {out} (staging folder {p}); wait "
                                   f"for it or stop it")


def remove_stale(out: Path) -> List[Path]:
    """Delete staging/aside folders of `out` left by dead processes; refuse if a live export is writing `out`."""
    check_no_live_writer(out)
    removed = []
    for p, _ in _leftovers(out):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse a destination that exists (without --overwrite), that is not ours to replace, or that another export
    is writing."""
    check_no_live_writer(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise DestinationError(f"output path {out} exists and is not a folder")
        if not overwrite:
            raise DestinationError(f"output folder {out} already exists; pass --overwrite to replace it (or --reuse "
                                   f"to update it)")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise DestinationError(f"output folder {out} is not empty and holds no {MANIFEST_NAME}, so it is not "
                                   f"an export; refusing to replace it even with --overwrite (choose another "
                                   f"folder)")
    parent = out.parent
    probe = parent
    while not probe.exists():          # the first existing ancestor must be a writable folder
        probe = probe.parent
    if not probe.is_dir():
        raise DestinationError(f"cannot create output folder {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DestinationError(f"output folder {out} is not writable: no write permission on {probe}")


def begin(out: Path) -> Path:
    """Create the staging folder for `out` (after removing stale ones) and prove it writable."""
    remove_stale(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(out)}{os.getpid()}-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)            # mkdtemp makes it private; the export is an ordinary folder
        probe = staging / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise DestinationError(f"output folder {out} is not writable: {e.strerror or e} "
                               f"({e.filename or out.parent})") from None
    return staging


def publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the complete staging folder to `out` (replacing an old export when `overwrite`)."""
    if out.exists():
        check_destination(out, overwrite)
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD}{os.getpid()}-", dir=out.parent))
        os.replace(out, aside / out.name)
        os.replace(staging, out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, out)
    shutil.rmtree(unfinished_folder(out), ignore_errors=True)        # a published export supersedes it


def keep_unfinished(staging: Path, out: Path) -> Path:
    """Move a failed `--reuse` export's staging folder to unfinished_folder(out), replacing an older one."""
    kept = unfinished_folder(out)
    shutil.rmtree(kept, ignore_errors=True)
    os.replace(staging, kept)
    return kept


def abandon(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
