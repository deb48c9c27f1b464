"""Input-image preprocessing: bit-exact against the official RGBA path, plus every loading path and error."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputImageError
from runtime.preprocess import (REMBG_THUMBNAIL_SIZE, foreground_bbox, load_image, load_rgba, preprocess_rgba,
                                uint8_to_m11)

M11_TOL = 1e-7


@pytest.fixture(scope="module")
def preprocess_ref(oracle):
    meta = json.loads((oracle / "preprocess" / "rgba_preprocess.json").read_text())
    with np.load(oracle / "preprocess" / "rgba_preprocess.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return meta, arrays


def _case_keys():
    ratios = ("none", "0.85")
    return [f"img64_rgba_ratio{r}_out{s}" for r in ratios for s in (576, 64)] + \
           [f"img128_rgba_ratio{r}_out{s}" for r in ratios for s in (576, 128)]


@pytest.mark.parametrize("key", _case_keys())
def test_rgba_preprocess_bit_exact(oracle, preprocess_ref, key):
    meta, ref = preprocess_ref
    m = meta[key]
    with Image.open(oracle / m["source"]) as im:
        rgba = np.asarray(im.convert("RGBA"))
    out = preprocess_rgba(rgba, size=m["out_size"], image_frame_ratio=m["image_frame_ratio"])
    assert list(out.bbox_xywh) == m["bbox_xywh"] and out.side_len == m["side_len"]
    assert out.rgb_uint8.dtype == np.uint8
    np.testing.assert_array_equal(out.rgb_uint8, ref[key])
    assert out.image_m11.dtype == np.float32 and out.image_m11.shape == ref[key + "_m11"].shape
    assert np.max(np.abs(out.image_m11 - ref[key + "_m11"])) <= M11_TOL


@pytest.mark.parametrize("key", ["img64_rgba_rationone_out64", "img128_rgba_ratio0.85_out576"])
def test_load_image_rgba_file_bit_exact(oracle, preprocess_ref, key):
    """Through the file loader: an RGBA file is used as it is (no background removal), as in the reference."""
    meta, ref = preprocess_ref
    m = meta[key]
    out = load_image(oracle / m["source"], size=m["out_size"], image_frame_ratio=m["image_frame_ratio"])
    np.testing.assert_array_equal(out.rgb_uint8, ref[key])
    assert np.max(np.abs(out.image_m11 - ref[key + "_m11"])) <= M11_TOL


def test_uint8_to_m11_matches_case_inputs(case_data):
    _, inputs, _ = case_data("sv3d_u_64")
    np.testing.assert_array_equal(uint8_to_m11(inputs["image_uint8"]), inputs["image_m11"])
    with pytest.raises(InputImageError, match=r"expected \(H, W, 3\) uint8"):
        uint8_to_m11(inputs["image_uint8"].astype(np.float32))


# ----------------------------------------------------------------------------------------------------------------
# geometry and edge cases


def _rgba(h, w, box=None, value=(200, 40, 10, 255)):
    arr = np.zeros((h, w, 4), np.uint8)
    if box is None:
        arr[...] = value
    else:
        x, y, bw, bh = box
        arr[y:y + bh, x:x + bw] = value
    return arr


def test_bbox_and_transparent_image(tmp_path):
    assert foreground_bbox(_rgba(10, 12, box=(3, 2, 5, 4))[..., 3]) == (3, 2, 5, 4)
    with pytest.raises(InputImageError, match="fully transparent.*alpha = 0 everywhere"):
        preprocess_rgba(np.zeros((8, 8, 4), np.uint8), size=8)
    p = tmp_path / "clear.png"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(p)
    with pytest.raises(InputImageError, match=r"fully transparent.*clear\.png"):
        load_image(p, size=8)


def test_object_wider_than_height_without_ratio():
    """The reference would fail here (canvas H x H narrower than the object); the canvas grows to fit it."""
    out = preprocess_rgba(_rgba(20, 40), size=40)
    assert out.side_len == 40 and out.bbox_xywh == (0, 0, 40, 20)
    rgb = out.rgb_uint8.astype(int)
    assert np.all(rgb[:8] == 255) and np.all(rgb[-8:] == 255)          # white bands above and below
    assert np.all(np.abs(rgb[12:28] - [200, 40, 10]) <= 1)               # the object, centred, full width


def test_ratio_sets_object_size():
    out = preprocess_rgba(_rgba(64, 64, box=(10, 20, 30, 20)), size=64, image_frame_ratio=0.5)
    assert out.side_len == 60                                           # int(30 / 0.5)
    with pytest.raises(InputImageError, match=r"invalid image_frame_ratio: expected None or a number in \(0, 1\]"):
        preprocess_rgba(_rgba(8, 8), size=8, image_frame_ratio=1.5)
    with pytest.raises(InputImageError, match="invalid output size"):
        preprocess_rgba(_rgba(8, 8), size=0)
    with pytest.raises(InputImageError, match=r"expected \(H, W, 4\) uint8"):
        preprocess_rgba(np.zeros((8, 8, 3), np.uint8), size=8)


# ----------------------------------------------------------------------------------------------------------------
# file loading: modes


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_grayscale_and_palette_modes(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (25, 1))
    p = _save(Image.fromarray(gray), tmp_path / "l.png")
    rgba = np.asarray(load_rgba(p, remove_background="none"))
    np.testing.assert_array_equal(rgba[..., 0], gray)
    np.testing.assert_array_equal(rgba[..., 2], gray)
    assert np.all(rgba[..., 3] == 255)

    mask = np.where(gray > 100, 255, 0).astype(np.uint8)
    la = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(mask)])
    p = _save(la, tmp_path / "la.png")
    rgba = np.asarray(load_rgba(p))                                    # alpha present: no rembg needed
    np.testing.assert_array_equal(rgba[..., 3], mask)

    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).convert("P")
    p = _save(pal, tmp_path / "p.png", transparency=0)
    rgba = np.asarray(load_rgba(p))
    assert rgba[0, 0, 3] == 0 and np.all(rgba.reshape(-1, 4)[1:, 3] == 255)
    p = _save(pal, tmp_path / "p_opaque.png")
    assert np.all(np.asarray(load_rgba(p, remove_background="none"))[..., 3] == 255)


def test_sixteen_bit_grayscale_is_scaled(tmp_path):
    vals = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    p = _save(Image.fromarray(vals), tmp_path / "g16.png")
    rgba = np.asarray(load_rgba(p, remove_background="none"))
    assert rgba[0, :, 0].tolist() == [0, 1, 128, 255]


def test_int32_grayscale_out_of_range(tmp_path):
    p = _save(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)), tmp_path / "i32.tif")
    with pytest.raises(InputImageError, match=r"outside the 16-bit range: expected values in \[0, 65535\], got"):
        load_rgba(p, remove_background="none")


def test_cmyk_is_converted(tmp_path):
    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))                   # pure red
    p = _save(cmyk, tmp_path / "c.tif")
    rgba = np.asarray(load_rgba(p, remove_background="none"))
    assert rgba[0, 0].tolist() == [255, 0, 0, 255]


def test_unsupported_mode(tmp_path):
    p = _save(Image.fromarray(np.ones((4, 4), np.float32)), tmp_path / "f.tif")
    with pytest.raises(InputImageError, match="unsupported image mode.*got 'F'"):
        load_rgba(p, remove_background="none")


def test_rgb_without_rembg_asks_for_it(tmp_path, monkeypatch):
    p = _save(Image.new("RGB", (8, 8), (10, 20, 30)), tmp_path / "rgb.jpg")
    monkeypatch.setitem(sys.modules, "rembg", None)                     # makes `import rembg` fail
    with pytest.raises(InputImageError, match="no alpha channel.*'rembg'.*remove_background='none'") as err:
        load_image(p, size=8)
    assert str(p) in str(err.value)
    with pytest.raises(InputImageError, match="background removal was requested"):
        load_rgba(tmp_path / "rgb.jpg", remove_background="rembg")
    out = load_image(p, size=8, remove_background="none")              # whole image as the object
    assert out.bbox_xywh == (0, 0, 8, 8) and out.rgb_uint8.shape == (8, 8, 3)


def _fake_rembg(monkeypatch, calls, fail=False):
    def remove(img, **kwargs):
        calls.append((img.mode, img.size, kwargs))
        if fail:
            raise RuntimeError("model download failed")
        arr = np.asarray(img).copy()
        arr[..., 3] = 0
        arr[1:-1, 2:-2, 3] = 255
        return Image.fromarray(arr)
    monkeypatch.setitem(sys.modules, "rembg", types.SimpleNamespace(remove=remove))


def test_rembg_path_like_reference(tmp_path, monkeypatch):
    calls = []
    _fake_rembg(monkeypatch, calls)
    p = _save(Image.new("RGB", (1000, 800), (10, 200, 30)), tmp_path / "big.png")
    out = load_image(p, size=64)
    mode, size, kwargs = calls[0]
    assert mode == "RGBA" and kwargs == {"alpha_matting": True}
    assert max(size) == REMBG_THUMBNAIL_SIZE[0] and size == (768, 614)  # thumbnail keeps the aspect ratio
    assert out.bbox_xywh == (2, 1, 764, 612)

    rgba_path = _save(Image.new("RGBA", (20, 20), (1, 2, 3, 255)), tmp_path / "rgba.png")
    load_rgba(rgba_path)                                                # auto: alpha present -> no rembg
    assert len(calls) == 1
    load_rgba(rgba_path, remove_background="rembg")                     # forced
    assert len(calls) == 2


def test_rembg_failure_is_typed(tmp_path, monkeypatch):
    _fake_rembg(monkeypatch, [], fail=True)
    p = _save(Image.new("RGB", (8, 8)), tmp_path / "rgb.png")
    with pytest.raises(InputImageError, match="background removal failed: model download failed"):
        load_rgba(p)


# ----------------------------------------------------------------------------------------------------------------
# file loading: bad files


def test_missing_directory_and_garbage(tmp_path):
    with pytest.raises(InputImageError, match="input image not found.*nope.png"):
        load_rgba(tmp_path / "nope.png")
    with pytest.raises(InputImageError, match="not a file: expected an image file, got a directory"):
        load_rgba(tmp_path)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputImageError, match="not an image"):
        load_rgba(garbage)
    with pytest.raises(InputImageError, match="invalid remove_background"):
        load_rgba(garbage, remove_background="maybe")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    full = _save(Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)), tmp_path / "full.png")
    data = full.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match="truncated or corrupt"):
        load_rgba(cut)


def test_pixel_limit(tmp_path):
    p = _save(Image.new("RGBA", (100, 60), (1, 2, 3, 255)), tmp_path / "big.png")
    with pytest.raises(InputImageError, match="image too large: expected at most 5000 pixels, got 100 x 60 = 6000"):
        load_image(p, size=8, max_pixels=5000)
    assert load_image(p, size=8, max_pixels=6000).rgb_uint8.shape == (8, 8, 3)


@pytest.mark.parametrize("limit", (4000, 2000))   # 6000 px: over the warning level, then over twice the limit
def test_pillow_decompression_bomb_guard(tmp_path, monkeypatch, limit):
    p = _save(Image.new("RGBA", (100, 60), (1, 2, 3, 255)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(InputImageError, match="decompression-bomb"):
        load_rgba(p)
