"""``python -m demo`` (demo/cli.py): a random-weight tiny model exported, then run; and ``python -m runtime --demo``
pointing at it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo.cli import main
from tests.helpers import REPO

T = 21


def _files(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _expected_files(name: str):
    return sorted([f"{name}.mp4", f"{name}.gif", "contact_sheet.png", "input.png", "info.json"]
                  + [f"frames/{i:03d}.png" for i in range(T)])


def test_demo_with_an_existing_export_says_weights_are_random(toy_export, tmp_path, capsys):
    """--graphs DIR holding an export: reused (no export), the banner before and after, info.json says so."""
    out = tmp_path / "out"
    assert main(["--graphs", str(toy_export[0]), "-o", str(out), "--steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "reusing the export" in err and err.count("weights are RANDOM") == 2
    assert _files(out / "object") == _expected_files("object")
    assert json.loads((out / "object" / "info.json").read_text())["demo_random_weights"] is True


def test_demo_checks_the_runtime_flags_before_exporting(tmp_path, capsys):
    """A flag python -m runtime refuses without an export is refused before the minute-long export starts, and
    leaves nothing."""
    out = tmp_path / "out"
    assert main(["--fps", "0", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "invalid --fps" in err and "exporting" not in err and "Traceback" not in err, err
    assert not out.exists()


def test_runtime_demo_flag_names_the_new_command(capsys):
    """`python -m runtime --demo` is a usage error (exit 2) that says where the demo went; the runtime never runs
    the exporter."""
    from runtime.cli import main as runtime_main

    with pytest.raises(SystemExit) as e:
        runtime_main(["--demo"])
    assert e.value.code == 2
    assert "python -m demo" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_exports_a_random_model_and_runs_it(tmp_path):
    """The README quickstart: `python -m demo` (random checkpoint -> export -> generate)."""
    out = tmp_path / "out"
    # the oneDNN cap in this process is the test session's own (set for MindSpore before it loaded), not a user's:
    # inherited as a user's value, it would also cap OpenVINO's oneDNN (no bf16 softmax under AVX2)
    from runtime.backends.onednn import ISA_ENV

    env = {k: v for k, v in os.environ.items() if k != ISA_ENV}
    proc = subprocess.run([sys.executable, "-m", "demo", "-o", str(out), "--steps", "2"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(out / "object") == _expected_files("object")
