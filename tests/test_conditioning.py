"""The UNet's vector conditioning against the official implementation (c_vector / uc_vector of every case)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from configs import load_config
from runtime.conditioning import timestep_embedding, vector_conditioning
from runtime.errors import OrbitError
from runtime.orbits import default_orbit, orbit_to_radians
from tests.helpers import rel_l2

TOL = 1e-6
ULP_NEAR_ONE = float(np.spacing(np.float32(1.0)))


def _check(got, ref):
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert rel_l2(got, ref) < TOL
    assert np.max(np.abs(got - ref)) <= ULP_NEAR_ONE          # at most one float32 ulp off (values in [-1, 1])


def test_timestep_embedding_layout():
    emb = timestep_embedding(np.array([0.0, 2.0]), 8, 10000)
    assert emb.shape == (2, 8) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])        # [cos | sin]
    freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
    np.testing.assert_allclose(emb[1], np.concatenate([np.cos(2 * freqs), np.sin(2 * freqs)]), atol=3e-7)
    odd = timestep_embedding(np.array([0.5]), 7, 10000)
    assert odd.shape == (1, 7) and odd[0, -1] == 0.0                        # zero column for odd widths
    np.testing.assert_array_equal(odd[:, :6], timestep_embedding(np.array([0.5]), 6, 10000))


@pytest.mark.parametrize("case,config_name", (("sv3d_u_64", "sv3d_u_tiny"), ("sv3d_p_64_default", "sv3d_p_tiny")))
def test_vector_matches_reference_64(case_data, case, config_name):
    meta, inputs, ref = case_data(case)
    cfg = load_config(config_name)
    camera = {}
    if cfg.has_camera:
        camera = dict(polars_rad=inputs["polars_rad"], azimuths_rad=inputs["azimuths_rad"])
    vec = vector_conditioning(cfg.conditioner, meta["num_frames"], cond_aug=float(inputs["cond_aug"]), **camera)
    _check(vec, ref["c_vector"])
    _check(vec, ref["uc_vector"])
    assert vec.shape[1] == cfg.unet.adm_in_channels


def test_vector_from_default_orbit(case_data):
    """Config defaults end to end: default orbit -> radians -> vector == the official sv3d_p default run."""
    meta, _, ref = case_data("sv3d_p_64_default")
    cond = load_config("sv3d_p_tiny").conditioner
    polars, azimuths = orbit_to_radians(default_orbit(meta["num_frames"], cond.default_elevation_deg),
                                        cond.polar_offset_deg)
    _check(vector_conditioning(cond, meta["num_frames"], polars_rad=polars, azimuths_rad=azimuths), ref["c_vector"])


@pytest.mark.parametrize("config_name", ("sv3d_u_tiny", "sv3d_p_tiny"))
def test_vector_matches_reference_576(case_data, config_name):
    """cond_576: the sv3d_p run uses a custom (non-default) orbit."""
    _, inputs, ref = case_data("cond_576")
    cfg = load_config(config_name)
    camera = {}
    if cfg.has_camera:
        camera = dict(polars_rad=inputs["polars_rad"], azimuths_rad=inputs["azimuths_rad"])
    vec = vector_conditioning(cfg.conditioner, cfg.num_frames, cond_aug=float(inputs["cond_aug"]), **camera)
    _check(vec, ref[f"{config_name}__c_vector"])
    _check(vec, ref[f"{config_name}__uc_vector"])


def test_vector_cond_aug_defaults_to_config(case_data):
    _, inputs, ref = case_data("sv3d_u_64")
    cond = load_config("sv3d_u_tiny").conditioner
    assert cond.cond_aug == float(inputs["cond_aug"])
    _check(vector_conditioning(cond, 21), ref["c_vector"])


def test_vector_camera_errors():
    cond_p = load_config("sv3d_p_tiny").conditioner
    cond_u = load_config("sv3d_u_tiny").conditioner
    angles = np.zeros(21)
    with pytest.raises(OrbitError, match="needs polars_rad and azimuths_rad.*azimuths_rad=missing"):
        vector_conditioning(cond_p, 21, polars_rad=angles)
    with pytest.raises(OrbitError, match=r"polars_rad has the wrong shape: expected \(21,\), got \(20,\)"):
        vector_conditioning(cond_p, 21, polars_rad=np.zeros(20), azimuths_rad=angles)
    with pytest.raises(OrbitError, match="azimuths_rad must be finite"):
        vector_conditioning(cond_p, 21, polars_rad=angles, azimuths_rad=np.full(21, np.nan))
    with pytest.raises(OrbitError, match="no camera conditioning"):
        vector_conditioning(cond_u, 21, polars_rad=angles, azimuths_rad=angles)
    with pytest.raises(ValueError, match="num_frames"):
        vector_conditioning(cond_u, 0)
