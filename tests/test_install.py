"""The runtime-only install (requirements-runtime.txt): a fresh venv without system site packages runs an existing
export end to end, and MindSpore, ONNX and PyYAML are not importable in it. Then the runtime's own test modules
run there, as a user's install would run them: on the toy exports (tests/toy_graphs.py, written by this process,
which has onnx), with pytest and PyYAML (the tests read the bundled YAML configs) added as test tools.

Marked `install`: it pip-installs from the package index (about a minute with a warm cache), so it runs in the full
tier (CI), not the default one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import version

import pytest

from tests.helpers import REPO
from tests.toy_graphs import TOY_CONFIGS, TOY_EXPORTS_ENV

pytestmark = pytest.mark.install

ABSENT = ("mindspore", "onnx", "yaml")        # the export / training stack the runtime must run without
INSTALL_TIMEOUT_S = 1200
TEST_TOOLS = ("pytest", "PyYAML")             # installed after the checks above, at this process's versions
# the runtime's test modules (their tests that need MindSpore, the oracle or the export package skip there)
RUNTIME_TEST_MODULES = ("test_backends.py", "test_cli.py", "test_faults.py", "test_pipeline.py", "test_manifest.py",
                        "test_sampling.py", "test_guidance.py", "test_orbits.py", "test_conditioning.py",
                        "test_preprocess.py")
# a few that must have run, not skipped: the toy export on ONNX Runtime through the API, the CLI and the faults
MUST_PASS = ("test_backend_runs_every_graph_like_numpy[onnxruntime]", "test_cli_writes_every_output",
             "test_runtime_interrupted_while_sampling[onnxruntime]",
             "test_sequential_memory_checks_every_graph_before_sampling")
TESTS_TIMEOUT_S = 900


def _du_mb(path) -> float:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def test_runtime_requirements_alone_run_an_export(toy_exports, tmp_path):
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
    run = subprocess.run([str(python), "-m", "runtime", "--graphs", str(toy_exports()[0]), str(sample_image_path()),
                          "-o", str(result), "--steps", "2", "--backend", "onnxruntime", "--quiet"],
                         env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = result / "object"
    assert (folder / "object.mp4").stat().st_size > 0
    info = json.loads((folder / "info.json").read_text())
    assert info["backend"] == "onnxruntime" and info["num_steps"] == 2 and info["variant"] == "sv3d_u"

    # the runtime's test modules in the same venv, on toy exports written here: no MindSpore, no onnx
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          *[f"{tool}=={version(tool)}" for tool in TEST_TOOLS]], env=env, capture_output=True,
                         text=True, timeout=INSTALL_TIMEOUT_S)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pytest.ini", work)
    toys = tmp_path / "toys"
    for config in TOY_CONFIGS:
        shutil.copytree(toy_exports(config)[0], toys / config)
    report = tmp_path / "junit.xml"
    # without CI: the oracle's parity tests belong to the full install (CI fails them where the oracle is missing)
    test_env = {k: v for k, v in env.items() if k not in ("CI", "SV3D_ORACLE_DIR")}
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                            *[f"tests/{m}" for m in RUNTIME_TEST_MODULES]],
                           env={**test_env, TOY_EXPORTS_ENV: str(toys)}, cwd=work, capture_output=True, text=True,
                           timeout=TESTS_TIMEOUT_S)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    print(f"runtime tests in the runtime-only venv: {summary}")
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-3000:]
    outcomes = {c.get("name"): [e.tag for e in c if e.tag in ("failure", "error", "skipped")]
                for c in ET.parse(report).iter("testcase")}                 # [] = passed
    not_run = {name: outcomes.get(name, "not collected") for name in MUST_PASS if outcomes.get(name) != []}
    assert not not_run, f"expected to pass in the runtime-only venv, got: {not_run}"
