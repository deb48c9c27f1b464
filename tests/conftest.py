"""Shared fixtures: where the reference data lives, its cases, and the exports reused across modules (built once
per session). Plain helpers (rel_l2, REPO) are in tests/helpers.py, the toy export in tests/toy_graphs.py."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from runtime.backends.onednn import cap_onednn_isa  # noqa: E402
from tests.helpers import REPO
from tests.toy_graphs import MINDIR_TOY_FORMATS, TOY_EXPORTS_ENV, ToyExport, open_toy_export, write_toy_export

# MindSpore's oneDNN picks a reference 3x3 convolution on AVX-512 CPUs; capped at AVX2 it takes the jit gemm path
# (benchmarks/README.md section 3). Before MindSpore's first oneDNN op; only speed and float rounding change.
cap_onednn_isa()

ORACLE_ENV = "SV3D_ORACLE_DIR"
DEFAULT_ORACLE = REPO.parent / "shared" / "reference" / "oracle"
ORACLE_EXPORT_RESOLUTION = 64      # the oracle's 64 px cases (sv3d_u_64, sv3d_p_64_default)


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


@pytest.fixture(scope="session")
def toy_exports(tmp_path_factory):
    """toy_exports(config="sv3d_u_tiny", formats=("onnx",)) -> ToyExport (folder, numpy reference): the toy export of
    a tiny config (tests/toy_graphs.py), written once per session and kind. ONNX is written with onnx.helper (no
    MindSpore); MindIR (the mindspore backend) needs MindSpore and is skipped without it. Shared: a test that edits
    an export works on a copy.

    With $SV3D_TOY_EXPORTS set, the ONNX toy exports are read from <that folder>/<config> instead: the runtime-only
    venv of tests/test_install.py has no onnx, so its outer session writes them there."""
    made = {}

    def get(config: str = "sv3d_u_tiny", formats=("onnx",)) -> ToyExport:
        key = (config, tuple(formats))
        if key not in made:
            given = os.environ.get(TOY_EXPORTS_ENV)
            if given and key[1] == ("onnx",):
                made[key] = open_toy_export(Path(given) / config)
            else:
                if "mindir" in formats:
                    pytest.importorskip("mindspore", reason="the toy export's MindIR graphs are written by mindspore")
                pytest.importorskip("onnx", reason="the toy export's ONNX graphs are written with onnx.helper")
                folder = tmp_path_factory.mktemp(f"toy_{config}_{'_'.join(formats)}") / "export"
                made[key] = write_toy_export(folder, config, formats=formats)
        return made[key]

    return get


@pytest.fixture(scope="session")
def toy_export(toy_exports):
    """The sv3d_u_tiny toy export, ONNX only: what the runtime, backend, CLI and fault tests run on."""
    return toy_exports()


@pytest.fixture(scope="session")
def toy_mindir_export(toy_exports):
    """The sv3d_u_tiny toy export with MindIR graphs as well (the mindspore backend; needs MindSpore)."""
    return toy_exports(formats=MINDIR_TOY_FORMATS)


@pytest.fixture(scope="session")
def toy_export_for(toy_exports):
    """toy_export_for(backend) -> ToyExport: the sv3d_u_tiny toy export holding the graphs `backend` reads (ONNX,
    or MindIR as well for the MindSpore engines); skipped, naming why, where the backend is not installed."""
    from runtime.backends import backend_available, backend_format

    def get(backend: str) -> ToyExport:
        ok, why = backend_available(backend)
        if not ok:
            pytest.skip(f"backend {backend}: {why}")
        return toy_exports(formats=("onnx",) if backend_format(backend) == "onnx" else MINDIR_TOY_FORMATS)

    return get


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory) -> Path:
    """The session's export cache (benchmarks/exporting.py layout): one folder per config, shapes and formats."""
    return tmp_path_factory.mktemp("export_cache")


@pytest.fixture(scope="session")
def oracle_export(oracle, export_cache):
    """oracle_export(config) -> folder: the oracle's tiny checkpoint of `config` (sv3d_u_tiny, sv3d_p_tiny)
    exported at 64 px to MindIR and (fused) ONNX with the gate off, once per session and config, into
    `export_cache` (so benchmarks.exporting.ensure_export with these settings finds it). Shared by the tests that
    run an export (export tier); one that edits it works on a copy."""
    pytest.importorskip("mindspore", reason="exporting needs mindspore")
    from benchmarks.exporting import ensure_export

    def get(config: str) -> Path:
        return ensure_export(config, oracle / config / "checkpoint.safetensors", cache=export_cache,
                             resolution=ORACLE_EXPORT_RESOLUTION, parity="off")

    return get
