"""Checks of a written graph file, made with the loaders users run: runtime.backends.

Each format is loaded by the runtime's backend for it (CHECK_BACKENDS), with the runtime's own session settings
and input checks: ONNX files in ONNX Runtime (graph optimisation level ALL, the fused form's com.microsoft ops
included), MindIR files in MindSpore's GraphCell. On top of what the runtime checks at load, the file's declared
inputs and outputs are compared with the spec field by field, and an ONNX file must pass ONNX's strict shape
inference (export/onnx_io.py); every difference is named in one ParityError. The parity gate then runs the
returned runner, inputs bound by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

from runtime.backends import BaseRunner, graph_input_name, load_file
from runtime.specs import GraphSpec
from .errors import ParityError

# graph format -> the runtime backend that checks it
CHECK_BACKENDS = {"onnx": "onnxruntime", "mindir": "mindspore", "mslite": "mslite"}
# formats whose files declare every input and output with its shape and dtype (checked exactly)
EXACT_IO_FORMATS = ("onnx", "mslite")


def _want(tensors) -> list:
    return [(t.name, tuple(t.shape), t.dtype) for t in tensors]


def io_problems(fmt: str, runner: BaseRunner, spec: GraphSpec) -> List[str]:
    """Differences between the inputs/outputs the file declares (runner.declared) and the spec ([] if none).

    ONNX and Lite's MindIR (mslite): names, shapes and dtypes of inputs and outputs, exactly. MindSpore's MindIR: inputs with the `<graph>:` prefix
    stripped, in order; the output count, and each output's shape and dtype where the file records them
    (MindSpore may write outputs without a shape, MINDSPORE_NOTES.md)."""
    if runner.declared is None:
        return [f"the {fmt} file's declared inputs and outputs cannot be read"]
    ins, outs = runner.declared
    if fmt in EXACT_IO_FORMATS:
        problems = []
        for what, got, want in (("inputs", ins, spec.inputs), ("outputs", outs, spec.outputs)):
            got, want = [(n, tuple(d) if d is not None else None, t) for n, d, t in got], _want(want)
            if got != want:
                problems.append(f"{what} {got} != spec {want}")
        return problems
    problems = []
    got = [(graph_input_name(n), d, t) for n, d, t in ins]
    if got != _want(spec.inputs):
        problems.append(f"inputs {got} != spec {_want(spec.inputs)}")
    if len(outs) != len(spec.outputs):
        problems.append(f"{len(outs)} outputs != spec's {len(spec.outputs)}")
    for (_, dims, dt), t in zip(outs, spec.outputs):
        if dims and (dims, dt) != (tuple(t.shape), t.dtype):
            problems.append(f"output {t.name}: file says {dims} {dt}, spec {tuple(t.shape)} {t.dtype}")
    return problems


def check_graph(fmt: str, name: str, model: Path, spec: GraphSpec, scratch: Path) -> BaseRunner:
    """Check `model` (graph `name` in format `fmt`) against its spec and load it with the runtime's backend for
    the format; returns the runner. Raises ParityError naming every difference, or why it does not load."""
    from . import onnx_io

    where = f"graph {name} ({fmt}, {Path(model).name})"
    # ONNX's strict shape inference first: a file whose ops disagree with its declared shapes (the padding trap)
    # is refused as such, whether or not an engine would still load it
    problems = onnx_io.shape_problems(Path(model), spec, scratch) if fmt == "onnx" and Path(model).is_file() else []
    if problems:
        raise ParityError(f"{where} does not match its spec:\n  " + "\n  ".join(problems))
    try:
        runner = load_file(model, spec, backend=CHECK_BACKENDS[fmt])
    except Exception as e:
        raise ParityError(f"{where} does not load in its engine ({CHECK_BACKENDS[fmt]}): "
                          f"{type(e).__name__}: {str(e).strip()[:800]}") from e
    problems = io_problems(fmt, runner, spec)
    if problems:
        raise ParityError(f"{where} does not match its spec:\n  " + "\n  ".join(problems))
    return runner


def engine_names(runner: BaseRunner) -> dict:
    """The input and output names as the engine declares them (for the export report)."""
    ins, outs = runner.declared or ([], [])
    return {"engine_inputs": [n for n, _, _ in ins], "engine_outputs": [n for n, _, _ in outs]}


def mindir_input_names(model: Path) -> List[str]:
    """The argument names of a MindIR file's inputs in file order (`<graph>:` stripped), as the runtime's MindSpore
    backend reads them; ParityError if the file cannot be read."""
    import mindspore as ms

    from runtime.backends.mindspore_backend import mindir_io

    io = mindir_io(ms, str(model))
    if io is None:
        raise ParityError(f"MindIR file {model} cannot be read")
    return [graph_input_name(n) for n, _, _ in io[0]]
