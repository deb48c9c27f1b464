"""The runtime-only install (requirements-runtime.txt): a fresh venv without system site packages runs an existing
export end to end, and MindSpore, ONNX and PyYAML are not importable in it.

Marked `install`: it pip-installs from the package index (about a minute with a warm cache), so it runs in the full
tier (CI), not the default one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.install

ABSENT = ("mindspore", "onnx", "yaml")        # the export / training stack the runtime must run without
INSTALL_TIMEOUT_S = 1200


def _du_mb(path) -> float:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def test_runtime_requirements_alone_run_an_export(toy_export, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                          str(REPO / "requirements-runtime.txt")], env=env, capture_output=True, text=True,
                         timeout=INSTALL_TIMEOUT_S)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    print(f"\nruntime-only venv: {_du_mb(venv):.0f} MB")

    # the packages the runtime must not need are really absent (no system site packages leak in)
    probe = ("import importlib.util, json, sys; "
             f"print(json.dumps([sys.prefix, [m for m in {ABSENT!r} if importlib.util.find_spec(m)]]))")
    out = subprocess.run([str(python), "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=120)
    prefix, present = json.loads(out.stdout)
    assert prefix == str(venv) and present == [], out.stdout

    # the toy export (written in this process's full install) run end to end by the runtime alone
    work = tmp_path / "work"                       # only runtime/ and configs/ of the repository: no export/ or models/
    work.mkdir()
    for package in ("runtime", "configs"):
        shutil.copytree(REPO / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    from runtime.sample_data import sample_image_path

    result = tmp_path / "out"
    run = subprocess.run([str(python), "-m", "runtime", "--graphs", str(toy_export[0]), str(sample_image_path()),
                          "-o", str(result), "--steps", "2", "--backend", "onnxruntime", "--quiet"],
                         env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = result / "object"
    assert (folder / "object.mp4").stat().st_size > 0
    info = json.loads((folder / "info.json").read_text())
    assert info["backend"] == "onnxruntime" and info["num_steps"] == 2 and info["variant"] == "sv3d_u"
