"""The options of one generation, checked once at the boundary and frozen.

    opts = resolve_options(manifest.runtime, num_frames=21, num_steps=50, elevation=20.0, preset="dynamic")
    pipe.generate(image, options=opts)           # or pipe.generate(image, num_steps=50, ...): resolved the same way

Every value a user gives (steps, seed, guider and scales, the sv3d_p orbit) is checked here and nowhere after, with
the names the caller uses for them (the Python API's ``num_steps``, the command line's ``--steps``); what follows
from them (the sigma schedule, the per-frame guidance scales, the camera angles) is computed here once too.
Defaults come from the export's config (RuntimeConfig: sampler, guider, seed, conditioner).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from configs.limits import LIMITS
from configs.schema import GUIDERS

from .errors import OrbitError, SV3DError
from .guidance import guidance_scales
from .option_names import API_NAMES, OptionNames
from .orbits import Orbit, build_orbit, check_orbit, orbit_to_radians
from .sampling import edm_sigmas


@dataclass(frozen=True)
class GenerationOptions:
    """Resolved, validated options of one generation (build with :func:`resolve_options`)."""
    num_steps: int
    seed: int                                   # used unless explicit noise is given
    guider: str
    min_scale: float
    max_scale: float
    orbit: Optional[Orbit]                      # sv3d_p only
    sigmas: np.ndarray = field(compare=False, repr=False)           # (num_steps + 1,) float32, EDM, 0 last
    scales: np.ndarray = field(compare=False, repr=False)           # (T,) float32 per-frame guidance
    polars_rad: Optional[np.ndarray] = field(default=None, compare=False, repr=False)     # (T,) sv3d_p
    azimuths_rad: Optional[np.ndarray] = field(default=None, compare=False, repr=False)   # (T,) sv3d_p

    def __post_init__(self) -> None:
        for a in (self.sigmas, self.scales, self.polars_rad, self.azimuths_rad):
            if a is not None:
                a.setflags(write=False)        # frozen all the way down


def resolve_options(config: Any, num_frames: int, *, num_steps: Optional[int] = None, seed: Optional[int] = None,
                    guider: Optional[str] = None, min_scale: Optional[float] = None,
                    max_scale: Optional[float] = None, orbit: Optional[Orbit] = None, elevation=None,
                    azimuths=None, preset: Optional[str] = None,
                    names: OptionNames = API_NAMES) -> GenerationOptions:
    """Check every option once against configs/limits.py and the export's config; None = the config's default.

    config: the export's RuntimeConfig (or an SV3DConfig). The orbit is either an ``Orbit`` (checked against this
    export: frame count, elevation range) or built here from elevation / azimuths / preset (runtime.orbits.
    build_orbit); sv3d_u refuses both. Raises SV3DError (OrbitError for the orbit).
    """
    steps = config.sampler.num_steps if num_steps is None else num_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= LIMITS.max_steps:
        raise SV3DError(f"invalid {names.steps}", expected=f"an integer in [1, {LIMITS.max_steps}]",
                        got=repr(steps), hint="the bounds are configs/limits.py")
    used_seed = config.seed if seed is None else seed
    if isinstance(used_seed, bool) or not isinstance(used_seed, (int, np.integer)) or used_seed < 0:
        raise SV3DError(f"invalid {names.seed}", expected="an integer >= 0", got=repr(used_seed))
    kind = config.guider.kind if guider is None else guider
    if kind not in GUIDERS:
        raise SV3DError(f"unknown {names.guider}", expected=f"one of {list(GUIDERS)}", got=repr(kind))
    lo = _scale(names.min_scale, config.guider.min_scale if min_scale is None else min_scale)
    hi = _scale(names.max_scale, config.guider.max_scale if max_scale is None else max_scale)
    if lo > hi:
        raise SV3DError("invalid guidance scales", expected=f"{names.min_scale} <= {names.max_scale}",
                        got=f"{names.min_scale} {lo:g} > {names.max_scale} {hi:g}")

    if orbit is not None:
        if elevation is not None or azimuths is not None or preset is not None:
            raise OrbitError("an Orbit and orbit values given together",
                             expected="either orbit= or elevation / azimuths / preset", got="both")
        if not isinstance(orbit, Orbit):
            raise OrbitError("invalid orbit", expected="an Orbit (pipeline.make_orbit) or None",
                             got=type(orbit).__name__)
        resolved = check_orbit(config, num_frames, orbit, names=(names.elevation, names.azimuths))
    else:
        resolved = build_orbit(config, num_frames, elevation=elevation, azimuths=azimuths, preset=preset,
                               names=(names.elevation, names.azimuths))
    polars = azims = None
    if resolved is not None:
        polars, azims = orbit_to_radians(resolved, config.conditioner.polar_offset_deg)

    s = config.sampler
    return GenerationOptions(
        num_steps=int(steps), seed=int(used_seed), guider=kind, min_scale=lo, max_scale=hi, orbit=resolved,
        sigmas=edm_sigmas(int(steps), s.sigma_min, s.sigma_max, s.rho),
        scales=guidance_scales(kind, num_frames, lo, hi, config.guider.triangle_period),
        polars_rad=polars, azimuths_rad=azims)


def _scale(name: str, value) -> float:
    """A guidance scale: an int or float (a string such as '1' is refused, not parsed) in the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SV3DError(f"invalid {name}", expected="a number", got=repr(value))
    v = float(value)
    if not (math.isfinite(v) and 0 <= v <= LIMITS.max_guidance_scale):
        raise SV3DError(f"invalid {name}", expected=f"a number in [0, {LIMITS.max_guidance_scale:g}]",
                        got=repr(value))
    return v


__all__ = ["API_NAMES", "GenerationOptions", "OptionNames", "resolve_options"]
