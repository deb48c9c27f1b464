"""manifest.json's runtime section and format_version guard (no graphs needed: a manifest without graph entries)."""
from __future__ import annotations

import json

import pytest

from configs import load_config
from runtime.errors import GraphError
from runtime.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest
from runtime.specs import ExportShapes


def _write(folder, config="sv3d_p_tiny"):
    cfg = load_config(config)
    Manifest.create(folder, cfg, ExportShapes(64, cfg.num_frames, 2 * cfg.num_frames, 14), {},
                    created="test").save()
    return cfg


def _edit(folder, fn):
    path = folder / MANIFEST_NAME
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_runtime_section_round_trip(tmp_path):
    cfg = _write(tmp_path)
    d = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert d["format_version"] == FORMAT_VERSION == 2 and "constants" not in d
    assert d["runtime"]["sampler"] == {"num_steps": 50, "sigma_min": 0.002, "sigma_max": 700.0, "rho": 7.0}
    m = Manifest.load(tmp_path)
    assert m.runtime == cfg.runtime_config()
    assert m.runtime.conditioner.dynamic_elevation_amplitude_deg == 20.0 and m.runtime.guider.triangle_period == 1.0
    assert m.runtime.latent_size(m.shapes.resolution) == 8 and m.runtime.has_camera


@pytest.mark.parametrize("version", [1, 3, None, "2"])
def test_other_format_versions_are_refused(tmp_path, version):
    _write(tmp_path)
    _edit(tmp_path, lambda d: d.update(format_version=version))
    with pytest.raises(GraphError) as e:
        Manifest.load(tmp_path)
    msg = str(e.value)
    assert "unsupported manifest format_version" in msg
    assert f"expected {FORMAT_VERSION}, got {version!r}" in msg and "export again" in msg


def test_edited_runtime_section_is_refused(tmp_path):
    _write(tmp_path)
    _edit(tmp_path, lambda d: d["runtime"]["sampler"].update(sigma_max=80.0))
    with pytest.raises(GraphError, match=r"runtime section differs from its config: sampler: .*'sigma_max': 80\.0"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("runtime"), "malformed manifest"),
    (lambda d: d["runtime"].pop("guider"), r"runtime: missing field\(s\) \['guider'\]"),
    (lambda d: d["runtime"].update(bogus=1), r"unknown field\(s\) \['bogus'\]"),
    (lambda d: d["runtime"]["guider"].update(kind="cosine"), "guider.kind must be one of"),
    (lambda d: d["runtime"].update(latent_factor="8"), "latent_factor: expected an integer, got str"),
])
def test_malformed_runtime_section_names_the_field(tmp_path, edit, message):
    _write(tmp_path, "sv3d_u_tiny")
    _edit(tmp_path, edit)
    with pytest.raises(GraphError, match=message):
        Manifest.load(tmp_path)
