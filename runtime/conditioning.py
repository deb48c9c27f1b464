"""The SV3D conditioning of one image: the network inputs of the c and uc branches (:class:`Conditioning`), and
its parameter-free part, the ``vector`` input of the UNet.

SV3D's vector conditioning is a stack of ConcatTimestepEmbedderND outputs (ENC:917-933; SV3D_REFERENCE.md §3.3),
one sinusoidal embedding per scalar input, concatenated in embedder order:

    sv3d_u: vector_t = emb(cond_aug, cond_aug_embed_dim)                                   (T, D_aug)
    sv3d_p: vector_t = [emb(cond_aug, D_aug) | emb(polar_t, D_cam) | emb(azimuth_t, D_cam)] (T, D_aug + 2 D_cam)

The same vector serves the conditional and the unconditional branch (only crossattn/concat are zeroed for uc).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import numpy as np

from .errors import OrbitError

if TYPE_CHECKING:                                   # configs is stdlib-only, but keep the runtime import-light
    from configs.schema import ConditionerConfig

F32 = np.float32


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on for one image (SV3D_REFERENCE.md §3; ENC:157-161, 183-184).

    CLIP runs once on the clean image and the VAE encoder once on ``image + cond_aug * cond_noise``; the reference
    runs both twice and zeroes the uc outputs, which is the same at half the cost. Per branch:
        crossattn  c = embedding repeated T times (T, 1, D)       uc = zeros
        concat     c = latent repeated T times (T, C, h, w)       uc = zeros   (unscaled posterior mean)
        vector     (T, V), identical for c and uc (:func:`vector_conditioning`)
    """
    embedding: np.ndarray       # (1, D)  CLIP image embedding
    latent: np.ndarray          # (1, C, h, w)  VAE-encoder output of the noise-augmented image
    vector: np.ndarray          # (T, V)

    @property
    def num_frames(self) -> int:
        return int(self.vector.shape[0])

    @property
    def crossattn(self) -> np.ndarray:
        return np.repeat(self.embedding[:, None, :], self.num_frames, axis=0)        # (T, 1, D)

    @property
    def concat(self) -> np.ndarray:
        return np.repeat(self.latent, self.num_frames, axis=0)                       # (T, C, h, w)

    def branches(self) -> Dict[str, np.ndarray]:
        """Both branches under the reference's names: c_/uc_ crossattn, concat and vector."""
        ctx, cat = self.crossattn, self.concat
        return {"c_crossattn": ctx, "uc_crossattn": np.zeros_like(ctx), "c_concat": cat,
                "uc_concat": np.zeros_like(cat), "c_vector": self.vector, "uc_vector": self.vector}


def _transcendental(fn, x: np.ndarray, float32_math: bool) -> np.ndarray:
    """fn(x) for a float32 `x`: in float32 (numpy's float32 kernels) or in float64 rounded once to float32."""
    return fn(x) if float32_math else fn(x.astype(np.float64)).astype(F32)


def sinusoid_frequencies(dim: int, max_period: float, float32_math: bool = False) -> np.ndarray:
    """freqs_i = exp(-ln(max_period) * i / half), i = 0 .. half-1, half = dim // 2: (half,) float32, the exponent
    in float32 as torch computes it (DU:237-261); see timestep_embedding for `float32_math`."""
    half = int(dim) // 2
    exponent = F32(-math.log(max_period)) * np.arange(half, dtype=F32) / F32(half)
    return _transcendental(np.exp, exponent, float32_math)


def timestep_embedding(values, dim: int, max_period: float, float32_math: bool = False) -> np.ndarray:
    """Sinusoidal embedding of scalars, (N, dim) float32 = [cos(args) | sin(args)] (DU:237-261). The one
    description of it: the vector conditioning here, and in models/ the UNet's timestep frequencies and its
    frame-position constants.

        half     = dim // 2
        freqs_i  = exp(-ln(max_period) * i / half),  i = 0 .. half-1    (sinusoid_frequencies)
        args     = float32(values)[:, None] * freqs[None, :]            (float32 product)
    An odd ``dim`` gets a zero column appended, as in the reference. Values are used as given (no x1000).
    exp, cos and sin are evaluated in float64 and rounded once to float32; torch's float32 versions agree to
    within 1 ulp (in the oracle cases, 65 of 1344 camera-embedding entries differ by that ulp). `float32_math`
    evaluates them in float32 instead, as the models/ Cells' constants always have been (changing either would
    move the exported graphs or the conditioning by that ulp).
    """
    if int(dim) != dim or dim < 1:
        raise ValueError(f"timestep_embedding: dim must be a positive integer, got {dim!r}")
    t = np.asarray(values, dtype=np.float64).reshape(-1).astype(F32)     # torch: timesteps.float()
    freqs = sinusoid_frequencies(dim, max_period, float32_math)
    args = t[:, None] * freqs[None, :]
    emb = np.concatenate([_transcendental(np.cos, args, float32_math),
                          _transcendental(np.sin, args, float32_math)], axis=-1).astype(F32)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros((emb.shape[0], 1), dtype=F32)], axis=-1)
    return emb


def _per_frame(name: str, values, num_frames: int) -> np.ndarray:
    """A (T,) float64 vector of finite camera angles, or an OrbitError naming expected vs got."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != num_frames:
        raise OrbitError(f"{name} has the wrong shape", expected=f"({num_frames},)", got=arr.shape)
    if not np.all(np.isfinite(arr)):
        raise OrbitError(f"{name} must be finite", got=arr.tolist())
    return arr


def vector_conditioning(conditioner: "ConditionerConfig", num_frames: int, *, cond_aug: Optional[float] = None,
                        polars_rad: Optional[Sequence[float]] = None,
                        azimuths_rad: Optional[Sequence[float]] = None) -> np.ndarray:
    """The UNet's ``y`` input for one image, (num_frames, conditioner.vector_dim) float32.

    conditioner: ConditionerConfig (cond_aug, cond_aug_embed_dim, camera_embed_dim, max_period).
    cond_aug:    defaults to conditioner.cond_aug (SV3D forces 1e-5, SVS:70-81).
    polars_rad, azimuths_rad: (T,) camera angles (see runtime.orbits.orbit_to_radians); required when the
                 config has camera embeddings (sv3d_p: camera_embed_dim > 0), refused otherwise.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"vector_conditioning: num_frames must be a positive integer, got {num_frames!r}")
    num_frames = int(num_frames)
    aug = conditioner.cond_aug if cond_aug is None else cond_aug
    parts = [timestep_embedding(np.full(num_frames, aug, dtype=np.float64), conditioner.cond_aug_embed_dim,
                                conditioner.max_period)]
    if conditioner.camera_embed_dim > 0:
        if polars_rad is None or azimuths_rad is None:
            raise OrbitError("this model is camera-conditioned (sv3d_p) and needs polars_rad and azimuths_rad",
                             expected=f"two sequences of {num_frames} angles",
                             got=f"polars_rad={'missing' if polars_rad is None else 'given'}, "
                                 f"azimuths_rad={'missing' if azimuths_rad is None else 'given'}")
        for name, angles in (("polars_rad", polars_rad), ("azimuths_rad", azimuths_rad)):
            parts.append(timestep_embedding(_per_frame(name, angles, num_frames), conditioner.camera_embed_dim,
                                            conditioner.max_period))
    elif polars_rad is not None or azimuths_rad is not None:
        raise OrbitError("this model has no camera conditioning (sv3d_u); camera angles cannot be used",
                         expected="no polars_rad / azimuths_rad", got="camera angles",
                         hint="use an sv3d_p model for a camera orbit")
    return np.concatenate(parts, axis=1)
