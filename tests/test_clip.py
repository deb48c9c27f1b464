"""CLIP image conditioning: the resize matrices, the preprocessing and the ViT against the official outputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from configs import load_config
from models.clip_preprocess import antialias_kernel, preprocess, resize_matrix
from tests.helpers import rel_l2

TOL = 1e-4           # oracle/README.md: fp32 implementation, every float key below 1e-4 relative L2
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model."


# ------------------------------------------------------------------------------------------ resize, numpy only


def _keys_kernel(x: float, a: float) -> float:
    """Keys' cubic convolution kernel W(x)."""
    x = abs(x)
    if x <= 1.0:
        return (a + 2.0) * x ** 3 - (a + 3.0) * x ** 2 + 1.0
    if x < 2.0:
        return a * x ** 3 - 5.0 * a * x ** 2 + 8.0 * a * x - 4.0 * a
    return 0.0


def _slow_kornia_resize(img: np.ndarray, out_h: int, out_w: int, align_corners: bool, antialias: bool,
                        a: float = -0.75) -> np.ndarray:
    """kornia.geometry.resize(bicubic) of one (H, W) channel, written as direct 2D loops.

    As kornia does it: once any axis shrinks, both axes are blurred (sigma floored at 0.001) with a 2D Gaussian
    over a reflect-padded copy; then every output pixel sums 4x4 border-clamped taps with W(dy) W(dx).
    """
    h, w = img.shape
    if antialias and max(h / out_h, w / out_w) > 1:
        sig = [max((h / out_h - 1) / 2, 0.001), max((w / out_w - 1) / 2, 0.001)]
        ks = [int(max(4 * s, 3)) for s in sig]
        ks = [k if k % 2 else k + 1 for k in ks]
        ry, rx = ks[0] // 2, ks[1] // 2
        gy = np.array([math.exp(-(i - ry) ** 2 / (2 * sig[0] ** 2)) for i in range(ks[0])])
        gx = np.array([math.exp(-(i - rx) ** 2 / (2 * sig[1] ** 2)) for i in range(ks[1])])
        kernel = np.outer(gy / gy.sum(), gx / gx.sum())
        padded = np.pad(img, ((ry, ry), (rx, rx)), mode="reflect")
        blurred = np.zeros_like(img)
        for y in range(h):
            for x in range(w):
                blurred[y, x] = np.sum(kernel * padded[y:y + ks[0], x:x + ks[1]])
        img = blurred
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            if align_corners:
                sy = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
                sx = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            else:
                sy = (i + 0.5) * h / out_h - 0.5
                sx = (j + 0.5) * w / out_w - 0.5
            y0, x0 = math.floor(sy), math.floor(sx)
            acc = 0.0
            for yy in range(y0 - 1, y0 + 3):
                for xx in range(x0 - 1, x0 + 3):
                    v = img[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)]
                    acc += _keys_kernel(sy - yy, a) * _keys_kernel(sx - xx, a) * v
            out[i, j] = acc
    return out


@pytest.mark.parametrize("in_hw,out_hw,align_corners,antialias", [
    ((40, 9), (7, 13), True, True),      # H shrinks 5.7x (9-tap blur), W grows (kornia blurs it with sigma 0.001)
    ((32, 12), (10, 5), True, True),     # 4 sigma = 4.4 -> even kernel size 4 made odd (5) on H
    ((11, 17), (23, 29), True, True),    # up-sampling only: no blur at all
    ((40, 9), (7, 13), False, True),
    ((40, 9), (7, 13), True, False),
])
def test_resize_matrix_matches_direct_loops(in_hw, out_hw, align_corners, antialias):
    img = np.random.default_rng(0).standard_normal(in_hw)
    kw = dict(align_corners=align_corners, antialias=antialias)
    got = resize_matrix(in_hw[0], out_hw[0], **kw) @ img @ resize_matrix(in_hw[1], out_hw[1], **kw).T
    want = _slow_kornia_resize(img, *out_hw, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_antialias_taps_at_576():
    # SV3D_REFERENCE.md §3.1 [run] with kornia 0.9.0: 576 -> 224 blurs with taps [0.235420, 0.529159, 0.235420]
    np.testing.assert_allclose(antialias_kernel(576, 224), [0.235420, 0.529159, 0.235420], atol=1e-6)


def test_resize_matrix_rows_sum_to_one_and_identity():
    m = resize_matrix(576, 224)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(resize_matrix(224, 224), np.eye(224), atol=1e-12)


def test_resize_matrix_rejects_bad_sizes():
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        resize_matrix(0, 224)


# (case, reference-key prefix, tiny model) of every stored CLIP reference
CLIP_CASES = [
    ("sv3d_u_64", "", "sv3d_u_tiny"),
    ("sv3d_p_64_default", "", "sv3d_p_tiny"),
    ("cond_576", "sv3d_u_tiny__", "sv3d_u_tiny"),     # 576 -> 224: the antialias blur is active
    ("cond_576", "sv3d_p_tiny__", "sv3d_p_tiny"),
]
PREPROCESSED_CASES = [c for c in CLIP_CASES if c[0] != "sv3d_p_64_default"]   # that case stores no such key


@pytest.mark.parametrize("case,prefix,model", PREPROCESSED_CASES)
def test_numpy_preprocess_matches_oracle(case_data, case, prefix, model):
    _, inputs, ref = case_data(case)
    c = load_config(model).clip
    got = preprocess(inputs["image_m11"], c.image_size, c.mean, c.std)
    assert rel_l2(got, ref[prefix + "clip_preprocessed"]) < TOL


# ------------------------------------------------------------------------------------------- the MindSpore Cell

ms = pytest.importorskip("mindspore")


pytestmark = pytest.mark.usefixtures("pynative")


_CELLS = {}


def _load_clip(oracle, model: str, size: int):
    """The tiny CLIP tower for `model` at input size `size`, loaded from the oracle checkpoint."""
    from models.checkpoint import CheckpointReader, loaded_component

    reader = CheckpointReader(oracle / model / "checkpoint.safetensors", load_config(model), ["clip"])
    return loaded_component(reader, "clip", input_size=size)


def _clip(oracle, model: str, size: int):
    key = (model, size)
    if key not in _CELLS:
        _CELLS[key] = _load_clip(oracle, model, size)
    return _CELLS[key]


@pytest.mark.parametrize("case,prefix,model", PREPROCESSED_CASES)
def test_cell_preprocess_matches_oracle(oracle, case_data, case, prefix, model):
    _, inputs, ref = case_data(case)
    image = inputs["image_m11"]
    got = _clip(oracle, model, image.shape[-1]).preprocess(ms.Tensor(image)).asnumpy()
    err = rel_l2(got, ref[prefix + "clip_preprocessed"])
    assert err < TOL, f"{case} {model}: preprocessing rel L2 {err:.3g}"


@pytest.mark.parametrize("case,prefix,model", CLIP_CASES)
def test_embedding_matches_oracle(oracle, case_data, case, prefix, model):
    _, inputs, ref = case_data(case)
    image = inputs["image_m11"]
    got = _clip(oracle, model, image.shape[-1])(ms.Tensor(image)).asnumpy()
    want = ref[prefix + "clip_embedding"]                      # (1, 1, output_dim): the conditioner's (b t) d
    err = rel_l2(got, want.reshape(want.shape[0], -1))
    assert err < TOL, f"{case} {model}: CLIP embedding rel L2 {err:.3g}"


def _names_and_shapes(cell):
    return {n: tuple(p.shape) for n, p in cell.parameters_and_names()}


def test_parameter_names_tiny(oracle):
    import json

    from models.clip import CLIPImageEncoder

    keys = json.loads((oracle / "sv3d_u_tiny" / "keys.json").read_text())
    want = {k[len(CLIP_PREFIX):]: tuple(s) for k, s in keys.items() if k.startswith(CLIP_PREFIX + "visual.")}
    assert _names_and_shapes(CLIPImageEncoder(load_config("sv3d_u_tiny").clip, 64)) == want


def test_parameter_names_full_size(oracle):
    from models.clip import CLIPImageEncoder

    tsv = oracle.parent / "sv3d_u.keys.tsv"
    rows = [line.rstrip("\n").split("\t") for line in tsv.read_text().splitlines()[1:]]
    want = {n[len(CLIP_PREFIX):]: tuple(int(s) for s in shape.split(",")) for n, shape, _ in rows
            if n.startswith(CLIP_PREFIX + "visual.")}
    assert len(want) == 392                                     # README_sv3d_keys.md: visual 392 tensors
    assert _names_and_shapes(CLIPImageEncoder(load_config("sv3d_u").clip, 576)) == want


def test_export_mindir_and_onnx(oracle, tmp_path):
    """Tiny CLIP (with its preprocessing) through MindIR + GraphCell and ONNX + onnxruntime, against eager."""
    ort = pytest.importorskip("onnxruntime")
    from mindspore import nn

    image = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    x = ms.Tensor(image)
    eager = _clip(oracle, "sv3d_u_tiny", 64)(x).asnumpy()

    # a fresh instance per export (MINDSPORE_NOTES.md: a second ONNX export of one instance fails)
    ms.export(_load_clip(oracle, "sv3d_u_tiny", 64), x, file_name=str(tmp_path / "clip"), file_format="MINDIR")
    got = nn.GraphCell(ms.load(str(tmp_path / "clip.mindir")))(x).asnumpy()
    assert rel_l2(got, eager) < TOL

    ms.onnx.export(_load_clip(oracle, "sv3d_u_tiny", 64), x, file_name=str(tmp_path / "clip.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "clip.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: image})[0]
    assert rel_l2(got, eager) < TOL
