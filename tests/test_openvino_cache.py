"""OpenVINO's compiled-model cache must never hand a graph compiled at one precision to a load at another.

OpenVINO 2026.4's cache key leaves INFERENCE_PRECISION_HINT out: a bf16 compile of a UNet file that had been
compiled in f32 before (the int8 calibration does exactly that, and so does a user comparing precisions) loaded the
f32 blob and ran it 0.15 relative L2 away from a fresh bf16 compile. The backend now keeps one cache folder per
precision (openvino_backend.compile_properties).
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime import Manifest
from runtime.backends import RunOptions, load_graph


def _needs_bf16():
    pytest.importorskip("openvino")
    from runtime.backends.openvino_backend import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 (AMX / AVX512_BF16) for OpenVINO")


def _unet_out(folder, precision: str, cache_dir: str):
    manifest = Manifest.load(folder)
    runner = load_graph(manifest, "unet", backend="openvino",
                        options=RunOptions(precision=precision, cache_dir=cache_dir))
    feeds = manifest.entry("onnx", "unet").spec.example_inputs(seed=1)
    return runner, runner.run(feeds)["out"]


def test_each_precision_has_its_own_cache_folder(toy_export, tmp_path):
    pytest.importorskip("openvino")
    folder, _ = toy_export
    cache = tmp_path / "cache"
    runner, _ = _unet_out(folder, "f32", str(cache))
    assert not runner.cached
    assert [p.name for p in cache.iterdir()] == ["f32"] and list((cache / "f32").glob("*.blob"))
    runner, _ = _unet_out(folder, "f32", str(cache))
    assert runner.cached                                 # the cache still serves the same precision


@pytest.mark.export
def test_bf16_after_f32_is_not_served_the_f32_blob(oracle_export, tmp_path):
    _needs_bf16()
    folder = oracle_export("sv3d_u_tiny")
    _, fresh_bf16 = _unet_out(folder, "bf16", "")                  # no cache at all
    _, f32 = _unet_out(folder, "f32", str(tmp_path / "cache"))
    runner, bf16 = _unet_out(folder, "bf16", str(tmp_path / "cache"))
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))   # noqa: E731
    assert rel(f32, fresh_bf16) > 1e-4                 # the two precisions really differ on this graph
    assert rel(bf16, fresh_bf16) < 1e-6, f"bf16 from a cache that holds the f32 compile: {rel(bf16, fresh_bf16):.3g}"
    assert not runner.cached                           # compiled afresh into its own folder
