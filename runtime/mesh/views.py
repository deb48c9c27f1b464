"""The input of a reconstruction: the frames and cameras of one result folder, and the object's masks.

A result folder is what ``python -m runtime`` writes (runtime/outputs.py): ``frames/000.png ...`` and
``info.json`` with ``orbit.elevations_deg`` / ``orbit.azimuths_deg`` (one per frame) and, since the mesh step,
``camera_convention``. An info.json without an orbit is read as the sv3d_u fixed orbit (runtime/orbits.py), one
without camera_convention in the runtime's convention.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InputImageError, OrbitError, SV3DError
from ..orbits import CAMERA_CONVENTION, Orbit, make_orbit, unconditioned_orbit
from .cameras import DEFAULT_DISTANCE, DEFAULT_FOV_DEG, Cameras, orbit_cameras
from .deps import require

FRAME_NAME = re.compile(r"^(\d+)\.png$")
MASK_MODES = ("white", "rembg")
# A pixel is the object when any channel is darker than white by more than this (SV3D renders on white; its VAE
# leaves the background within a few levels of 255).
WHITE_TOLERANCE = 24
HOLE_SHARE = 0.01          # enclosed background pieces under this share of the object's area are filled


class LayoutError(SV3DError):
    """A folder that is not a result folder of ``python -m runtime`` (frames/NNN.png + info.json)."""


@dataclass(frozen=True)
class Views:
    """frames (T, H, W, 3) uint8, their cameras, and where the cameras came from (for the log and the report)."""
    frames: np.ndarray
    cameras: Cameras
    orbit: Orbit
    source: str


def read_views(folder, *, elevation=None, azimuths: Optional[Sequence[float]] = None,
               fov_deg: Optional[float] = None, distance: Optional[float] = None) -> Views:
    """Frames and cameras of a result folder; elevation / azimuths / fov / distance override what it records."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError("not a folder", expected="a result folder of python -m runtime", path=folder)
    info_path, frames_dir = folder / "info.json", folder / "frames"
    missing = [p.name + ("/" if p is frames_dir else "") for p in (info_path, frames_dir)
               if not (p.is_dir() if p is frames_dir else p.is_file())]
    if missing:
        raise LayoutError("not a result folder", expected="frames/NNN.png and info.json (python -m runtime output)",
                          got="no " + " and no ".join(missing), path=folder)
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:
        raise LayoutError(f"info.json cannot be read: {e}", path=info_path) from None
    if not isinstance(info, dict):
        raise LayoutError("info.json must hold an object", got=type(info).__name__, path=info_path)
    frames = read_frames(frames_dir)
    t = frames.shape[0]

    recorded = info.get("orbit")
    if recorded is None:
        if info.get("variant") not in (None, "sv3d_u"):
            raise LayoutError("info.json has no orbit", expected="orbit.elevations_deg and orbit.azimuths_deg",
                              got=f"variant {info.get('variant')!r} without them", path=info_path)
        orbit, source = unconditioned_orbit(t), "sv3d_u fixed orbit (info.json records none)"
    else:
        try:
            orbit = make_orbit(t, elevation=recorded["elevations_deg"], azimuths=recorded["azimuths_deg"])
        except (KeyError, TypeError):
            raise LayoutError("info.json's orbit is incomplete", expected="elevations_deg and azimuths_deg lists",
                              got=sorted(recorded) if isinstance(recorded, dict) else recorded,
                              path=info_path) from None
        except OrbitError as e:
            raise LayoutError(f"info.json's orbit does not fit the {t} frames: {e}", path=info_path) from None
        source = str(recorded.get("source", "conditioning"))
    convention = info.get("camera_convention", CAMERA_CONVENTION)
    if elevation is not None or azimuths is not None:
        orbit = make_orbit(t, elevation=list(orbit.elevations_deg) if elevation is None else elevation,
                           azimuths=list(orbit.azimuths_deg) if azimuths is None else azimuths)
        source, convention = "command line", CAMERA_CONVENTION
    cameras = orbit_cameras(orbit, frames.shape[1], frames.shape[2],
                            fov_deg=DEFAULT_FOV_DEG if fov_deg is None else fov_deg,
                            distance=DEFAULT_DISTANCE if distance is None else distance, convention=convention)
    return Views(frames, cameras, orbit, source)


def read_frames(frames_dir: Path) -> np.ndarray:
    """frames/000.png ... as (T, H, W, 3) uint8; numbered 0..T-1 without gaps, all the same size."""
    from PIL import Image

    numbered = {}
    for p in frames_dir.iterdir():
        m = FRAME_NAME.match(p.name)
        if m:
            numbered[int(m.group(1))] = p
    if not numbered:
        raise LayoutError("no frames", expected="frames/000.png, 001.png, ...", got="none", path=frames_dir)
    if sorted(numbered) != list(range(len(numbered))):
        gaps = sorted(set(range(max(numbered) + 1)) - set(numbered))
        raise LayoutError("frame numbers have gaps", expected=f"0..{len(numbered) - 1}",
                          got=f"missing {gaps[:5]}", path=frames_dir)
    frames = []
    for i in range(len(numbered)):
        try:
            with Image.open(numbered[i]) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise InputImageError(f"cannot read frame: {e}", path=numbered[i]) from None
        if frames[-1].shape != frames[0].shape:
            raise LayoutError("frames differ in size", expected=str(frames[0].shape), got=str(frames[-1].shape),
                              path=numbered[i])
    return np.stack(frames)


def fill_small_holes(mask: np.ndarray, share: float = HOLE_SHARE) -> np.ndarray:
    """The mask with its enclosed background pieces smaller than ``share`` of its area filled.

    One view's hole carves the whole cone of rays behind it out of the hull, so a white highlight on the object
    would punch a tunnel through the mesh; a real opening (a handle, a torus seen from above) is larger."""
    label = require("scipy.ndimage").label
    labels, count = label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
    small = np.flatnonzero(sizes < share * mask.sum())
    fill = np.setdiff1d(small[small > 0], border)
    return mask | np.isin(labels, fill) if fill.size else mask


def object_masks(frames: np.ndarray, mode: str = "white") -> np.ndarray:
    """(T, H, W) bool: True on the object. white: any channel below 255 - WHITE_TOLERANCE, small enclosed holes
    filled (fill_small_holes); rembg: rembg's alpha > 127 (needs ``pip install rembg``)."""
    if mode not in MASK_MODES:
        raise SV3DError("unknown mask mode", expected=f"one of {list(MASK_MODES)}", got=repr(mode))
    if mode == "white":
        return np.stack([fill_small_holes(m) for m in (frames < 255 - WHITE_TOLERANCE).any(axis=-1)])
    try:
        import rembg
    except ImportError:
        raise SV3DError("--masks rembg needs rembg", expected="an importable rembg", got="none",
                        hint="pip install rembg, or use --masks white") from None
    from PIL import Image

    session = rembg.new_session()
    return np.stack([np.asarray(rembg.remove(Image.fromarray(f), session=session))[..., 3] > 127 for f in frames])


__all__ = ["LayoutError", "MASK_MODES", "Views", "WHITE_TOLERANCE", "fill_small_holes", "object_masks", "read_frames",
           "read_views"]
