"""Shared fixtures: where the reference data lives, and relative-L2 comparison."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from runtime.backends.onednn import cap_onednn_isa  # noqa: E402

# MindSpore's oneDNN picks a reference 3x3 convolution on AVX-512 CPUs; capped at AVX2 it takes the jit gemm path
# (benchmarks/README.md section 3). Before MindSpore's first oneDNN op; only speed and float rounding change.
cap_onednn_isa()

REPO = Path(__file__).resolve().parents[1]
ORACLE_ENV = "SV3D_ORACLE_DIR"
DEFAULT_ORACLE = REPO.parent / "shared" / "reference" / "oracle"


def oracle_dir() -> Path:
    return Path(os.environ.get(ORACLE_ENV, DEFAULT_ORACLE))


@pytest.fixture(scope="session")
def oracle() -> Path:
    """The reference data folder; skipped where absent, but a CI run must have it."""
    d = oracle_dir()
    if not (d / "cases").is_dir():
        msg = (f"reference data not found at {d} (set {ORACLE_ENV} to the folder holding cases/, images/, "
               f"sv3d_u_tiny/ ...)")
        if os.environ.get("CI"):
            pytest.fail(msg + " -- CI must run the parity tests")
        pytest.skip(msg)
    return d


@pytest.fixture(scope="module")
def pynative():
    """Eager (PyNative) MindSpore for the module's tests, restoring the previous mode afterwards."""
    ms = pytest.importorskip("mindspore")
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: got {a.shape}, reference {b.shape}")
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (den if den > 0 else 1.0))


@pytest.fixture(scope="session")
def case_data(oracle):
    """case_data(name) -> (case_json, inputs npz dict, reference npz dict), cached."""
    import json

    cache = {}

    def load(name: str):
        if name not in cache:
            d = oracle / "cases" / name
            with np.load(d / "inputs.npz") as f:
                inputs = {k: f[k] for k in f.files}
            with np.load(d / "reference.npz") as f:
                ref = {k: f[k] for k in f.files}
            cache[name] = (json.loads((d / "case.json").read_text()), inputs, ref)
        return cache[name]

    return load
