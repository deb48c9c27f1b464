"""Per-frame CFG against the official implementation (oracle cases sv3d_u_64, sv3d_p_64_default)."""
from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from configs.schema import GUIDERS
from runtime.guidance import apply_guidance, guidance_scales, split_cfg_batch
from tests.helpers import rel_l2

CASES = (("sv3d_u_64", "sv3d_u_tiny"), ("sv3d_p_64_default", "sv3d_p_tiny"))
TOL = 1e-6


def _scales(config_name: str, num_frames: int) -> np.ndarray:
    g = load_config(config_name).guider
    return guidance_scales(g.kind, num_frames, g.min_scale, g.max_scale)


@pytest.mark.parametrize("case,config_name", CASES)
def test_triangle_scales_bitwise(case_data, case, config_name):
    meta, _, ref = case_data(case)
    s = _scales(config_name, meta["num_frames"])
    assert s.dtype == np.float32
    np.testing.assert_array_equal(s, ref["guider_scale"])


def test_triangle_scales_published_values():
    """SV3D_REFERENCE.md §4.2: 1.00, 1.15, ..., 2.50 (frame 10), ..., 1.00."""
    s = guidance_scales("triangle", 21, 1.0, 2.5)
    want = np.concatenate([np.linspace(1.0, 2.5, 11), np.linspace(2.35, 1.0, 10)])
    np.testing.assert_allclose(s, want, atol=3e-7)
    assert s[0] == 1.0 and s[-1] == 1.0 and s[10] == 2.5
    assert guidance_scales("triangle", 1, 1.0, 2.5).tolist() == [1.0]


def test_linear_and_constant_scales():
    lin = guidance_scales("linear", 21, 1.0, 2.5)
    assert lin.dtype == np.float32 and lin[0] == 1.0 and lin[-1] == 2.5
    np.testing.assert_allclose(lin, np.linspace(1.0, 2.5, 21), atol=2.5e-7)
    assert np.all(np.diff(lin) > 0)
    const = guidance_scales("constant", 5, 1.0, 3.0)
    assert const.dtype == np.float32 and const.tolist() == [3.0] * 5
    assert set(GUIDERS) == {"triangle", "linear", "constant"}


def test_scales_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown guidance kind"):
        guidance_scales("cosine", 21, 1.0, 2.5)
    with pytest.raises(ValueError, match="num_frames"):
        guidance_scales("triangle", 0, 1.0, 2.5)
    with pytest.raises(ValueError, match="finite"):
        guidance_scales("linear", 3, 1.0, float("nan"))


@pytest.mark.parametrize("case,config_name", CASES)
@pytest.mark.parametrize("which", ("den_sigma0", "den_sigmamid"))
def test_apply_guidance_single_calls(case_data, case, config_name, which):
    meta, _, ref = case_data(case)
    t = meta["num_frames"]
    uc, c = split_cfg_batch(ref[f"{which}_out"], t)          # raw output is the CFG batch [uc ; c] of 2T
    out = apply_guidance(uc, c, _scales(config_name, t))
    assert out.dtype == np.float32 and out.shape == ref[f"{which}_guided"].shape
    assert rel_l2(out, ref[f"{which}_guided"]) < TOL


@pytest.mark.parametrize("case,config_name", CASES)
def test_apply_guidance_trajectory(case_data, case, config_name):
    meta, _, ref = case_data(case)
    t = meta["num_frames"]
    scales = _scales(config_name, t)
    for raw, guided in zip(ref["traj4_denoised_raw"], ref["traj4_denoised_guided"]):
        assert rel_l2(apply_guidance(*split_cfg_batch(raw, t), scales), guided) < TOL


def test_apply_guidance_frame_weights():
    uc = np.zeros((3, 1, 2, 2), np.float32)
    c = np.ones((3, 1, 2, 2), np.float32)
    out = apply_guidance(uc, c, np.array([1.0, 2.0, 0.5], np.float32))
    assert out[:, 0, 0, 0].tolist() == [1.0, 2.0, 0.5]


def test_guidance_rejects_mismatched_shapes():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        apply_guidance(a, np.zeros((2, 4), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="one scale per frame"):
        apply_guidance(a, a, np.ones(2, np.float32))
    with pytest.raises(ValueError, match="2 \\* num_frames = 6"):
        split_cfg_batch(np.zeros((5, 4)), 3)
