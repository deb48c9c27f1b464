"""The package installed (pyproject.toml): the command lines work from any folder, and the base install (the
runtime only: requirements-runtime.txt) runs an existing export end to end with MindSpore, ONNX and PyYAML absent.
Then the runtime's own test modules run there, as a user's install would run them: on the toy exports
(tests/toy_graphs.py, written by this process, which has onnx), with pytest and PyYAML (the tests read the bundled
YAML configs) added as test tools.

Each test installs a copy of the tracked tree (so no build/ or *.egg-info is written into the checkout) into a
fresh venv and runs everything from a folder that holds no project code, without PYTHONPATH.

Marked `install`: the base install pip-installs from the package index (about a minute with a warm cache), so it
runs in the full tier (CI), not the default one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

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
COMMANDS = (["-m", "runtime"], ["-m", "export"], ["-m", "demo"])
SCRIPTS = ("sv3d-run", "sv3d-export", "sv3d-demo")


def _du_mb(path) -> float:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _source_copy(dest: Path) -> Path:
    """The files git tracks (and the untracked ones it does not ignore) copied to `dest`."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _venv(path: Path, *flags: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", *flags, str(path)], check=True, timeout=300)
    return path / "bin"


def _pip(bin_dir: Path, *args: str) -> None:
    pip = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          *args], env=_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]


def _run(bin_dir: Path, args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = [str(bin_dir / "python")] + list(args) if args[0].startswith("-") else [str(bin_dir / args[0])] + args[1:]
    return subprocess.run(exe, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _assert_help_works_here(bin_dir: Path, cwd: Path) -> None:
    for args in COMMANDS + tuple([s] for s in SCRIPTS):
        r = _run(bin_dir, list(args) + ["--help"], cwd)
        assert r.returncode == 0 and "usage:" in r.stdout, (args, r.stdout[-2000:], r.stderr[-2000:])


def test_editable_install_runs_the_commands_from_any_folder(tmp_path):
    """`pip install -e .` (the README's install, here without dependencies, over this environment's): the three
    commands and their console scripts from a folder that holds no project code."""
    src = _source_copy(tmp_path / "src")
    bin_dir = _venv(tmp_path / "venv", "--system-site-packages")
    _pip(bin_dir, "--no-deps", "-e", str(src))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _assert_help_works_here(bin_dir, elsewhere)
    where = _run(bin_dir, ["-c", "import runtime, export, demo; print(runtime.__file__, export.__file__)"], elsewhere)
    assert where.returncode == 0 and where.stdout.split() == [str(src / "runtime" / "__init__.py"),
                                                             str(src / "export" / "__init__.py")], where


def test_base_install_runs_an_export_without_the_export_stack(toy_exports, tmp_path):
    """`pip install .` with no extra: what a user running an existing export installs."""
    src = _source_copy(tmp_path / "src")
    bin_dir = _venv(tmp_path / "venv")
    _pip(bin_dir, str(src))
    print(f"\nruntime-only venv: {_du_mb(tmp_path / 'venv'):.0f} MB")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # the packages the runtime must not need are really absent (no system site packages leak in)
    probe = ("import importlib.util, json, sys; "
             f"print(json.dumps([sys.prefix, [m for m in {ABSENT!r} if importlib.util.find_spec(m)]]))")
    out = _run(bin_dir, ["-c", probe], elsewhere)
    prefix, present = json.loads(out.stdout)
    assert prefix == str(tmp_path / "venv") and present == [], out.stdout + out.stderr

    _assert_help_works_here(bin_dir, elsewhere)

    # the toy export (written in this process's full install) run end to end by the runtime alone
    from runtime.sample_data import sample_image_path

    result = tmp_path / "out"
    run = _run(bin_dir, ["-m", "runtime", "--graphs", str(toy_exports()[0]), str(sample_image_path()), "-o",
                         str(result), "--steps", "2", "--backend", "onnxruntime", "--quiet"], elsewhere, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = result / "object"
    assert (folder / "object.mp4").stat().st_size > 0
    info = json.loads((folder / "info.json").read_text())
    assert info["backend"] == "onnxruntime" and info["num_steps"] == 2 and info["variant"] == "sv3d_u"

    # exporting needs the export extra: said in one line, nothing written
    for args, status in ((["-m", "export", "-c", "sv3d_u_tiny", "-k", "ckpt.safetensors", "-o", "graphs"], 2),
                         (["-m", "demo", "-o", "demo-out"], 1)):
        r = _run(bin_dir, args, elsewhere)
        assert r.returncode == status and "needs the export extra" in r.stderr, (args, r.stderr[-2000:])
        assert "Traceback" not in r.stderr and list(elsewhere.iterdir()) == [], r.stderr[-2000:]

    # the runtime's test modules in the same venv, on toy exports written here: no MindSpore, no onnx
    _pip(bin_dir, *[f"{tool}=={version(tool)}" for tool in TEST_TOOLS])
    work = tmp_path / "work"
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pytest.ini", work)
    toys = tmp_path / "toys"
    for config in TOY_CONFIGS:
        shutil.copytree(toy_exports(config)[0], toys / config)
    report = tmp_path / "junit.xml"
    # without CI: the oracle's parity tests belong to the full install (CI fails them where the oracle is missing)
    test_env = {k: v for k, v in _env().items() if k not in ("CI", "SV3D_ORACLE_DIR")}
    tests = subprocess.run([str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"--junitxml={report}", *[f"tests/{m}" for m in RUNTIME_TEST_MODULES]],
                           env={**test_env, TOY_EXPORTS_ENV: str(toys)}, cwd=work, capture_output=True, text=True,
                           timeout=TESTS_TIMEOUT_S)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    print(f"runtime tests in the runtime-only venv: {summary}")
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-3000:]
    outcomes = {c.get("name"): [e.tag for e in c if e.tag in ("failure", "error", "skipped")]
                for c in ET.parse(report).iter("testcase")}                 # [] = passed
    not_run = {name: outcomes.get(name, "not collected") for name in MUST_PASS if outcomes.get(name) != []}
    assert not not_run, f"expected to pass in the runtime-only venv, got: {not_run}"
