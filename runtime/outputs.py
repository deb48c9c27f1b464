"""Writing a generation to disk: mp4, gif, PNG frames, a contact sheet, the preprocessed input, info.json.

Layout of one result (``write_result``)::

    <output>/<name>/
        <name>.mp4           H.264 via imageio-ffmpeg, ``fps`` frames per second
        <name>.gif           looping GIF
        frames/000.png ...   every frame, lossless
        contact_sheet.png    all frames in a grid (``CONTACT_SHEET_COLUMNS`` per row)
        input.png            the conditioning image as the model saw it
        info.json            settings, backend, orbit (+ camera_convention) and timings

Nothing is ever overwritten: if ``<output>/<name>`` exists, the result goes to ``<name>_1``, ``<name>_2``, ... (the
path actually used is returned). Everything is first written into a hidden temporary folder next to the target
and renamed into place at the end, so a failure (or Ctrl-C) leaves no partial result folder behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from configs.limits import LIMITS

from .errors import OutputError
from .orbits import CAMERA_CONVENTION, UNCONDITIONED_ORBIT_SOURCE, unconditioned_orbit

DEFAULT_FPS = 10                 # imageio's ffmpeg default, which the reference's mimwrite used (SVS:268-275)
CONTACT_SHEET_COLUMNS = 7        # 21 frames -> 3 rows of 7
CONTACT_SHEET_PAD = 2            # pixels between tiles
CONTACT_SHEET_BACKGROUND = 255   # white
MP4_MACRO_BLOCK = 2              # yuv420p needs even sides; never let imageio rescale frames
TMP_PREFIX = ".sv3d-tmp-"
MAX_NAME_SUFFIX = 10000


def _check_frames(frames_uint8: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[0] < 1:
        raise OutputError("frames must be uint8 (T, H, W, 3)", got=f"{arr.dtype} {arr.shape}")
    return arr


def require_video_support() -> None:
    """Raise OutputError (with a hint) unless imageio and imageio-ffmpeg are importable."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        raise OutputError(f"writing mp4/gif needs imageio and imageio-ffmpeg: {e}",
                          hint="pip install imageio imageio-ffmpeg") from None


def write_mp4(path, frames_uint8: np.ndarray, fps: int = DEFAULT_FPS) -> Path:
    import imageio.v2 as iio

    frames = _check_frames(frames_uint8)
    iio.mimwrite(os.fspath(path), list(frames), format="FFMPEG", fps=fps, macro_block_size=MP4_MACRO_BLOCK)
    return Path(path)


def write_gif(path, frames_uint8: np.ndarray, fps: int = DEFAULT_FPS) -> Path:
    """Pillow directly: the same bytes imageio's GIF writer gives (it calls this save), without its plugin object,
    whose finaliser printed a traceback when Ctrl-C landed while it was being built."""
    from PIL import Image

    images = [Image.fromarray(f) for f in _check_frames(frames_uint8)]
    images[0].save(os.fspath(path), format="GIF", save_all=True, append_images=images[1:],
                   duration=1000.0 / fps, loop=0)
    return Path(path)


def write_png(path, rgb_uint8: np.ndarray) -> Path:
    from PIL import Image

    arr = np.asarray(rgb_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise OutputError("a PNG needs a uint8 (H, W, 3|4) image", got=f"{arr.dtype} {arr.shape}", path=path)
    Image.fromarray(arr).save(os.fspath(path), format="PNG")
    return Path(path)


def write_frames(folder, frames_uint8: np.ndarray) -> list:
    """frames/000.png, 001.png, ... (zero-padded to the frame count's width)."""
    frames = _check_frames(frames_uint8)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(frames.shape[0] - 1)))
    return [write_png(folder / f"{i:0{width}d}.png", f) for i, f in enumerate(frames)]


def contact_sheet(frames_uint8: np.ndarray, columns: int = CONTACT_SHEET_COLUMNS, pad: int = CONTACT_SHEET_PAD,
                  background: int = CONTACT_SHEET_BACKGROUND) -> np.ndarray:
    """All frames in a grid, row-major, ``pad`` pixels apart and around: (rows*(H+pad)+pad, cols*(W+pad)+pad, 3)."""
    frames = _check_frames(frames_uint8)
    t, h, w, _ = frames.shape
    cols = max(1, min(int(columns), t))
    rows = -(-t // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = f
    return sheet


def free_name(output_dir, name: str) -> Path:
    """``output_dir/name``, or the first ``name_<k>`` that does not exist yet."""
    output_dir = Path(output_dir)
    candidate = output_dir / name
    k = 0
    while candidate.exists() or candidate.is_symlink():
        k += 1
        if k > MAX_NAME_SUFFIX:
            raise OutputError(f"no free output name for {name!r}", path=output_dir,
                              hint="clean up the output folder")
        candidate = output_dir / f"{name}_{k}"
    return candidate


def check_writable(output_dir) -> Path:
    """Create ``output_dir`` if needed and prove a file can be created in it; OutputError otherwise."""
    if os.fspath(output_dir) == "":                     # Path("") is the working directory
        raise OutputError("invalid output folder", expected="a folder path", got="''")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError("the output path exists and is not a folder", path=output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=TMP_PREFIX):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to the output folder: {e.strerror or e}", path=output_dir,
                          hint="choose another --output") from None
    return output_dir

def result_name(stem: str) -> str:
    """The name of an image's result (folder and files): its stem without leading dots ("..png" has the stem
    ".", and a hidden name would make a hidden folder), or "image" when nothing is left."""
    return stem.lstrip(".") or "image"


def new_dirs(path) -> List[Path]:
    """The folders `mkdir -p path` would create, deepest first."""
    created, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    return created


def remove_if_empty(folders: List[Path]) -> None:
    for d in folders:                                 # deepest first; stops at the first one that holds something
        try:
            d.rmdir()
        except OSError:
            return





def write_result(result, output_dir, name: str, *, fps: int = DEFAULT_FPS, info: Optional[dict] = None,
                 columns: int = CONTACT_SHEET_COLUMNS) -> Path:
    """Write every output of one ``Result`` into a new folder ``output_dir/name`` (or ``name_<k>``).

    name: a plain name (no folder, no leading dot; see :func:`result_name`). Returns the folder written. Raises
    OutputError; on any failure the temporary folder and any folder this call created are removed.
    info.json records the orbit: the conditioning orbit of sv3d_p, or the fixed orbit assumed for sv3d_u
    (``orbit.source``), and the ``camera_convention`` its angles are meant in (runtime/orbits.py).
    """
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise OutputError("invalid result name", expected="a plain name, without '/' or a leading '.'",
                          got=repr(name))
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or not 1 <= fps <= LIMITS.max_fps:
        raise OutputError("invalid fps", expected=f"an integer in [1, {LIMITS.max_fps}]", got=repr(fps),
                          hint="the bounds are configs/limits.py")

    def fill(tmp: Path) -> None:
        frames = result.frames_uint8
        write_mp4(tmp / f"{name}.mp4", frames, fps)
        write_gif(tmp / f"{name}.gif", frames, fps)
        write_frames(tmp / "frames", frames)
        write_png(tmp / "contact_sheet.png", contact_sheet(frames, columns))
        write_png(tmp / "input.png", result.input_image.rgb_uint8)
        record = dict(info or {})
        record.update(num_steps=result.num_steps, seed=result.seed,
                      guidance_scales=[round(float(s), 6) for s in result.guidance_scales], fps=fps,
                      num_frames=int(frames.shape[0]), resolution=int(frames.shape[1]))
        orbit, source = result.orbit, "conditioning"
        if orbit is None:
            orbit, source = unconditioned_orbit(int(frames.shape[0])), UNCONDITIONED_ORBIT_SOURCE
        record["orbit"] = {"elevations_deg": list(orbit.elevations_deg), "azimuths_deg": list(orbit.azimuths_deg),
                           "source": source}
        record["camera_convention"] = CAMERA_CONVENTION
        record["timings"] = result.timings.to_dict()
        (tmp / "info.json").write_text(json.dumps(record, indent=1) + "\n")

    return write_folder(output_dir, name, fill)


def write_folder(output_dir, name: str, fill: Callable[[Path], None]) -> Path:
    """Create a new folder ``output_dir/name`` (or ``name_<k>``) whose files ``fill(tmp)`` writes into a hidden
    temporary folder; it is renamed into place only when ``fill`` returned. Returns the folder written.

    Raises OutputError; on any failure, or Ctrl-C, the temporary folder and any folder this call created are
    removed and nothing is published.
    """
    made = new_dirs(output_dir) if isinstance(output_dir, (str, os.PathLike)) else []
    tmp, done = None, False
    try:
        output_dir = check_writable(output_dir)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + name + "-", dir=output_dir))
        fill(tmp)
        os.chmod(tmp, 0o755 & ~_umask())               # mkdtemp makes it 0700; give it normal permissions
        folder = _move_into_place(tmp, output_dir, name)
        done = True
        return folder
    except OutputError:
        raise
    except Exception as e:                       # OSError (disk full, permissions), ffmpeg/Pillow failures
        raise OutputError(f"writing the outputs failed: {type(e).__name__}: {e}", path=output_dir) from e
    finally:                                     # KeyboardInterrupt too: clean up, let it through
        if not done:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            remove_if_empty(made)


def _move_into_place(tmp: Path, output_dir: Path, name: str) -> Path:
    # rename never replaces a non-empty folder; if another process took the name meanwhile, try the next one
    for _ in range(MAX_NAME_SUFFIX):
        target = free_name(output_dir, name)
        try:
            os.rename(tmp, target)
            return target
        except OSError:
            if not target.exists():
                raise
    raise OutputError(f"no free output name for {name!r}", path=output_dir)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
