"""Sampler pieces against the official implementation's fp32 run (oracle cases sv3d_u_64, sv3d_p_64_default).

The Euler update is checked independently of any network: a fake denoiser hands back the reference's own guided
denoised prediction for each step, and the sampler must then reproduce the reference trajectory.
"""
from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from runtime.errors import GraphError
from runtime.sampling import edm_sigmas, edm_vscaling, initial_latent, linspace_f32, sample_euler
from tests.helpers import rel_l2

CASES = ("sv3d_u_64", "sv3d_p_64_default")
TOL = 1e-6


@pytest.fixture(scope="module")
def sampler_cfg():
    return load_config("sv3d_u_tiny").sampler


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("steps", (4, 50))
def test_edm_sigmas_bitwise(case_data, sampler_cfg, case, steps):
    _, _, ref = case_data(case)
    s = edm_sigmas(steps, sampler_cfg.sigma_min, sampler_cfg.sigma_max, sampler_cfg.rho)
    assert s.dtype == np.float32 and s.shape == (steps + 1,)
    np.testing.assert_array_equal(s, ref[f"sigmas_{steps}"])
    assert s[-1] == 0.0 and np.all(np.diff(s) < 0)


def test_edm_sigmas_rejects_bad_arguments(sampler_cfg):
    with pytest.raises(ValueError, match="num_steps"):
        edm_sigmas(0, sampler_cfg.sigma_min, sampler_cfg.sigma_max, sampler_cfg.rho)
    with pytest.raises(ValueError, match="sigma_min"):
        edm_sigmas(4, 1.0, 0.5, sampler_cfg.rho)
    with pytest.raises(ValueError, match="rho"):
        edm_sigmas(4, sampler_cfg.sigma_min, sampler_cfg.sigma_max, 0.0)


def test_linspace_f32_shape_and_endpoints():
    for n in (1, 2, 3, 21, 50, 101):
        v = linspace_f32(0.0, 1.0, n)
        assert v.dtype == np.float32 and v.shape == (n,)
        assert v[0] == 0.0 and (n == 1 or v[-1] == 1.0)
        # one rounding of the exact value: never more than 1 ulp from float64 linspace
        ref = np.linspace(0.0, 1.0, n)
        assert np.all(np.abs(v - ref) <= np.spacing(np.float32(1.0)))
    v = linspace_f32(1.0, 2.5, 21)
    assert v[0] == np.float32(1.0) and v[-1] == np.float32(2.5)


def test_edm_vscaling_reference_values(sampler_cfg):
    """SV3D_REFERENCE.md §4.1: at s0 = 700: c_in 1.42857e-3, c_out -0.999999, c_skip 2.04e-6, c_noise 1.63777;
    at s = 0.002: c_noise -1.55365."""
    s0 = edm_sigmas(4, sampler_cfg.sigma_min, sampler_cfg.sigma_max, sampler_cfg.rho)[0]
    c_skip, c_out, c_in, c_noise = edm_vscaling(s0)
    for got in (c_skip, c_out, c_in, c_noise):
        assert got.dtype == np.float32
    np.testing.assert_allclose(c_in, 1.42857e-3, rtol=1e-5)
    np.testing.assert_allclose(c_out, -0.999999, rtol=1e-6)
    np.testing.assert_allclose(c_skip, 2.04e-6, rtol=1e-3)
    np.testing.assert_allclose(c_noise, 1.63777, rtol=1e-5)
    np.testing.assert_allclose(edm_vscaling(np.float32(0.002))[3], -1.55365, rtol=1e-5)

    # the formulas, in float64, over the whole 50-step schedule (last sigma 0 excluded)
    s = edm_sigmas(50, sampler_cfg.sigma_min, sampler_cfg.sigma_max, sampler_cfg.rho)[:-1]
    d = s.astype(np.float64)
    want = (1 / (d ** 2 + 1), -d / np.sqrt(d ** 2 + 1), 1 / np.sqrt(d ** 2 + 1), 0.25 * np.log(d))
    for got, ref in zip(edm_vscaling(s), want):
        assert got.shape == s.shape
        np.testing.assert_allclose(got, ref, rtol=2e-7, atol=0)


def test_edm_vscaling_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        edm_vscaling(np.array([1.0, 0.0], dtype=np.float32))


@pytest.mark.parametrize("case", CASES)
def test_initial_latent(case_data, case):
    _, inputs, ref = case_data(case)
    x = initial_latent(inputs["latent_noise"], ref["sigmas_4"][0])
    assert x.dtype == np.float32
    assert rel_l2(x, ref["traj4_x"][0]) < TOL
    assert rel_l2(initial_latent(inputs["latent_noise"], ref["sigmas_50"][0]), ref["traj50_x"][0]) < TOL


@pytest.mark.parametrize("case", CASES)
def test_sample_euler_reproduces_4_step_trajectory(case_data, case):
    _, inputs, ref = case_data(case)
    sigmas = ref["sigmas_4"]
    seen, steps = [], []

    def denoiser(x, sigma):
        i = len(seen)
        seen.append((x.copy(), sigma))
        return ref["traj4_denoised_guided"][i]

    x0 = initial_latent(inputs["latent_noise"], sigmas[0])
    out = sample_euler(denoiser, x0, sigmas, callback=steps.append)

    assert out.dtype == np.float32 and out.shape == x0.shape
    assert rel_l2(out, ref["latents_4"]) < TOL
    assert len(seen) == 4 and [s["i"] for s in steps] == [0, 1, 2, 3]
    for i, (x_seen, sigma) in enumerate(seen):
        assert sigma == ref["traj4_sigma"][i]
        assert rel_l2(x_seen, ref["traj4_x"][i]) < TOL
        assert rel_l2(steps[i]["x"], ref["traj4_x"][i]) < TOL
        assert steps[i]["sigma"] == sigmas[i] and steps[i]["sigma_next"] == sigmas[i + 1]
        np.testing.assert_array_equal(steps[i]["denoised"], ref["traj4_denoised_guided"][i])
    np.testing.assert_array_equal(steps[-1]["x_next"], out)
    np.testing.assert_array_equal(x0, initial_latent(inputs["latent_noise"], sigmas[0]))   # input untouched


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("which", ("den_sigma0", "den_sigmamid"))
def test_sample_euler_single_steps_of_50(case_data, case, which):
    """The stored single denoiser calls at steps 0 and 25 of the 50-step run give the next trajectory point."""
    _, _, ref = case_data(case)
    i = int(ref[f"{which}_index"])
    sigmas = ref["sigmas_50"]
    assert ref[f"{which}_sigma"] == sigmas[i]
    out = sample_euler(lambda x, s: ref[f"{which}_guided"], ref["traj50_x"][i], sigmas[i:i + 2])
    assert rel_l2(out, ref["traj50_x"][i + 1]) < TOL


@pytest.mark.parametrize("case", CASES)
def test_sample_euler_reproduces_50_step_trajectory(case_data, case):
    """No guided denoised outputs are stored for the 50-step run, so each step's D is solved (in float64) from
    consecutive trajectory points; the fp32 sampler must then walk the same 50 points to the final latent."""
    _, inputs, ref = case_data(case)
    sigmas = ref["sigmas_50"]
    xs = np.concatenate([ref["traj50_x"], ref["latents_50"][None]]).astype(np.float64)
    s = sigmas.astype(np.float64)
    # x_{i+1} = x_i + (s_{i+1} - s_i) (x_i - D_i) / s_i   =>   D_i = x_i - (x_{i+1} - x_i) s_i / (s_{i+1} - s_i)
    denoised = [xs[i] - (xs[i + 1] - xs[i]) * s[i] / (s[i + 1] - s[i]) for i in range(50)]
    steps = []
    out = sample_euler(lambda x, sigma: denoised[len(steps)], initial_latent(inputs["latent_noise"], sigmas[0]),
                       sigmas, callback=steps.append)
    assert len(steps) == 50
    worst = max(rel_l2(st["x"], ref["traj50_x"][st["i"]]) for st in steps)
    assert worst < TOL
    assert rel_l2(out, ref["latents_50"]) < TOL


def test_sample_euler_rejects_wrong_denoiser_shape():
    x = np.zeros((2, 4, 3, 3), dtype=np.float32)
    with pytest.raises(GraphError, match=r"expected \(2, 4, 3, 3\), got \(4, 4, 3, 3\)"):
        sample_euler(lambda x_, s: np.zeros((4, 4, 3, 3), np.float32), x, np.array([2.0, 0.0], np.float32))


def test_sample_euler_rejects_bad_sigmas():
    x = np.zeros((1, 4, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 2"):
        sample_euler(lambda x_, s: x_, x, np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="> 0"):
        sample_euler(lambda x_, s: x_, x, np.array([1.0, 0.0, 0.0], np.float32))
