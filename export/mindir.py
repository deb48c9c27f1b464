"""MindIR: write a graph with `mindspore.export`, read its declared inputs back, run it with `nn.GraphCell`.

File layout (MINDSPORE_NOTES.md): below 1 GB of parameters `mindspore.export` writes `<name>.mindir`; above, it
splits by itself into `<name>_graph.mindir` + `<name>_variables/data_0` and `mindspore.load` finds the folder.
Graph names never end in `_graph`, so a small graph is never saved under the `_graph.mindir` suffix that fails
to load.

Binding: a GraphCell takes its inputs by position. The MindIR names its inputs `<graph>:<argument>`, and the
export wrappers' arguments are the spec's input names, so `declared_io` checks that the file's inputs are the
spec's names in the spec's order; a runtime then binds by name by ordering its feeds like the file's inputs
(runtime/backends/mindspore_backend.py reads them back the same way).
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

EXT = ".mindir"
# mind_ir.proto TensorProto.DataType codes for the dtypes a spec may declare
MINDIR_DTYPES = {1: "float32", 10: "float16"}


def graph_files(folder: Path, name: str) -> Tuple[Path, List[Path]]:
    """(model file, every file) that `mindspore.export(file_name=folder/name)` wrote."""
    single = folder / f"{name}{EXT}"
    split = folder / f"{name}_graph{EXT}"
    variables = folder / f"{name}_variables"
    if split.is_file():
        files = [split] + sorted(p for p in variables.rglob("*") if p.is_file())
        return split, files
    if single.is_file():
        return single, [single]
    raise FileNotFoundError(f"mindspore.export wrote neither {single.name} nor {split.name} in {folder}")


def write(make_cell: Callable, spec, feeds: Dict[str, np.ndarray], folder: Path) -> Tuple[Path, List[Path]]:
    """Trace a fresh `make_cell()` on `feeds` and write spec.name's MindIR into `folder`; returns (model file,
    files). The Cell is released before returning."""
    import mindspore as ms

    folder.mkdir(parents=True, exist_ok=True)
    args = [ms.Tensor(feeds[n]) for n in spec.input_names]
    cell = make_cell()
    ms.export(cell, *args, file_name=str(folder / spec.name), file_format="MINDIR")
    del cell
    gc.collect()
    model, files = graph_files(folder, spec.name)
    normal_permissions(files)
    return model, files


def normal_permissions(files: List[Path]) -> None:
    """mindspore.export writes its files read-only for the owner (0400); make them ordinary files (0644 less the
    umask), like the ONNX files next to them, so a user can copy, replace or delete an export normally."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for f in files:
        os.chmod(f, 0o666 & ~umask)


def graph_cell(path: Path):
    """`nn.GraphCell` over a MindIR file (the MindIR's weights are loaded with it)."""
    import mindspore as ms
    from mindspore import nn

    return nn.GraphCell(ms.load(str(path)))


def _tensor_info(value) -> Tuple[Tuple[int, ...], str]:
    if not value.tensor:
        return (), "unknown"
    t = value.tensor[0]
    return tuple(int(d) for d in t.dims), MINDIR_DTYPES.get(int(t.data_type), f"code {int(t.data_type)}")


def declared_io(path: Path) -> Tuple[List[Tuple[str, Tuple[int, ...], str]], List[Tuple[str, Tuple[int, ...], str]]]:
    """([(name, dims, dtype)] inputs, [...] outputs) as the MindIR protobuf records them (names unstripped)."""
    import mindspore as ms

    proto = ms.load_mindir(str(path))
    ins = [(v.name,) + _tensor_info(v) for v in proto.graph.input]
    outs = [(v.name,) + _tensor_info(v) for v in proto.graph.output]
    return ins, outs


def argument_name(engine_name: str) -> str:
    """`<graph>:<argument>` -> `<argument>`."""
    return engine_name.rsplit(":", 1)[-1]


class Engine:
    """A MindIR file loaded with `mindspore.load` + `nn.GraphCell`, fed by name in the spec's order."""

    format = "mindir"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.inputs, self.outputs = declared_io(self.path)
        self.cell = graph_cell(self.path)

    def io_problems(self, spec) -> List[str]:
        """Differences between the file's declared inputs/outputs and the spec (empty when they agree)."""
        problems = []
        got = [(argument_name(n), d, t) for n, d, t in self.inputs]
        want = [(t.name, tuple(t.shape), t.dtype) for t in spec.inputs]
        if got != want:
            problems.append(f"inputs {got} != spec {want}")
        if len(self.outputs) != len(spec.outputs):
            problems.append(f"{len(self.outputs)} outputs != spec's {len(spec.outputs)}")
        for (name, dims, dt), t in zip(self.outputs, spec.outputs):
            # outputs may carry no shape (MINDSPORE_NOTES.md); check what is there
            if dims and (dims, dt) != (tuple(t.shape), t.dtype):
                problems.append(f"output {t.name}: file says {dims} {dt}, spec {tuple(t.shape)} {t.dtype}")
        return problems

    def run(self, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        import mindspore as ms

        names = [argument_name(n) for n, _, _ in self.inputs]
        out = self.cell(*[ms.Tensor(feeds[n]) for n in names])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.asnumpy() for o in outs]
