"""The mesh step (runtime/mesh) on objects whose truth is known, and its command lines.

Orbits of analytic shapes are rendered by benchmarks/mesh_scenes.py (a numpy sphere tracer whose cameras are built
from the words of the convention, not from runtime/mesh/cameras.py), reconstructed, and scored against the shapes'
signed distance functions: mean |SDF| of the vertices, coverage of the true surface, colours of each region.
128 px frames, a 96-voxel grid and 20k faces (benchmarks/mesh_scenes.py TEST_*) keep each shape to a few seconds;
the bounds are the issue's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("skimage", reason="the mesh step needs requirements-mesh.txt")
pytest.importorskip("trimesh", reason="the mesh step needs requirements-mesh.txt")
pytest.importorskip("fast_simplification", reason="the mesh step needs requirements-mesh.txt")

from benchmarks.mesh_scenes import (COLOUR_LEVELS, COVERAGE_BOUND, SDF_BOUND, SHAPES, TEST_FACES,  # noqa: E402
                                    TEST_REFINE, TEST_RESOLUTION, TEST_SIZE, render_orbit, score, write_scene)
from runtime.errors import OrbitError  # noqa: E402
from runtime.mesh.cameras import DEFAULT_DISTANCE, look_at, orbit_cameras  # noqa: E402
from runtime.mesh.cli import RANDOM_WEIGHTS_NOTE, main  # noqa: E402
from runtime.mesh.reconstruct import reconstruct  # noqa: E402
from runtime.mesh.views import LayoutError, object_masks, read_views  # noqa: E402
from runtime.orbits import CAMERA_CONVENTION, make_orbit  # noqa: E402
from runtime.outputs import TMP_PREFIX, write_result  # noqa: E402
from tests.helpers import REPO  # noqa: E402

SIZE, RESOLUTION, FACES = TEST_SIZE, TEST_RESOLUTION, TEST_FACES
REFINE_PASSES = TEST_REFINE
# share of a region's vertices recovered within COLOUR_LEVELS; the box's top-and-bottom region is the lowest (73 %):
# its bottom is seen only from at most 10 deg below, at grazing angles (the top alone: 90 %, the bottom 49 %)
COLOUR_SHARE = 0.7


@pytest.fixture(scope="module")
def orbits():
    """name -> (frames, elevations, azimuths), rendered once per module."""
    return {name: render_orbit(shape, SIZE) for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def reconstructions(orbits):
    """(name, convention, refine passes) -> Reconstruction, each made once per module."""
    made = {}

    def get(name, convention=CAMERA_CONVENTION, refine=REFINE_PASSES):
        key = (name, convention, refine)
        if key not in made:
            frames, el, az = orbits[name]
            cams = orbit_cameras(make_orbit(len(az), elevation=el.tolist(), azimuths=az.tolist()), SIZE, SIZE,
                                 convention=convention)
            made[key] = reconstruct(frames, cams, resolution=RESOLUTION, faces=FACES, refine_passes=refine)
        return made[key]

    return get


# --- cameras ---------------------------------------------------------------------------------------------------


def test_cameras_follow_the_convention():
    centres, rot = look_at([0.0, 0.0, 30.0], [0.0, 90.0, 0.0], DEFAULT_DISTANCE)
    np.testing.assert_allclose(centres[0], [0, 0, 2], atol=1e-12)            # azimuth 0: on +z
    np.testing.assert_allclose(centres[1], [2, 0, 0], atol=1e-12)            # 90: on +x (counter-clockwise from above)
    np.testing.assert_allclose(centres[2], [0, 1.0, np.sqrt(3)], atol=1e-12)  # elevation 30: above the x-z plane
    for r in rot:                            # orthonormal; right x up = -forward (OpenGL's camera looks down -z)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(np.cross(r[0], r[1]), -r[2], atol=1e-12)
    np.testing.assert_allclose(rot[:, 2], -centres / DEFAULT_DISTANCE, atol=1e-12)
    cams = orbit_cameras(make_orbit(2, elevation=0.0, azimuths=[0.0, 90.0]), 64, 64)
    cols, rows, depth = cams.project(np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]]))
    np.testing.assert_allclose([cols[0, 0], rows[0, 0]], [32, 32])           # the origin at the image centre
    assert cols[0, 1] > 32 and rows[0, 2] < 32                                # +x to the right, +y up, from +z
    assert cols[1, 1] == pytest.approx(32) and depth[1, 1] == pytest.approx(1.9, abs=1e-6)   # from +x: +x is near
    mirrored = orbit_cameras(make_orbit(1, elevation=0.0, azimuths=[90.0]), 64, 64, convention="y_up_cw")
    np.testing.assert_allclose(mirrored.centres[0], [-2, 0, 0], atol=1e-6)
    with pytest.raises(OrbitError, match="camera_convention"):
        orbit_cameras(make_orbit(1, elevation=0.0, azimuths=[0.0]), 64, 64, convention="z_up")


# --- reconstruction of known shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_reconstruction_recovers_the_shape(reconstructions, name):
    rec = reconstructions(name)
    s = score(SHAPES[name], rec.vertices, rec.colours)
    assert s["sdf"] <= SDF_BOUND, s                          # vertices on the surface
    assert s["coverage"] >= COVERAGE_BOUND, s                # the surface covered by vertices
    assert max(s["colour_median_error"]) <= 10, s            # each region's colour
    assert min(s["colour_recovered"]) >= COLOUR_SHARE, s
    assert len(rec.faces) <= FACES and set(rec.seconds) == {"masks", "carve", "refine", "surface", "colour"}


def test_colour_refinement_carves_the_crease(reconstructions):
    """The silhouettes leave the crease between the union's sphere (red) and box (blue) filled; the colour-
    consistency passes carve it: the true surface there gets covered."""
    hull = score(SHAPES["union"], *_vertices_colours(reconstructions("union", refine=0)))
    refined = score(SHAPES["union"], *_vertices_colours(reconstructions("union")))
    assert refined["coverage"] >= hull["coverage"] + 0.01 and refined["sdf"] < hull["sdf"], (hull, refined)


def test_wrong_azimuth_direction_degrades_the_asymmetric_shape(reconstructions):
    """The frames of the sphere-and-box union read as if their azimuths turned clockwise: the silhouettes no
    longer intersect in the object, so the reconstruction measurably degrades."""
    right = score(SHAPES["union"], *_vertices_colours(reconstructions("union")))
    wrong = score(SHAPES["union"], *_vertices_colours(reconstructions("union", convention="y_up_cw")))
    assert wrong["sdf"] > 3 * right["sdf"] and wrong["sdf"] > SDF_BOUND, (right, wrong)
    assert wrong["coverage"] < right["coverage"] - 0.3, (right, wrong)
    assert min(wrong["colour_recovered"]) < COLOUR_SHARE, (right, wrong)


def _vertices_colours(rec):
    return rec.vertices, rec.colours


def test_masks_fill_highlights_but_keep_openings(orbits):
    """A white highlight inside the object would carve a tunnel through the hull; the torus's hole must stay."""
    frames = orbits["sphere"][0][:1].copy()
    frames[0, 60:63, 60:63] = 255                                           # a 3x3 highlight on the sphere
    assert (frames[0] < 231).any(-1).sum() < object_masks(frames)[0].sum()   # filled
    assert object_masks(frames)[0, 61, 61]
    torus = orbits["torus"][0][:1]
    assert not object_masks(torus)[0, SIZE // 2, SIZE // 2]                 # the hole, seen from 20 deg above


def test_nothing_in_the_frames_is_a_clear_error():
    frames = np.full((3, 32, 32, 3), 255, np.uint8)
    cams = orbit_cameras(make_orbit(3, elevation=10.0, azimuths=[0, 120, 240]), 32, 32)
    with pytest.raises(Exception, match="no volume in common.*0 of 3 frames with foreground"):
        reconstruct(frames, cams, resolution=24, faces=500)


# --- command lines -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(SHAPES["union"], tmp_path_factory.mktemp("scene") / "union", 64)


def test_cli_writes_the_mesh_files(scene, tmp_path, capsys):
    import trimesh

    out = tmp_path / "m"
    args = [str(scene), "-o", str(out), "--resolution", "48", "--faces", "3000"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mesh.glb", "mesh.json", "mesh.obj", "preview.png"]
    glb = trimesh.load(out / "mesh.glb", force="mesh")
    obj = trimesh.load(out / "mesh.obj", force="mesh", process=False)
    assert 0 < len(glb.faces) <= 3000 and len(obj.vertices) == len(glb.vertices)
    colours = np.asarray(glb.visual.vertex_colors)[:, :3]
    assert (np.abs(colours.astype(int) - SHAPES["union"].colours[0]).max(axis=1) <= COLOUR_LEVELS).any()
    assert (np.abs(colours.astype(int) - SHAPES["union"].colours[1]).max(axis=1) <= COLOUR_LEVELS).any()
    record = json.loads((out / "mesh.json").read_text())
    assert record["faces"] == len(glb.faces) and record["cameras"]["fov_deg"] == 33.8
    assert main(args) == 0 and (tmp_path / "m_1" / "mesh.glb").is_file()     # never overwritten
    assert str(out) in capsys.readouterr().out


def test_cli_errors_exit_1_and_write_nothing(scene, tmp_path, capsys):
    assert main([str(tmp_path), "-o", str(tmp_path / "m")]) == 1
    assert "not a result folder" in capsys.readouterr().err
    assert main([str(scene), "-o", str(tmp_path / "m"), "--azimuths", "0", "90"]) == 1
    assert "wrong number of values for azimuths: expected 21 values, got 2 values" in capsys.readouterr().err
    assert main([str(scene), "-o", str(tmp_path / "m"), "--resolution", "5"]) == 1
    assert "invalid --resolution" in capsys.readouterr().err
    assert main([str(scene), "-o", str(tmp_path / "m"), "--fov", "200"]) == 1
    assert "invalid field of view" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    with pytest.raises(SystemExit) as e:                                     # usage error: argparse, 2
        main([str(scene), "--masks", "magic"])
    assert e.value.code == 2


def test_info_json_layouts(scene, tmp_path):
    import shutil

    folder = tmp_path / "r"
    shutil.copytree(scene, folder)
    info = json.loads((folder / "info.json").read_text())
    assert read_views(folder).source == "synthetic render"
    info.pop("orbit")
    (folder / "info.json").write_text(json.dumps(dict(info, variant="sv3d_u")))
    views = read_views(folder)                                               # sv3d_u: the fixed orbit
    assert views.source.startswith("sv3d_u fixed orbit") and views.orbit.elevations_deg[0] == 10.0
    (folder / "info.json").write_text(json.dumps(dict(info, variant="sv3d_p")))
    with pytest.raises(LayoutError, match="has no orbit"):
        read_views(folder)
    (folder / "frames" / "005.png").unlink()
    with pytest.raises(LayoutError, match="gaps"):
        read_views(folder)


def test_cli_interrupted_leaves_nothing(scene, tmp_path, monkeypatch, capsys):
    import runtime.mesh.write as write

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(write, "render_turntable", interrupt)                # Ctrl-C while the files are written
    assert main([str(scene), "-o", str(tmp_path / "m"), "--resolution", "32", "--faces", "500"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []                                    # no mesh folder, no staging folder


def test_write_result_records_the_sv3d_u_orbit_and_convention(tmp_path):
    frames = np.full((21, 8, 8, 3), 200, np.uint8)
    result = SimpleNamespace(frames_uint8=frames, input_image=SimpleNamespace(rgb_uint8=frames[0]), num_steps=1,
                             seed=0, guidance_scales=np.ones(21), orbit=None,
                             timings=SimpleNamespace(to_dict=lambda: {}))
    folder = write_result(result, tmp_path, "x")
    info = json.loads((folder / "info.json").read_text())
    assert info["camera_convention"] == CAMERA_CONVENTION
    assert info["orbit"]["source"].startswith("sv3d_u fixed orbit")
    assert info["orbit"]["elevations_deg"] == [10.0] * 21 and info["orbit"]["azimuths_deg"][-1] == 0.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_runtime_mesh_flag(toy_export, tmp_path):
    """python -m runtime --mesh: the mesh lands beside the video (toy random-weight model: a noise mesh)."""
    from runtime.cli import main as runtime_main
    from runtime.sample_data import sample_image_path

    out = tmp_path / "out"
    assert runtime_main(["--graphs", str(toy_export[0]), str(sample_image_path()), "-o", str(out), "--steps", "1",
                         "--backend", "onnxruntime", "--quiet", "--mesh"]) == 0
    assert sorted(p.name for p in (out / "object" / "mesh").iterdir()) == ["mesh.glb", "mesh.json", "mesh.obj",
                                                                          "preview.png"]


def test_module_runs_and_says_random_weights(scene, tmp_path):
    """python -m runtime.mesh as a process: a demo result (random weights) gets the note on stderr."""
    import shutil

    folder = tmp_path / "demo"
    shutil.copytree(scene, folder)
    info = json.loads((folder / "info.json").read_text())
    (folder / "info.json").write_text(json.dumps(dict(info, demo_random_weights=True)))
    run = subprocess.run([sys.executable, "-m", "runtime.mesh", str(folder), "--resolution", "32", "--faces", "500"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert RANDOM_WEIGHTS_NOTE in run.stderr and (folder / "mesh" / "mesh.glb").is_file()
    assert json.loads((folder / "mesh" / "mesh.json").read_text())["demo_random_weights"] is True
