"""Camera orbits (sv3d_p) against the official script's conversion (oracle inputs), plus validation paths."""
from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from runtime.errors import OrbitError
from runtime.orbits import ORBIT_PRESETS, Orbit, default_orbit, make_orbit, orbit_to_radians, preset_orbit


@pytest.fixture(scope="module")
def cond():
    return load_config("sv3d_p_tiny").conditioner


def test_default_orbit_matches_reference(case_data, cond):
    meta, inputs, _ = case_data("sv3d_p_64_default")
    orbit = default_orbit(meta["num_frames"], cond.default_elevation_deg)
    np.testing.assert_array_equal(orbit.elevations_deg, inputs["elevations_deg"])
    np.testing.assert_array_equal(orbit.azimuths_deg, inputs["azimuths_deg"])
    assert orbit.azimuths_deg[-1] == 0.0 and orbit.num_frames == 21
    polars, azimuths = orbit_to_radians(orbit, cond.polar_offset_deg)
    assert polars.dtype == np.float64 and azimuths.dtype == np.float64
    np.testing.assert_array_equal(polars, inputs["polars_rad"])
    np.testing.assert_array_equal(azimuths, inputs["azimuths_rad"])
    # make_orbit with nothing given is the same default orbit
    assert make_orbit(21, default_elevation_deg=cond.default_elevation_deg) == orbit


def test_custom_orbit_matches_reference(case_data, cond):
    """cond_576 stores only the radians of its custom orbit; its degrees (4 decimals) are recovered from them."""
    _, inputs, _ = case_data("cond_576")
    elevations = cond.polar_offset_deg - np.round(np.rad2deg(inputs["polars_rad"]), 4)
    azimuths = np.round(np.rad2deg(inputs["azimuths_rad"]), 4)
    for shift in (0.0, 37.25, -400.0):              # azimuths count relative to the last frame, mod 360
        orbit = make_orbit(21, elevation=elevations.tolist(), azimuths=(azimuths + shift).tolist(),
                           elevation_range=cond.elevation_range_deg)
        polars, az_rad = orbit_to_radians(orbit, cond.polar_offset_deg)
        np.testing.assert_allclose(polars, inputs["polars_rad"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(az_rad, inputs["azimuths_rad"], rtol=0, atol=1e-12)


def test_unsorted_azimuths_keep_their_order(cond):
    """The reference's ``azimuths_rad[:-1].sort()`` sorts a copy: user order is kept."""
    az = [90.0, 30.0, 270.0, 180.0]
    _, az_rad = orbit_to_radians(make_orbit(4, elevation=0.0, azimuths=az), cond.polar_offset_deg)
    np.testing.assert_allclose(np.rad2deg(az_rad), [270.0, 210.0, 90.0, 0.0], atol=1e-12)


def test_dynamic_preset(cond):
    base = cond.default_elevation_deg
    orbit = preset_orbit("dynamic", 21, base, cond)
    elev = np.asarray(orbit.elevations_deg)
    amplitude = cond.dynamic_elevation_amplitude_deg            # 20 deg in every bundled config
    assert amplitude == 20.0 and preset_orbit("dynamic", 21, base) == orbit   # the schema default is the same
    assert elev[-1] == base                                     # the input view keeps the base elevation
    assert np.isclose(elev.max(), base + amplitude, atol=0.5)
    assert np.isclose(elev.min(), base - amplitude, atol=0.5)
    assert len(set(np.round(elev, 6))) > 2                       # it does vary along the orbit
    assert orbit.azimuths_deg == default_orbit(21, base).azimuths_deg
    assert preset_orbit("default", 21, base) == default_orbit(21, base)
    assert set(ORBIT_PRESETS) == {"default", "dynamic"}
    with pytest.raises(OrbitError, match="elevation out of range"):
        preset_orbit("dynamic", 21, 80.0)                       # 80 + 20 > 90
    with pytest.raises(OrbitError, match="unknown orbit preset: expected one of"):
        preset_orbit("spiral", 21, base)
    wide = preset_orbit("dynamic", 21, base, cond.__class__(dynamic_elevation_amplitude_deg=40.0))
    assert np.isclose(max(wide.elevations_deg), base + 40.0, atol=1.0)   # the amplitude comes from the config


@pytest.mark.parametrize("kwargs,message", [
    (dict(elevation=[10.0] * 5), r"wrong number of values for elevation: expected 1 or 21 values, got 5 values"),
    (dict(elevation=10.0, azimuths=[0.0] * 20),
     r"wrong number of values for azimuths: expected 21 values, got 20 values"),
    (dict(elevation=10.0, azimuths=5.0), r"azimuths must be a sequence"),
    (dict(elevation=float("nan")), r"elevation must be finite: got nan at index 0"),
    (dict(elevation=10.0, azimuths=[0.0] * 20 + [float("inf")]), r"azimuths must be finite: got inf at index 20"),
    (dict(elevation=[10.0] * 20 + [95.0]),
     r"elevation out of range: expected degrees in \[-90, 90\], got frame 20: 95"),
    (dict(elevation=-91.0), r"elevation out of range.*frame 0: -91.*\(\+16 more\)"),
    (dict(elevation="high"), r"elevation must be numbers"),
    (dict(elevation=[[10.0] * 21]), r"must be a flat list: expected 1-D, got shape \(1, 21\)"),
    (dict(), r"no elevation given and no default elevation"),
])
def test_make_orbit_errors(kwargs, message):
    with pytest.raises(OrbitError, match=message):
        make_orbit(21, **kwargs)


def test_make_orbit_frame_count_and_range():
    with pytest.raises(OrbitError, match="invalid frame count: expected a positive integer, got 0"):
        make_orbit(0, elevation=10.0)
    with pytest.raises(OrbitError, match="invalid frame count"):
        make_orbit(2.5, elevation=10.0)
    # a narrower configured range is honoured, and its bounds are inclusive
    assert make_orbit(3, elevation=[-5.0, 0.0, 5.0], elevation_range=(-5.0, 5.0)).elevations_deg == (-5.0, 0.0, 5.0)
    with pytest.raises(OrbitError, match=r"expected degrees in \[-5, 5\]"):
        make_orbit(3, elevation=6.0, elevation_range=(-5.0, 5.0))


def test_orbit_dataclass_validates():
    with pytest.raises(OrbitError, match="one elevation and one azimuth per frame"):
        Orbit((10.0, 10.0), (0.0,))
    with pytest.raises(OrbitError, match="finite"):
        Orbit((float("nan"),), (0.0,))
    orbit = make_orbit(2, elevation=[0, 1], azimuths=[180, 0])
    assert isinstance(orbit.elevations_deg, tuple) and orbit.elevations_deg == (0.0, 1.0)
    with pytest.raises(AttributeError):
        orbit.azimuths_deg = (0.0, 0.0)                          # frozen


def test_an_orbit_given_whole_is_checked_as_it_is():
    """resolve_options keeps an Orbit it is given (checked against the export: camera, frame count, elevation
    range), instead of taking it apart into values and building it again."""
    from runtime.options import resolve_options
    from runtime.orbits import check_orbit, default_azimuths

    cfg = load_config("sv3d_p_tiny")
    orbit = Orbit(tuple(float(e) for e in np.linspace(-5, 30, 21)), tuple(float(a) for a in default_azimuths(21)))
    assert resolve_options(cfg, 21, orbit=orbit).orbit is orbit
    assert default_azimuths(21)[-1] == 0.0 and np.allclose(np.diff(default_azimuths(21)[:-1]), 360 / 21)
    with pytest.raises(OrbitError, match=r"wrong number of frames in the orbit .*expected 21 .*got 5"):
        check_orbit(cfg, 21, Orbit((10.0,) * 5, (0.0,) * 5))
    with pytest.raises(OrbitError, match=r"elevation out of range: expected degrees in \[-90, 90\], got frame 3: 95"):
        check_orbit(cfg, 21, Orbit((10.0,) * 3 + (95.0,) + (10.0,) * 17, (0.0,) * 21))
    with pytest.raises(OrbitError, match="sv3d_u, which has no camera conditioning"):
        check_orbit(load_config("sv3d_u_tiny"), 21, orbit)
