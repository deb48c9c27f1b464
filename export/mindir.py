"""MindIR: write a graph with `mindspore.export`, read its declared inputs back, run it with `nn.GraphCell`.

File layout (MINDSPORE_NOTES.md): below 1 GB of parameters `mindspore.export` writes `<name>.mindir`; above, it
splits by itself into `<name>_graph.mindir` + `<name>_variables/data_0` and `mindspore.load` finds the folder.
Graph names never end in `_graph`, so a small graph is never saved under the `_graph.mindir` suffix that fails
to load.

Binding: a GraphCell takes its inputs by position. The MindIR names its inputs `<graph>:<argument>`, and the
export wrappers' arguments are the spec's input names, so the file's inputs are the spec's names in the spec's
order; the runtime's MindSpore backend (runtime/backends/mindspore_backend.py) reads them back and checks that,
both when a user loads the graph and in the export's own checks (export/checks.py).
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

EXT = ".mindir"


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
