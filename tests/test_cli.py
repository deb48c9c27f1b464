"""``python -m runtime`` end to end on toy exports (tests/toy_graphs.py), and every user-error path:
one message on stderr, non-zero exit, no traceback, no partial output."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.outputs import TMP_PREFIX
from runtime.sample_data import sample_image_path
from tests.helpers import REPO

T = 21
STEPS = "3"


@pytest.fixture(scope="module")
def toy_u(toy_export):
    return toy_export[0]


@pytest.fixture(scope="module")
def toy_p(toy_exports):
    return toy_exports("sv3d_p_tiny")[0]


def _files(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _expected_files(name: str):
    return sorted([f"{name}.mp4", f"{name}.gif", "contact_sheet.png", "input.png", "info.json"]
                  + [f"frames/{i:03d}.png" for i in range(T)])


def _assert_clean_failure(rc, capsys, out_dir: Path, match: str):
    err = capsys.readouterr().err
    assert rc == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and match in errors[0], err                    # progress lines may come before it
    assert "Traceback" not in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == [], "partial output left behind"


# ----------------------------------------------------------------------------------------------------------------
# success


def test_cli_writes_every_output(toy_u, tmp_path):
    import imageio.v2 as iio
    from PIL import Image

    out = tmp_path / "out"
    img = sample_image_path()
    cmd = [sys.executable, "-m", "runtime", "--graphs", str(toy_u), str(img), str(img), "-o", str(out),
           "--steps", STEPS, "--backend", "onnxruntime"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "step/s" in proc.stderr and "latency" in proc.stderr and "vae_decoder" in proc.stderr
    # the same stem twice: the second result gets a new numbered folder, nothing is overwritten
    assert sorted(p.name for p in out.iterdir()) == ["object", "object_1"]
    assert f"-> {out / 'object'}" in proc.stdout and f"-> {out / 'object_1'}" in proc.stdout
    folder = out / "object"
    assert _files(folder) == _expected_files("object")

    frames = np.stack([np.asarray(Image.open(folder / "frames" / f"{i:03d}.png")) for i in range(T)])
    assert frames.shape == (T, 64, 64, 3) and frames.dtype == np.uint8
    video = iio.mimread(folder / "object.mp4", format="FFMPEG")
    assert len(video) == T and video[0].shape == (64, 64, 3)
    gif = Image.open(folder / "object.gif")   # every frame, looping, at the default 10 fps
    assert gif.n_frames == T and gif.info["loop"] == 0 and gif.info["duration"] == 100
    sheet = np.asarray(Image.open(folder / "contact_sheet.png"))
    assert sheet.shape == (3 * 66 + 2, 7 * 66 + 2, 3)
    np.testing.assert_array_equal(sheet[2:66, 2:66], frames[0])
    inp = np.asarray(Image.open(folder / "input.png"))
    assert inp.shape == (64, 64, 3)
    # the last frame is the input image ((x/255*2-1 + 1)/2*255 truncates, so +-1)
    assert np.abs(frames[-1].astype(int) - inp.astype(int)).max() <= 1
    info = json.loads((folder / "info.json").read_text())
    assert info["backend"] == "onnxruntime" and info["num_steps"] == 3 and info["seed"] == 23
    assert info["variant"] == "sv3d_u" and len(info["timings"]["steps"]) == 3
    assert not [p for p in out.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("backend, flags", [("onnxruntime", []), ("mindspore", []),
                                           ("openvino", ["--precision", "f32", "--cache-dir", ""])])
def test_same_seed_twice_is_bit_identical(toy_export_for, tmp_path, capsys, backend, flags):
    out = tmp_path / "out"
    args = ["--graphs", str(toy_export_for(backend)[0]), str(sample_image_path()), "-o", str(out), "--steps", STEPS,
            "--seed", "3", "--backend", backend, *flags, "--quiet"]
    assert main(args) == 0 and main(args) == 0
    a, b = out / "object", out / "object_1"
    assert _files(a) == _files(b) == _expected_files("object")
    for rel in _files(a):
        if rel == "info.json":
            ia, ib = (json.loads((d / rel).read_text()) for d in (a, b))
            ia.pop("timings"), ib.pop("timings")
            assert ia == ib
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert capsys.readouterr().err == ""                                   # --quiet: no bar, no summary
    assert main([*args, "--seed", "4"]) == 0                               # the last --seed counts
    assert (out / "object_2" / "object.gif").read_bytes() != (a / "object.gif").read_bytes()


def test_camera_options_on_sv3d_p(toy_p, tmp_path):
    out = tmp_path / "out"
    args = ["--graphs", str(toy_p), str(sample_image_path()), "-o", str(out), "--steps", "1", "--quiet"]
    assert main(args + ["--elevation", "20", "--orbit", "dynamic"]) == 0
    info = json.loads((out / "object" / "info.json").read_text())
    assert info["orbit"]["elevations_deg"][-1] == 20.0 and max(info["orbit"]["elevations_deg"]) > 20.0
    azimuths = [str(a) for a in range(0, 360, 360 // T)][:T]
    assert main(args + ["--elevation"] + ["5"] * T + ["--azimuths"] + azimuths) == 0
    info = json.loads((out / "object_1" / "info.json").read_text())
    assert info["orbit"]["azimuths_deg"] == [float(a) for a in azimuths]


# ----------------------------------------------------------------------------------------------------------------
# user errors


def test_input_image_errors(toy_u, tmp_path, capsys):
    out = tmp_path / "out"
    good = sample_image_path()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    base = ["--graphs", str(toy_u), "-o", str(out), "--steps", "1"]
    for path, match in ((tmp_path / "missing.png", "input image not found"),
                        (corrupt, "not an image"),
                        (truncated, "truncated or corrupt")):
        # the good image comes first: every input is checked before anything is generated or written
        _assert_clean_failure(main(base + [str(good), str(path)]), capsys, out, match)


def test_export_folder_errors(toy_u, tmp_path, capsys):
    out = tmp_path / "out"
    img = str(sample_image_path())
    _assert_clean_failure(main(["--graphs", str(tmp_path / "nope"), img, "-o", str(out)]), capsys, out,
                          "graphs folder not found")
    broken = tmp_path / "broken"
    shutil.copytree(toy_u, broken)
    unet = broken / "onnx" / "unet.onnx"
    data = bytearray(unet.read_bytes())
    data[len(data) // 2] ^= 0x01
    unet.write_bytes(bytes(data))
    args = ["--graphs", str(broken), img, "-o", str(out), "--backend", "onnxruntime"]
    _assert_clean_failure(main(args), capsys, out, "does not match the manifest")
    (broken / "manifest.json").unlink()
    _assert_clean_failure(main(args), capsys, out, "holds no manifest.json")


def test_camera_flags_on_sv3d_u_are_refused(toy_u, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--graphs", str(toy_u), str(sample_image_path()), "-o", str(out)]
    for extra in (["--elevation", "20"], ["--azimuths"] + ["0"] * T, ["--orbit", "dynamic"]):
        _assert_clean_failure(main(base + extra), capsys, out, "sv3d_u, which has no camera conditioning")


def test_bad_orbit_values_on_sv3d_p(toy_p, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--graphs", str(toy_p), str(sample_image_path()), "-o", str(out)]
    for extra, match in ((["--elevation", "95"], "--elevation out of range"),
                         (["--elevation", "10", "20"],
                          "wrong number of values for --elevation: expected 1 or 21 values"),
                         (["--azimuths", "0", "90"], "wrong number of values for --azimuths: expected 21 values"),
                         (["--elevation", "nan"], "--elevation must be finite: got nan"),     # the flag, named
                         (["--orbit", "dynamic", "--elevation", "inf"], "--elevation must be finite: got inf"),
                         (["--azimuths"] + ["0"] * (T - 1) + ["nan"], "--azimuths must be finite: got nan"),
                         (["--orbit", "dynamic", "--azimuths"] + ["0"] * T, "sets its own azimuths")):
        _assert_clean_failure(main(base + extra), capsys, out, match)


def test_option_and_output_errors(toy_u, tmp_path, capsys):
    img = str(sample_image_path())
    out = tmp_path / "out"
    _assert_clean_failure(main([img, "-o", str(out)]), capsys, out, "no export given")
    _assert_clean_failure(main(["--graphs", str(toy_u), "-o", str(out)]), capsys, out, "no input image")
    _assert_clean_failure(main(["--graphs", str(toy_u), img, "-o", str(out), "--fps", "0"]), capsys, out,
                          "invalid --fps")
    _assert_clean_failure(main(["--graphs", str(toy_u), img, "-o", str(out), "--steps", "0"]), capsys, out,
                          "invalid --steps")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _assert_clean_failure(main(["--graphs", str(toy_u), img, "-o", str(blocker / "sub")]), capsys, out,
                          "cannot write to the output folder")
    _assert_clean_failure(main(["--graphs", str(toy_u), img, "-o", str(blocker)]), capsys, out,
                          "the output path exists and is not a folder")
    try:
        import mindspore_lite  # noqa: F401
    except ImportError:
        from runtime.backends import backend_available

        _assert_clean_failure(main(["--graphs", str(toy_u), img, "-o", str(out), "--backend", "mslite"]), capsys,
                              out, "backend 'mslite' reads mslite or mindir graphs, and the export at"
                              if backend_available("mslite")[0] else "backend 'mslite' is not available")
    with pytest.raises(SystemExit) as exc:                                 # argparse: usage error, exit 2
        main(["--graphs", str(toy_u), img, "--guider", "cosine"])
    assert exc.value.code == 2
    assert "invalid choice: 'cosine'" in capsys.readouterr().err


def test_failure_while_writing_leaves_no_partial_output(toy_u, tmp_path, capsys, monkeypatch):
    import runtime.outputs as outputs

    def broken_gif(path, frames, fps):
        Path(path).write_bytes(b"GIF8")                                      # something half-written ...
        raise OSError(28, "No space left on device")                        # ... then the disk fills up

    monkeypatch.setattr(outputs, "write_gif", broken_gif)
    out = tmp_path / "out"
    rc = main(["--graphs", str(toy_u), str(sample_image_path()), "-o", str(out), "--steps", "1", "--quiet"])
    _assert_clean_failure(rc, capsys, out, "No space left on device")


def test_existing_result_is_never_overwritten(toy_u, tmp_path):
    out = tmp_path / "out"
    (out / "object").mkdir(parents=True)
    (out / "object" / "keep.txt").write_text("mine")
    assert main(["--graphs", str(toy_u), str(sample_image_path()), "-o", str(out), "--steps", "1", "--quiet"]) == 0
    assert (out / "object" / "keep.txt").read_text() == "mine"
    assert _files(out / "object") == ["keep.txt"]
    assert _files(out / "object_1") == _expected_files("object")


def test_rgb_input_background_modes(toy_u, tmp_path, capsys):
    from PIL import Image

    rgb = tmp_path / "photo.jpg"
    Image.fromarray(np.full((80, 60, 3), 200, np.uint8)).save(rgb)
    out = tmp_path / "out"
    base = ["--graphs", str(toy_u), str(rgb), "-o", str(out), "--steps", "1", "--quiet"]
    try:
        import rembg  # noqa: F401
    except ImportError:
        _assert_clean_failure(main(base), capsys, out, "needs the 'rembg' package")
    assert main(base + ["--remove-background", "none"]) == 0
    assert _files(out / "photo") == _expected_files("photo")


@pytest.mark.parametrize("config", ["sv3d_u", "sv3d_p"])
def test_help_shows_the_official_defaults(config):
    """The help's "officially" values are those of the bundled official configs, read from their YAML files (the
    help itself is built from the schema's defaults, so a drift between the two shows here)."""
    from configs import load_config
    from runtime.cli import build_parser

    cfg = load_config(config)
    text = " ".join(build_parser().format_help().split())
    flags = [("--steps", cfg.sampler.num_steps), ("--seed", cfg.seed), ("--guider", cfg.guider.kind),
             ("--min-scale", f"{cfg.guider.min_scale:g}"), ("--max-scale", f"{cfg.guider.max_scale:g}")]
    if cfg.conditioner.camera_embed_dim > 0:
        flags.append(("--elevation", f"{cfg.conditioner.default_elevation_deg:g}"))
    for flag, value in flags:
        start = text.index(f"{flag} ", text.index("options:"))
        assert f"{value} officially" in text[start:start + 400], flag
