"""The import graph of the project's packages: no cycles, and the layering the README promises.

Every `import` statement is read from the source (module level and inside functions alike: a lazy import that
closes a loop is still a loop), resolved to a module of the repository, and the graph checked:
- no cycle among the modules of export/, runtime/, models/, configs/, benchmarks/ and demo/;
- configs/ imports nothing from the others: it is the bottom layer (and holds the root error, configs/errors.py);
- runtime/ imports nothing from models/, export/, benchmarks/ or demo/ (a runtime-only install has none of their
  dependencies);
- export/ imports nothing from benchmarks/, and nothing imports demo/ (the one place that joins export and runtime);
- each module of export/ and runtime/ imports on its own, in a fresh set of project modules, and plain
  `import export` loads no MindSpore and no ONNX.
No MindSpore needed except for the one subprocess that imports every module (skipped without it).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from tests.helpers import REPO

PACKAGES = ("configs", "models", "runtime", "export", "benchmarks", "demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    p = REPO.joinpath(*name.split("."))
    return (p / "__init__.py").is_file() or p.with_suffix(".py").is_file()


def imported_modules(path: Path) -> Set[str]:
    """The repository modules `path` imports anywhere in its body (`from pkg import name` counts as pkg.name
    when that is a module, else as pkg)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if is_module(f"{mod}.{a.name}") else mod)
    return {m for m in found if m.split(".")[0] in PACKAGES and is_module(m)}


def import_graph() -> Dict[str, Set[str]]:
    return {module_name(f): imported_modules(f) for pkg in PACKAGES for f in sorted((REPO / pkg).rglob("*.py"))}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), plus modules importing themselves."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def importers(graph: Dict[str, Set[str]], of: str, on: str) -> Dict[str, List[str]]:
    """{module of package `of`: the modules of package `on` it imports}, where any."""
    out = {}
    for m, deps in graph.items():
        bad = sorted(d for d in deps if d.split(".")[0] == on)
        if m.split(".")[0] == of and bad:
            out[m] = bad
    return out


def test_the_walker_sees_lazy_imports_and_cycles():
    graph = import_graph()
    assert "runtime.specs" in graph["export.options"]                     # a module-level import
    assert "export.checks" in graph["export.workers"]                     # one inside a function
    assert "runtime.backends.base" in graph["runtime.backends.onnxruntime_backend"]     # `from .base import`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]] and cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_runtime_imports_no_model_export_benchmark_or_demo_code():
    graph = import_graph()
    for other in ("models", "export", "benchmarks", "demo"):
        assert importers(graph, "runtime", other) == {}, other


def test_configs_is_the_bottom_layer():
    graph = import_graph()
    for other in PACKAGES[1:]:
        assert importers(graph, "configs", other) == {}, other


def test_nothing_imports_the_demo():
    graph = import_graph()
    assert {m: deps for m, deps in graph.items() if not m.startswith("demo") and
            any(d.split(".")[0] == "demo" for d in deps)} == {}
    assert {"export.api", "runtime.cli", "models.random_checkpoint"} <= graph["demo.cli"]


def test_export_imports_no_benchmark_code():
    assert importers(import_graph(), "export", "benchmarks") == {}


def test_each_module_imports_on_its_own():
    """Every module of export/, runtime/ and demo/ imported first, with no project module loaded before it (an import
    cycle that only bites in one order shows here); `import export` alone loads no MindSpore and no ONNX."""
    pytest.importorskip("mindspore")
    names = sorted(m for m in import_graph() if m.split(".")[0] in ("export", "runtime", "demo") and
                   not m.endswith("__main__"))
    script = f"""
import sys
names = {names!r}
packages = {PACKAGES!r}
import export
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"mindspore", "onnx", "onnxruntime"}})
if heavy:
    sys.exit(f"import export loaded {{heavy}}")
failed = []
for name in names:
    for m in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[m]
    try:
        __import__(name)
    except Exception as e:
        failed.append(f"{{name}}: {{type(e).__name__}}: {{e}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_mesh_step_imports_no_engine_and_no_mesh_library():
    """`import runtime` and `import runtime.mesh` load no MindSpore, no models/ or export/ code, and none of the
    optional mesh libraries (requirements-mesh.txt is imported by the functions that use it)."""
    script = """
import sys
import runtime, runtime.mesh, runtime.mesh.cli
loaded = sorted({m.split(".")[0] for m in sys.modules} &
                {"mindspore", "models", "export", "trimesh", "skimage", "scipy", "fast_simplification"})
sys.exit(f"loaded {loaded}" if loaded else 0)
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
