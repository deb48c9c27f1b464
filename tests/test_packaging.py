"""pyproject.toml against the tree: one description of the dependencies, every package and data file installed,
console scripts that exist. (Installing it for real: tests/test_install.py, the install tier.)"""
from __future__ import annotations

import importlib
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.helpers import REPO

tomllib = pytest.importorskip("tomllib")          # Python 3.11+

AGGREGATE = "requirements.txt"                     # `pip install -r` of the dev extra, as -r lines


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _extra_files(project: dict) -> dict:
    dynamic = project["tool"]["setuptools"]["dynamic"]
    files = {"": dynamic["dependencies"]["file"]}
    files.update({name: spec["file"] for name, spec in dynamic["optional-dependencies"].items()})
    return files


def _r_lines(path: Path) -> list:
    return [line.split(None, 1)[1] for line in path.read_text().splitlines() if line.startswith("-r ")]


def test_each_requirements_file_is_read_by_pyproject_and_lists_packages_only(project):
    """setuptools reads requirement lines only: an `-r` (or any option) in a file it reads would break the build."""
    files = _extra_files(project)
    read = {f for group in files.values() for f in group}
    on_disk = {p.name for p in REPO.glob("requirements*.txt")} - {AGGREGATE}
    assert read == on_disk, (read, on_disk)
    for name in read:
        options = [line for line in (REPO / name).read_text().splitlines() if line.strip().startswith("-")]
        assert options == [], (name, options)


def test_requirements_txt_is_the_dev_extra(project):
    """`pip install -r requirements.txt` (README, .ci/run) installs what `pip install -e '.[dev]'` does."""
    files = _extra_files(project)
    assert sorted(_r_lines(REPO / AGGREGATE)) == sorted(files[""] + files["dev"])
    everything = {f for group in files.values() for f in group}
    assert set(files["all"]) | set(files[""]) == everything


def test_every_package_is_installed_and_nothing_else(project):
    """Every folder of the installed packages that holds Python code is a package setuptools finds (an
    __init__.py), and the package list names exactly the top-level packages meant for users."""
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = sorted({name.split(".")[0] for name in include})
    assert tops == ["configs", "demo", "export", "models", "runtime"]
    for top in tops:
        for folder in [REPO / top] + [p for p in (REPO / top).rglob("*") if p.is_dir()]:
            if any(folder.glob("*.py")):
                assert (folder / "__init__.py").is_file(), folder
                dotted = ".".join(folder.relative_to(REPO).parts)
                assert any(fnmatch(dotted, pattern) for pattern in include), dotted


def test_every_data_file_is_package_data(project):
    """A tracked file in an installed package that is not Python is listed in package-data (else an install
    without the checkout would lack it: the configs' YAML, the sample image, the web page, the Lite shim)."""
    data = project["tool"]["setuptools"]["package-data"]
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "configs", "runtime", "export", "models", "demo"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.split()
    missing = []
    for name in tracked:
        path = Path(name)
        if path.suffix == ".py":
            continue
        covered = any(path.parts[:len(pkg.split("."))] == tuple(pkg.split(".")) and
                      fnmatch(str(path.relative_to(*pkg.split("."))), pattern)
                      for pkg, patterns in data.items() for pattern in patterns)
        if not covered:
            missing.append(name)
    assert missing == []


def test_console_scripts_name_functions_that_exist(project):
    scripts = project["project"]["scripts"]
    assert set(scripts) == {"sv3d-run", "sv3d-export", "sv3d-demo"}
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target
