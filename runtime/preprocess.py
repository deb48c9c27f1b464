"""Input image -> the conditioning image SV3D expects (SVS:128-193; SV3D_REFERENCE.md §1).

The official RGBA path, reproduced bit for bit (tests/test_preprocess.py):
1. foreground = alpha > 0; tight bounding box (x, y, w, h) of it;
2. square transparent canvas of side ``int(max(w, h) / image_frame_ratio)``, or the image height H when no ratio
   is given; the box's pixels are pasted centred (``side // 2 - h // 2`` rows, ``side // 2 - w // 2`` columns);
3. LANCZOS resize of the RGBA canvas to ``size`` x ``size`` (Pillow resizes RGBA through premultiplied alpha);
4. white background ``rgb/255 * a + (1 - a)`` in float64, then ``(x * 255).astype(uint8)`` (truncation);
5. ``ToTensor() * 2 - 1`` in float32 -> (1, 3, size, size) in [-1, 1].

Edge case of the reference: with no ratio, an object wider than the image height does not fit the H x H canvas
(the reference's paste fails). We grow the canvas to ``max(H, w, h)`` so the whole object stays in frame;
wherever the reference works this is the same as H.

Images without alpha go through background removal (rembg, as the reference does) unless
``remove_background="none"``, which takes the whole image as the object. numpy is the only import at module
level; Pillow is imported inside the functions that need it.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

import numpy as np

from .errors import InputImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

F32 = np.float32

BACKGROUND_MODES = ("auto", "rembg", "none")
MAX_INPUT_PIXELS = 8192 * 8192          # decompression-bomb guard; below Pillow's own warning level (~89.5 MP)
REMBG_THUMBNAIL_SIZE = (768, 768)       # shrink before background removal (SVS:134)
UINT16_MAX = 65535
UINT8_MAX = 255
IMAGE_RANGE_TOLERANCE = 1e-3            # a float image_m11 may exceed [-1, 1] by float rounding only

# Pillow modes that carry an alpha channel, converted to RGBA; modes without one, converted to RGB.
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_RGB_MODES = ("RGB", "RGBX", "L", "1", "P", "CMYK", "YCbCr")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# What a corrupt or truncated file makes Pillow raise while decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


@dataclass(frozen=True)
class PreprocessedImage:
    """The conditioning image in the two forms the pipeline uses, plus where the object was found."""
    rgb_uint8: np.ndarray                   # (size, size, 3) uint8 on white (also what is saved as the input .jpg)
    image_m11: np.ndarray                   # (1, 3, size, size) float32 in [-1, 1]
    bbox_xywh: Tuple[int, int, int, int]    # foreground box in the source image
    side_len: int                           # side of the square canvas before the resize


# ----------------------------------------------------------------------------------------------------------------
# the deterministic RGBA -> conditioning-image path


def uint8_to_m11(rgb_uint8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1]: ToTensor (x / 255 in float32), then x * 2 - 1."""
    arr = np.asarray(rgb_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InputImageError("expected an RGB uint8 image", expected="(H, W, 3) uint8",
                              got=f"{arr.shape} {arr.dtype}")
    chw = (arr.astype(F32) / F32(UINT8_MAX)).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(chw * F32(2.0) - F32(1.0))


def foreground_bbox(alpha: np.ndarray) -> Tuple[int, int, int, int]:
    """Tight box (x, y, w, h) of the pixels with alpha > 0 (cv2.threshold(.., 0, ..) + boundingRect, SVS:140-143)."""
    rows = np.flatnonzero(np.any(alpha > 0, axis=1))
    cols = np.flatnonzero(np.any(alpha > 0, axis=0))
    if rows.size == 0:
        raise InputImageError("the image is fully transparent: no object to reconstruct",
                              expected="some pixels with alpha > 0", got="alpha = 0 everywhere")
    x, y = int(cols[0]), int(rows[0])
    return x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y


def _check_size_and_ratio(size: int, image_frame_ratio: Optional[float]) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputImageError("invalid output size", expected="a positive integer (pixels)", got=repr(size))
    if image_frame_ratio is not None and not (0.0 < float(image_frame_ratio) <= 1.0):
        raise InputImageError("invalid image_frame_ratio", expected="None or a number in (0, 1]",
                              got=repr(image_frame_ratio))


def preprocess_rgba(rgba: Union[np.ndarray, "PILImage.Image"], *, size: int,
                    image_frame_ratio: Optional[float] = None) -> PreprocessedImage:
    """Centre the object of an RGBA image on a square, resize it to ``size`` and put it on white (SVS:138-180).

    rgba: (H, W, 4) uint8 array or a Pillow RGBA image. image_frame_ratio: the fraction of the frame the object's
    longer side fills (None: canvas side = image height, the reference default).
    """
    from PIL import Image

    _check_size_and_ratio(size, image_frame_ratio)
    arr = np.asarray(rgba.convert("RGBA") if isinstance(rgba, Image.Image) else rgba)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
        raise InputImageError("expected an RGBA uint8 image", expected="(H, W, 4) uint8",
                              got=f"{arr.shape} {arr.dtype}")
    height = arr.shape[0]
    x, y, w, h = foreground_bbox(arr[..., 3])

    if image_frame_ratio is not None:
        side = int(max(w, h) / float(image_frame_ratio))           # SVS:144-149
    else:
        side = max(height, w, h)                                   # reference: H (see the module note)
    canvas = np.zeros((side, side, 4), dtype=np.uint8)             # transparent black (SVS:150)
    top, left = side // 2 - h // 2, side // 2 - w // 2             # SVS:151-155
    canvas[top:top + h, left:left + w] = arr[y:y + h, x:x + w]

    resized = Image.fromarray(canvas).resize((int(size), int(size)), Image.Resampling.LANCZOS)
    rgba01 = np.asarray(resized) / float(UINT8_MAX)                # float64, as the reference
    alpha = rgba01[..., 3:]
    rgb = rgba01[..., :3] * alpha + (1.0 - alpha)                  # white background (SVS:159-160)
    rgb_uint8 = (rgb * UINT8_MAX).astype(np.uint8)                 # truncation, not rounding (SVS:161)
    return PreprocessedImage(rgb_uint8=rgb_uint8, image_m11=uint8_to_m11(rgb_uint8), bbox_xywh=(x, y, w, h),
                             side_len=side)


# ----------------------------------------------------------------------------------------------------------------
# loading files


def _sixteen_bit_to_rgb(img: "PILImage.Image", path: str) -> "PILImage.Image":
    """16-bit (or 32-bit integer) grayscale -> 8-bit RGB, scaling 0..65535 onto 0..255 with rounding."""
    from PIL import Image

    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > UINT16_MAX):
        raise InputImageError("integer grayscale image outside the 16-bit range", path=path,
                              expected=f"values in [0, {UINT16_MAX}]", got=f"[{values.min()}, {values.max()}]")
    eight = (values * UINT8_MAX + UINT16_MAX // 2) // UINT16_MAX
    return Image.fromarray(eight.astype(np.uint8)).convert("RGB")


def _normalise_mode(img: "PILImage.Image", path: str) -> "PILImage.Image":
    """A loaded image as a new RGBA (it has alpha) or RGB (it has none) image."""
    mode = img.mode
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return img.convert("RGBA")
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(img, path)
    if mode in _RGB_MODES:
        return img.convert("RGB")
    raise InputImageError("unsupported image mode", path=path,
                          expected=f"one of {sorted(_ALPHA_MODES + _RGB_MODES + _SIXTEEN_BIT_MODES)}",
                          got=repr(mode))


def _remove_background(img: "PILImage.Image", path: str, requested: str) -> "PILImage.Image":
    """Shrink to fit 768 x 768 and let rembg predict the alpha, as the reference does (SVS:133-135)."""
    from PIL import Image

    try:
        from rembg import remove
    except ImportError:
        why = "background removal was requested" if requested == "rembg" else "the image has no alpha channel"
        raise InputImageError(f"{why}, and removing the background needs the 'rembg' package, which is not "
                              f"installed", path=path,
                              hint="pip install rembg; or give an RGBA image whose alpha marks the object; or set "
                                   "remove_background='none' to use the whole image as the object") from None
    small = img.copy()
    small.thumbnail(REMBG_THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
    try:
        out = remove(small.convert("RGBA"), alpha_matting=True)
    except Exception as err:                                        # rembg/onnxruntime failures, re-raised typed
        raise InputImageError(f"background removal failed: {err}", path=path) from err
    if not isinstance(out, Image.Image):
        out = Image.fromarray(np.asarray(out))
    return out.convert("RGBA")


def load_rgba(path: Union[str, os.PathLike], *, remove_background: str = "auto",
              max_pixels: int = MAX_INPUT_PIXELS) -> "PILImage.Image":
    """Open an image file and return it as RGBA whose alpha marks the object.

    remove_background:
      "auto"  -- images with alpha (RGBA, LA, palette with transparency, ...) are used as they are, as in the
                 reference; images without alpha go through rembg (an error tells how to proceed without it);
      "rembg" -- always run rembg, even when the image has alpha;
      "none"  -- never run rembg; an image without alpha is taken whole (alpha = 255 everywhere).
    max_pixels: larger images are refused before they are decoded (decompression-bomb guard).
    Raises InputImageError for a missing file, a non-image, a truncated/corrupt file, an image over
    ``max_pixels``, an unsupported mode, or a missing rembg.
    """
    from PIL import Image, UnidentifiedImageError

    if remove_background not in BACKGROUND_MODES:
        raise InputImageError("invalid remove_background", expected=f"one of {BACKGROUND_MODES}",
                              got=repr(remove_background))
    p = Path(path)
    if not p.exists():
        raise InputImageError("input image not found", path=p)
    if not p.is_file():
        raise InputImageError("input image path is not a file", path=p, expected="an image file",
                              got="a directory" if p.is_dir() else "not a regular file")
    with warnings.catch_warnings():
        # Pillow's own bomb check warns above Image.MAX_IMAGE_PIXELS and raises above twice that.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(p)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise InputImageError(f"image too large (decompression-bomb guard): {err}", path=p) from None
        except UnidentifiedImageError:
            raise InputImageError("not an image, or a format Pillow cannot read", path=p) from None
        except OSError as err:
            raise InputImageError(f"cannot open the image: {err}", path=p) from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise InputImageError("image too large", path=p, expected=f"at most {max_pixels} pixels",
                                  got=f"{width} x {height} = {width * height}")
        try:
            img.load()                                              # decode now: truncation shows up here
        except _DECODE_ERRORS as err:
            raise InputImageError(f"the image file is truncated or corrupt: {err}", path=p) from None
        if width == 0 or height == 0:
            raise InputImageError("empty image", path=p, expected="at least 1 x 1 pixels",
                                  got=f"{width} x {height}")
        norm = _normalise_mode(img, str(p))                         # a new image, valid after the file closes
    has_alpha = norm.mode == "RGBA"
    if remove_background == "rembg" or (remove_background == "auto" and not has_alpha):
        return _remove_background(norm.convert("RGB") if has_alpha and remove_background == "rembg" else norm,
                                  str(p), remove_background)
    return norm if has_alpha else norm.convert("RGBA")              # "none": alpha = 255, the whole image


def load_image(path: Union[str, os.PathLike], *, size: int, image_frame_ratio: Optional[float] = None,
               remove_background: str = "auto", max_pixels: int = MAX_INPUT_PIXELS) -> PreprocessedImage:
    """Read an image file and turn it into SV3D's conditioning image (see :func:`load_rgba`, :func:`preprocess_rgba`).

    size: output side in pixels (the config's ``resolution``, 576 officially); image_frame_ratio: the config's
    ``image_frame_ratio`` (None officially).
    """
    _check_size_and_ratio(size, image_frame_ratio)
    rgba = load_rgba(path, remove_background=remove_background, max_pixels=max_pixels)
    try:
        return preprocess_rgba(rgba, size=size, image_frame_ratio=image_frame_ratio)
    except InputImageError as err:
        if err.path is None:                                        # add the file to the message
            raise InputImageError(str(err), path=path) from None
        raise


# ----------------------------------------------------------------------------------------------------------------
# any image input -> the conditioning image of one export


ImageInput = Union[str, os.PathLike, np.ndarray, PreprocessedImage]


def prepare_image(config: Any, resolution: int, image: ImageInput, *, remove_background: str = "auto",
                  max_pixels: int = MAX_INPUT_PIXELS) -> PreprocessedImage:
    """The conditioning image from a file path, a PreprocessedImage, or an array: (1, 3, S, S) / (3, S, S) float
    in [-1, 1], (S, S, 3) uint8 RGB, or (H, W, 4) uint8 RGBA (centred and resized like a file).

    config: an SV3DConfig or RuntimeConfig (its image_frame_ratio). Files go through :func:`load_image` (alpha ->
    object, or background removal per ``remove_background``; refused over ``max_pixels``), resized to ``resolution``.
    """
    s = int(resolution)
    shape = (1, 3, s, s)
    if isinstance(image, PreprocessedImage):
        pre = image
    elif isinstance(image, (str, os.PathLike)):
        if remove_background not in BACKGROUND_MODES:
            raise InputImageError("invalid remove_background", expected=f"one of {BACKGROUND_MODES}",
                                  got=repr(remove_background))
        pre = load_image(image, size=s, image_frame_ratio=config.image_frame_ratio,
                         remove_background=remove_background, max_pixels=max_pixels)
    elif isinstance(image, np.ndarray):
        pre = _array_image(config, s, image)
    else:
        raise InputImageError("unsupported image input",
                              expected="a path, a PreprocessedImage or a numpy array", got=type(image).__name__)
    if pre.image_m11.shape != shape:
        raise InputImageError("conditioning image of the wrong size for this export", expected=shape,
                              got=pre.image_m11.shape)
    return pre


def _array_image(config: Any, s: int, arr: np.ndarray) -> PreprocessedImage:
    shape = (1, 3, s, s)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 4:
        return preprocess_rgba(arr, size=s, image_frame_ratio=config.image_frame_ratio)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return PreprocessedImage(arr, uint8_to_m11(arr), (0, 0, arr.shape[1], arr.shape[0]), arr.shape[0])
    if np.issubdtype(arr.dtype, np.floating) and arr.shape in (shape, shape[1:]):
        m11 = np.asarray(arr, dtype=F32).reshape(shape)
        if not np.all(np.isfinite(m11)):
            raise InputImageError("the image array has non-finite values")
        lo, hi = float(m11.min()), float(m11.max())
        if lo < -1.0 - IMAGE_RANGE_TOLERANCE or hi > 1.0 + IMAGE_RANGE_TOLERANCE:
            raise InputImageError("float image out of range", expected="values in [-1, 1] (x / 255 * 2 - 1)",
                                  got=f"[{lo:.4g}, {hi:.4g}]")
        rgb = np.clip((m11[0].transpose(1, 2, 0) + F32(1.0)) / F32(2.0), 0.0, 1.0) * UINT8_MAX
        return PreprocessedImage(rgb.astype(np.uint8), m11, (0, 0, s, s), s)
    raise InputImageError("unsupported image array",
                          expected=f"float {shape} or {shape[1:]} in [-1, 1], uint8 ({s}, {s}, 3) RGB, or uint8 "
                                   f"(H, W, 4) RGBA", got=f"{arr.dtype} {arr.shape}")
