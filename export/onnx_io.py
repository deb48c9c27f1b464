"""ONNX: write a graph with `mindspore.onnx.export`, name its inputs/outputs after the spec, check its shapes.

It is run by the runtime's ONNX Runtime backend (export/checks.py).

MindSpore 2.10 facts this module works around (MINDSPORE_NOTES.md):
- exporting a Cell compiles it again (~20 s for the tiny UNet, the same as its MindIR export); exporting the
  GraphCell of the MindIR just written takes a tenth of that (but `mindspore.load` peaks at ~2x the weights), so
  small graphs are made from the MindIR graph, large ones from a fresh Cell (export/api.py; the parity gate
  compares both with the eager Cell);
- a Cell's graph inputs are named after its `construct` arguments, a GraphCell's `inputs0`, `inputs1`, ...:
  they are renamed by position after the spec (the MindIR's input order is checked against the spec first);
- `output_names=` can yield an invalid model, so outputs are renamed afterwards with the `onnx` API;
- `mindspore.export(file_format="ONNX")` refuses models over 2 GB; `mindspore.onnx.export` writes them with one
  raw file per tensor beside the model. Such a model is repacked into ONE external data file beside it
  (`<name>.onnx.data`) with `onnx.save_model(save_as_external_data=True, all_tensors_to_one_file=True)`;
- a second ONNX export of the same Cell instance fails: callers pass a fresh instance every time.
The opset is what the exporter writes (11).
"""
from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from runtime.specs import dtype_name

EXT = ".onnx"
DATA_SUFFIX = ".data"
# protobuf cannot serialise a message over 2 GiB; keep a margin for the graph itself
INLINE_LIMIT_BYTES = 1_800_000_000


def _initializer_bytes(model) -> int:
    total = 0
    for t in model.graph.initializer:
        total += len(t.raw_data) + 4 * len(t.float_data) + 4 * len(t.int32_data) + 8 * len(t.int64_data)
    return total


def _rename(graph, old: str, new: str, used: set) -> None:
    if old == new:
        return
    if new in used:
        raise RuntimeError(f"cannot rename ONNX tensor {old!r} to {new!r}: the name is taken in the graph")
    for n in graph.node:
        for i, v in enumerate(n.output):
            if v == old:
                n.output[i] = new
        for i, v in enumerate(n.input):
            if v == old:
                n.input[i] = new
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.name == old:
            vi.name = new
    used.discard(old)
    used.add(new)


def rename_io(model, spec, positional_inputs: bool) -> None:
    """Name the graph inputs and outputs after the spec, in order (producers, consumers and value_info follow).

    `positional_inputs`: the inputs carry engine names (a GraphCell exports `inputs0`, `inputs1`, ...) and are
    renamed by position -- their order is the MindIR's, checked against the spec before. Otherwise they must
    already be the spec's names (the construct arguments of the export wrapper).
    """
    g = model.graph
    inputs = tuple(i.name for i in g.input)
    if len(inputs) != len(spec.inputs) or (not positional_inputs and inputs != spec.input_names):
        raise RuntimeError(f"ONNX graph {spec.name} has inputs {list(inputs)}, the spec {list(spec.input_names)}: "
                           f"the wrapper's construct arguments must be the spec's input names")
    if len(g.output) != len(spec.outputs):
        raise RuntimeError(f"ONNX graph {spec.name} has {len(g.output)} outputs, the spec {len(spec.outputs)}")
    used = {t.name for t in g.initializer} | {i.name for i in g.input}
    for n in g.node:
        used.update(n.output)
    pairs = list(zip(inputs, spec.input_names)) + [(o.name, new) for o, new in zip(g.output, spec.output_names)]
    # two passes through unique temporary names, so that swapping names can never collide
    temps = []
    for k, (old, _) in enumerate(pairs):
        tmp = f"__export_rename_{k}__"
        _rename(g, old, tmp, used)
        temps.append(tmp)
    for tmp, (_, new) in zip(temps, pairs):
        used.discard(tmp)
        _rename(g, tmp, new, used)


def export_raw(make_source: Callable, spec, feeds: Dict[str, np.ndarray], work: Path) -> Path:
    """Trace `make_source()` (a fresh Cell, or a GraphCell over the graph's MindIR) on `feeds` into
    `work/<name>.onnx` as mindspore writes it (per-tensor files beside it when over 2 GB)."""
    import mindspore as ms
    import mindspore.onnx as ms_onnx

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    args = [ms.Tensor(feeds[n]) for n in spec.input_names]
    source = make_source()
    # mindspore.onnx.export, not mindspore.export(file_format="ONNX"): the latter refuses models over 2 GB (and
    # is deprecated in 2.10); this one writes their tensors as external data
    ms_onnx.export(source, *args, file_name=str(work / spec.name))
    del source, args
    gc.collect()
    raw = work / f"{spec.name}{EXT}"
    if not raw.is_file():
        raise FileNotFoundError(f"mindspore.onnx.export wrote no {raw.name} in {work}")
    return raw


def pack(raw: Path, spec, folder: Path, positional_inputs: bool) -> Tuple[Path, List[Path]]:
    """Re-read mindspore's raw ONNX, name its inputs/outputs after the spec and write `folder/<name>.onnx`
    (+ one `<name>.onnx.data` when large); removes the raw folder. Returns (model file, files). No MindSpore."""
    import onnx

    model = onnx.load(str(raw), load_external_data=True)
    rename_io(model, spec, positional_inputs)
    shutil.rmtree(raw.parent)                 # free the disk before writing the final copy
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}{EXT}"
    if _initializer_bytes(model) > INLINE_LIMIT_BYTES:
        data = folder / f"{spec.name}{EXT}{DATA_SUFFIX}"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name)
        return path, [path, data]
    onnx.save_model(model, str(path))
    return path, [path]


def write(make_source: Callable, spec, feeds: Dict[str, np.ndarray], folder: Path, scratch: Path,
          positional_inputs: bool = False) -> Tuple[Path, List[Path]]:
    """export_raw + pack in this process: `folder/<name>.onnx` (+ `.onnx.data`); returns (model file, files).
    `scratch` receives mindspore's raw output, removed afterwards."""
    work = scratch / f"onnx_{spec.name}"
    try:
        return pack(export_raw(make_source, spec, feeds, work), spec, folder, positional_inputs)
    finally:
        if work.exists():
            shutil.rmtree(work)


def shape_problems(path: Path, spec, scratch: Path) -> List[str]:
    """ONNX's own shape inference over the file, strict: catches graphs whose ops disagree with the declared
    output shapes (e.g. the per-axis padding trap of MINDSPORE_NOTES.md)."""
    import onnx

    scratch.mkdir(parents=True, exist_ok=True)
    inferred = scratch / f"{spec.name}.inferred{EXT}"
    try:
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred), check_type=True, strict_mode=True)
        model = onnx.load(str(inferred), load_external_data=False)
    except Exception as e:    # onnx raises InferenceError / ValidationError with the node at fault
        return [f"ONNX shape inference failed: {type(e).__name__}: {str(e).strip()[:500]}"]
    finally:
        if inferred.exists():
            inferred.unlink()
    problems = []
    for out, t in zip(model.graph.output, spec.outputs):
        tt = out.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        dt = dtype_name("onnx", tt.elem_type)
        if (dims, dt) != (tuple(t.shape), t.dtype):
            problems.append(f"output {out.name}: inferred {dims} {dt}, spec {tuple(t.shape)} {t.dtype}")
    return problems
