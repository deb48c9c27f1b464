"""Camera orbits for sv3d_p: per-frame elevation and azimuth, validated, and their conversion to the radians the
conditioning embeds (SVS:82-94; SV3D_REFERENCE.md §2.1).

Conventions of the reference:
* elevation is measured up from the horizontal plane; the model is conditioned on the *polar* angle
  ``polar = polar_offset - elevation`` (polar_offset = 90 deg: measured from the +z axis);
* azimuths are made relative to the **last** frame, which is the input view:
  ``azimuth_rad_i = deg2rad((az_i - az_last) mod 360)``, so the last frame always has azimuth 0;
* the official default orbit is a constant elevation (10 deg) and T azimuths ``linspace(0, 360, T+1)[1:] % 360``:
  360/T apart, ending at 0 deg.

The orbit constants (default elevation, elevation range, the dynamic preset's amplitude) are the config's
ConditionerConfig; :func:`build_orbit` reads them from the config of an export, the lower-level functions default to
the schema's values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from configs.schema import ConditionerConfig

from .errors import OrbitError

FULL_TURN_DEG = 360.0

Number = Union[int, float]
NAMES = ("elevation", "azimuths")      # how the Python API spells the two angle arguments (errors name them)


@dataclass(frozen=True)
class Orbit:
    """A camera orbit of T frames, in degrees. The last frame corresponds to the input image."""
    elevations_deg: Tuple[float, ...]
    azimuths_deg: Tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.elevations_deg) != len(self.azimuths_deg) or len(self.azimuths_deg) == 0:
            raise OrbitError("an Orbit needs one elevation and one azimuth per frame",
                             expected="equal, non-zero counts",
                             got=f"{len(self.elevations_deg)} elevations, {len(self.azimuths_deg)} azimuths")
        values = np.asarray(self.elevations_deg + self.azimuths_deg, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise OrbitError("orbit angles must be finite", got=values.tolist())

    @property
    def num_frames(self) -> int:
        return len(self.azimuths_deg)


def default_azimuths(num_frames: int) -> np.ndarray:
    """The official azimuths, (T,) degrees: ``linspace(0, 360, T+1)[1:] % 360``, 360/T apart and ending at 0, the
    input view (SVS:82-89)."""
    return np.linspace(0.0, FULL_TURN_DEG, _frame_count(num_frames) + 1)[1:] % FULL_TURN_DEG


def default_orbit(num_frames: int, elevation_deg: float) -> Orbit:
    """The official orbit: constant elevation and the default azimuths (SVS:82-89)."""
    return make_orbit(num_frames, elevation=float(elevation_deg), azimuths=default_azimuths(num_frames))


def unconditioned_orbit(num_frames: int,
                        elevation_deg: float = ConditionerConfig.default_elevation_deg) -> Orbit:
    """The fixed orbit sv3d_u is assumed to generate (see UNCONDITIONED_ORBIT_SOURCE): the default orbit."""
    return default_orbit(num_frames, elevation_deg)


def dynamic_orbit(num_frames: int, elevation_deg: float,
                  amplitude_deg: float = ConditionerConfig.dynamic_elevation_amplitude_deg) -> Orbit:
    """Default azimuths with a sinusoidal elevation: ``elevation_deg + amplitude * sin(2 pi k / T)``, k = 1..T.

    One full sine period over the orbit, centred on the base elevation, so frame T (the input view, azimuth 0) is
    back at ``elevation_deg``; the orbit peaks a quarter turn in. amplitude: the config's
    conditioner.dynamic_elevation_amplitude_deg.
    """
    n = _frame_count(num_frames)
    k = np.arange(1, n + 1) % n                     # frame T is phase 0: exactly the base elevation
    elevations = float(elevation_deg) + float(amplitude_deg) * np.sin(2.0 * math.pi * k / n)
    return make_orbit(n, elevation=elevations, azimuths=default_azimuths(n))


# The orbit of sv3d_u, which takes no camera input: the official default orbit at the default elevation. The
# official README says only that sv3d_u makes orbital videos without camera conditioning (generative-models 0ad7de9,
# README.md:76); Stability AI's SV4D script feeds sv3d_u's 21 views to SV4D with exactly these cameras:
# elevations_deg=10.0 and linspace(0, 360, 22)[1:] % 360, relative to the last (input) view
# (scripts/sampling/simple_video_sample_4d.py:33,42,112-124; scripts/demo/sv4d_helpers.py:343 passes sv3d_u no
# angles). The true elevation is the input image's own; 10 deg is the assumption the official code makes too.
UNCONDITIONED_ORBIT_SOURCE = ("sv3d_u fixed orbit: the official default orbit (constant 10 deg elevation, azimuths "
                              "360/T apart ending at 0 = the input view), as Stability AI's SV4D script assumes for "
                              "sv3d_u views (generative-models simple_video_sample_4d.py:112-124)")

# How the angles of an orbit map to 3-D cameras (runtime/mesh/cameras.py builds them; README "Mesh"): world y up,
# object at the origin, camera at distance d looking at the origin, elevation above the x-z plane, azimuth 0 = the
# input view with the camera on +z, azimuth growing counter-clockwise seen from above (right-handed about +y).
# The official code draws its camera orbits the same way (scripts/demo/sv3d_helpers.py:77-88: positions
# (cos e cos a, cos e sin a, sin e) with z up, i.e. counter-clockwise seen from above). Which way a real model's
# frames turn cannot be checked without the weights. info.json records this name as "camera_convention"; an
# info.json without the field is read in this convention.
CAMERA_CONVENTION = "y_up_ccw"


# name -> builder(num_frames, base elevation in degrees, conditioner config)
ORBIT_PRESETS: Dict[str, Callable[[int, float, ConditionerConfig], Orbit]] = {
    "default": lambda n, base, cond: default_orbit(n, base),
    "dynamic": lambda n, base, cond: dynamic_orbit(n, base, cond.dynamic_elevation_amplitude_deg),
}


def preset_orbit(name: str, num_frames: int, elevation_deg: float,
                 conditioner: ConditionerConfig = ConditionerConfig()) -> Orbit:
    """Build the named preset (see ``ORBIT_PRESETS``) around the base elevation ``elevation_deg``, with the orbit
    constants of ``conditioner`` (default: the schema's)."""
    if name not in ORBIT_PRESETS:
        raise OrbitError("unknown orbit preset", expected=f"one of {sorted(ORBIT_PRESETS)}", got=repr(name))
    return ORBIT_PRESETS[name](num_frames, elevation_deg, conditioner)


def make_orbit(num_frames: int, elevation: Optional[Union[Number, Sequence[Number]]] = None,
               azimuths: Optional[Sequence[Number]] = None,
               elevation_range: Tuple[float, float] = ConditionerConfig.elevation_range_deg,
               default_elevation_deg: Optional[float] = None, names: Tuple[str, str] = NAMES) -> Orbit:
    """A validated orbit from user values.

    elevation: None (-> ``default_elevation_deg``), one number for every frame, or T numbers (degrees).
    azimuths:  None (-> the official default azimuths) or T numbers (degrees, any finite value; taken mod 360).
    elevation_range: inclusive [low, high] every elevation must lie in (ConditionerConfig.elevation_range_deg).
    default_elevation_deg: the config's default_elevation_deg; needed only when ``elevation`` is None.
    names: how the caller spells elevation and azimuths (the command line: --elevation, --azimuths).
    Raises OrbitError naming the argument, what was expected and what was got.
    """
    n = _frame_count(num_frames)
    if elevation is None:
        if default_elevation_deg is None:
            raise OrbitError("no elevation given and no default elevation",
                             expected="elevation or default_elevation_deg (ConditionerConfig)", got="neither")
        elevation = default_elevation_deg
    elev = _angles(names[0], elevation, allow_scalar=True)
    if elev.shape[0] == 1:
        elev = np.repeat(elev, n)
    if elev.shape[0] != n:
        raise OrbitError(f"wrong number of values for {names[0]}", expected=f"1 or {n} values",
                         got=f"{elev.shape[0]} values")
    _check_elevations(elev, elevation_range, names[0])
    if azimuths is None:
        azim = default_azimuths(n)
    else:
        azim = _angles(names[1], azimuths, allow_scalar=False)
        if azim.shape[0] != n:
            raise OrbitError(f"wrong number of values for {names[1]}", expected=f"{n} values",
                             got=f"{azim.shape[0]} values")
    return Orbit(tuple(float(e) for e in elev), tuple(float(a) for a in azim))


def build_orbit(config: Any, num_frames: int, *, elevation=None, azimuths=None,
                preset: Optional[str] = None, names: Tuple[str, str] = NAMES) -> Optional[Orbit]:
    """A validated camera orbit for an sv3d_p config; None for sv3d_u, which refuses any camera input.

    config: an SV3DConfig or RuntimeConfig (its variant and conditioner). elevation: None (config default), one
    value, or T values (degrees); azimuths: None (official default) or T values (degrees); preset: None / "default"
    (constant elevation) or "dynamic" (sine elevation around one base elevation; no azimuths). Elevations must lie
    in the config's elevation_range_deg; names: as in :func:`make_orbit`. Raises OrbitError.
    """
    cond = config.conditioner
    if cond.camera_embed_dim <= 0:
        _refuse_camera(config, [k for k, v in (("elevation", elevation), ("azimuths", azimuths),
                                               ("orbit preset", preset)) if v is not None])
        return None
    preset = "default" if preset is None else preset
    if preset not in ORBIT_PRESETS:
        raise OrbitError("unknown orbit preset", expected=f"one of {sorted(ORBIT_PRESETS)}", got=repr(preset))
    if preset == "default":                 # per-frame elevations and azimuths allowed
        return make_orbit(num_frames, elevation=elevation, azimuths=azimuths,
                          elevation_range=cond.elevation_range_deg, default_elevation_deg=cond.default_elevation_deg,
                          names=names)
    if azimuths is not None:
        raise OrbitError(f"the {preset!r} orbit preset sets its own azimuths", expected=f"no {names[1]}",
                         got=f"{np.asarray(azimuths).size} azimuths")
    base = _angles(names[0], cond.default_elevation_deg if elevation is None else elevation, allow_scalar=True)
    if base.shape != (1,):
        raise OrbitError(f"the {preset!r} orbit preset takes one base {names[0]}", expected="a single value",
                         got=f"{base.size} values")
    return check_orbit(config, num_frames, preset_orbit(preset, num_frames, float(base[0]), cond), names=names)


def check_orbit(config: Any, num_frames: int, orbit: Orbit, names: Tuple[str, str] = NAMES) -> Orbit:
    """An Orbit made elsewhere (make_orbit, a preset, by hand) checked against an export, as it is: the export
    takes a camera (sv3d_p), the orbit has its frame count, and every elevation lies in its elevation_range_deg
    (an Orbit is finite, with one elevation and one azimuth per frame, by construction). Raises OrbitError."""
    cond = config.conditioner
    if cond.camera_embed_dim <= 0:
        _refuse_camera(config, ["an orbit"])
    if orbit.num_frames != _frame_count(num_frames):
        raise OrbitError(f"wrong number of frames in the orbit ({names[0]} / {names[1]})",
                         expected=f"{num_frames} (the export's frame count)", got=orbit.num_frames)
    _check_elevations(np.asarray(orbit.elevations_deg), cond.elevation_range_deg, names[0])
    return orbit


def _refuse_camera(config: Any, given) -> None:
    """sv3d_u has no camera conditioning: any camera input is an error (nothing given: nothing to refuse)."""
    if given:
        raise OrbitError(f"this export is {config.variant}, which has no camera conditioning; camera options "
                         f"cannot be used", expected="no elevation / azimuths / orbit preset",
                         got=", ".join(given), hint="use an sv3d_p export for a camera orbit")


def _check_elevations(elevations: np.ndarray, elevation_range: Tuple[float, float], name: str) -> None:
    """Every elevation (degrees) within the inclusive range; OrbitError naming the frames outside it."""
    lo, hi = (float(v) for v in elevation_range)
    outside = [(i, float(e)) for i, e in enumerate(elevations) if not lo <= e <= hi]
    if outside:
        raise OrbitError(f"{name} out of range", expected=f"degrees in [{lo:g}, {hi:g}]",
                         got=", ".join(f"frame {i}: {e:g}" for i, e in outside[:5])
                         + (f" (+{len(outside) - 5} more)" if len(outside) > 5 else ""))


def orbit_to_radians(orbit: Orbit, polar_offset_deg: float) -> Tuple[np.ndarray, np.ndarray]:
    """(polars_rad, azimuths_rad), each (T,) float64, exactly as the reference script computes them (SVS:87-94).

        polar_i   = deg2rad(polar_offset - elevation_i)
        azimuth_i = deg2rad((az_i - az_last) mod 360)      -> last frame 0, all in [0, 2 pi)
    The reference then runs ``azimuths_rad[:-1].sort()``, which sorts a temporary copy of a list slice and
    therefore changes nothing: user azimuths keep their order, and so do they here.
    """
    elev = np.asarray(orbit.elevations_deg, dtype=np.float64)
    az = np.asarray(orbit.azimuths_deg, dtype=np.float64)
    polars = np.deg2rad(float(polar_offset_deg) - elev)
    azimuths = np.deg2rad((az - az[-1]) % FULL_TURN_DEG)
    return polars, azimuths


def _frame_count(num_frames) -> int:
    if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, bool) or num_frames < 1:
        raise OrbitError("invalid frame count", expected="a positive integer", got=repr(num_frames))
    return int(num_frames)


def _angles(name: str, values, allow_scalar: bool) -> np.ndarray:
    """Angles in degrees as a 1-D float64 array; scalars become (1,) if allowed. Only numbers: a string such as
    '10' is refused, not parsed."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):                  # ragged nesting
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":                  # not str, bool, complex, None, ...
        raise OrbitError(f"{name} must be numbers", expected="degrees (int or float)", got=repr(values))
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        if not allow_scalar:
            raise OrbitError(f"{name} must be a sequence, one value per frame", got=f"the single value {values!r}")
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise OrbitError(f"{name} must be a flat list", expected="1-D", got=f"shape {arr.shape}")
    bad = [i for i, v in enumerate(arr) if not math.isfinite(v)]
    if bad:
        raise OrbitError(f"{name} must be finite", got=f"{arr[bad[0]]!r} at index {bad[0]}")
    return arr
