"""Carry the int8 quantization of a reduced-resolution twin to the full-size UNet (`export.int8 --twin DIR`).

Why: NNCF collects its statistics by running the OpenVINO model with every activation it quantizes added as an
output, so none of them can share memory. At 576 px (CFG batch 42) OpenVINO asked for one 55.5 GB buffer; a
24 GiB machine cannot calibrate there. The same network exported at a lower resolution (the *twin*: same
config, same checkpoint tensors, same exporter, fewer pixels) has the same operators under the same names, and
the same weights; only the shape constants (Reshape targets, token counts) differ. So the twin is calibrated on
its own sampling runs and what NNCF inserted into it is rebuilt in the full-size graph, node for node:

    per-tensor activation FakeQuantize (input_low/high, output_low/high: scalars, resolution-independent),
    SmoothQuant's per-channel Multiply before a MatMul (a (1, C) scale),
    the int8 weights of each MatMul and Convolution (Constant i8 -> Convert -> Multiply by a per-channel scale),
    bias-correction constants, where NNCF re-wrote a bias as a new Constant.

What is resolution-dependent stays the full-size graph's own: every operator that both graphs have is left as
the full-size graph has it, and only the inputs NNCF re-routed are re-routed. An operator with a constant input
whose shape depends on the resolution (the fused GroupNorm's means: MatMuls against 1/n columns) is kept out of
int8 (``shape_dependent``, checked before calibrating). The activation ranges are the twin's, not the full size's;
how far that moves the result is measured, not assumed (tests/test_int8.py, benchmarks/README.md section 8.1).

Nothing is guessed: the two graphs must have the same operators by name and type (``graphs_match``; a twin so
small that a UNet level is 1x1 is not the same graph, nor is one of another UNet batch), every inserted node must
be of a type rebuilt here (``REBUILT``), every replacement must have the shape of what it replaces, and the result
must hold as many FakeQuantize nodes as the twin; otherwise an error says what differed.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

from runtime.errors import GraphError

# node types NNCF inserts into an OpenVINO model, rebuilt here by their own factory and attributes
REBUILT = ("Constant", "Convert", "Multiply", "Subtract", "Add", "FakeQuantize")
SHAPE_FREE = ("Parameter", "Constant", "Result")     # not compared by name: auto-named or re-created by NNCF


def canonical_names(model):
    """Rename, in place, every node OpenVINO named itself (``<Type>_<counter>``: what its ONNX reader adds when it
    decomposes an operator, and its constants) after its position in the model's topological order instead. The
    counter is per process and per model read, so the same graph read twice gets other names; the position is
    the same in two exports of one graph. Both the twin (before NNCF quantizes it) and the full-size graph (before
    carrying) are renamed so; ONNX's own node names are kept."""
    for k, op in enumerate(model.get_ordered_ops()):
        kind = op.get_type_name()
        if re.fullmatch(rf"{re.escape(kind)}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{kind}_at{k}")
    return model


def _named(model) -> Dict[str, object]:
    return {op.get_friendly_name(): op for op in model.get_ordered_ops()}


def graphs_match(twin, target) -> None:
    """Raise GraphError unless every operator of `target` (the unquantized full-size graph) is in `twin` (the
    quantized twin) under its name and type: the twin may only add nodes."""
    twin_ops = _named(twin)
    missing, retyped = [], []
    for name, op in _named(target).items():
        if op.get_type_name() in SHAPE_FREE:
            continue
        other = twin_ops.get(name)
        if other is None:
            missing.append(name)
        elif other.get_type_name() != op.get_type_name():
            retyped.append(f"{name} ({op.get_type_name()} here, {other.get_type_name()} in the twin)")
    if missing or retyped:
        raise GraphError(
            "the twin's UNet is not the same graph as the full-size one, so its quantization cannot be carried over: "
            f"{len(missing)} operator(s) missing from the twin (first: {missing[:3]}), {len(retyped)} of another "
            f"type (first: {retyped[:3]}). Export the twin with the same exporter, config, checkpoint and options "
            "as the full-size graph, at a lower --resolution (not so low that a UNet level is 1x1: the exporter "
            "simplifies such a graph).")


def shape_dependent(twin, target) -> List[str]:
    """Names of the operators (both models as read, renamed by ``canonical_names``) with a constant input whose
    shape differs between the twin and the full-size graph: a quantized copy of such a constant would not fit the
    full size, so they are kept out of int8 (NNCF's ignored scope). Raises GraphError where the graphs differ."""
    graphs_match(twin, target)
    theirs = _named(twin)
    out = []
    for name, op in _named(target).items():
        if op.get_type_name() in SHAPE_FREE:
            continue
        other = theirs[name]
        for mine, their in zip(op.inputs(), other.inputs()):
            a, b = mine.get_source_output(), their.get_source_output()
            if (a.get_node().get_type_name() == "Constant" and b.get_node().get_type_name() == "Constant"
                    and a.get_partial_shape() != b.get_partial_shape()):
                out.append(name)
                break
    return out


def carry_quantization(twin, target):
    """Rebuild in `target` (an OpenVINO model of the full-size graph as read, changed in place) every node NNCF
    inserted into `twin` (the same graph at a lower resolution, renamed by ``canonical_names`` before NNCF
    quantized it). Returns (target, inputs re-routed). Constants on an inserted path are the twin's (NNCF's int8
    weights and scales; the weights are the same checkpoint's)."""
    import openvino.opset13 as ops

    canonical_names(target)
    graphs_match(twin, target)
    target_ops = _named(target)
    built: Dict[Tuple[str, int], object] = {}

    def rebuild(out):
        """The full-size graph's output standing for `out`, an output of a twin node (rebuilt when inserted)."""
        node = out.get_node()
        name, kind = node.get_friendly_name(), node.get_type_name()
        key = (name, out.get_index())
        if key in built:
            return built[key]
        if kind != "Constant" and name in target_ops:           # an operator or input both graphs have: its own
            built[key] = target_ops[name].output(out.get_index())
            return built[key]
        if kind not in REBUILT:
            raise GraphError(f"the twin's quantized UNet has a node {name!r} of type {kind}, which is neither in the "
                             f"full-size graph nor one of the types carried over ({', '.join(REBUILT)})")
        args = [rebuild(i.get_source_output()) for i in node.inputs()]
        if kind == "Constant":
            new = ops.constant(node.get_data(), dtype=node.get_element_type())
        elif kind == "Convert":
            new = ops.convert(args[0], node.get_destination_type())
        elif kind == "FakeQuantize":
            new = ops.fake_quantize(*args, levels=node.get_levels())
        else:                                                     # Multiply, Subtract, Add: numpy broadcasting
            new = getattr(ops, kind.lower())(*args)
        new.set_friendly_name(name)
        built[key] = new.output(0)
        return built[key]

    rerouted = 0
    for name, op in _named(twin).items():
        here = target_ops.get(name)
        if op.get_type_name() in SHAPE_FREE or here is None:
            continue
        for i, port in enumerate(op.inputs()):
            src = port.get_source_output()
            src_node = src.get_node()
            src_name = src_node.get_friendly_name()
            mine = here.input(i).get_source_output().get_node()
            if src_name == mine.get_friendly_name():
                continue                                          # the same producer in both: nothing inserted
            new = rebuild(src)
            if new.get_partial_shape() != here.input(i).get_partial_shape():
                raise GraphError(
                    f"input {i} of {name!r} ({here.get_type_name()}) is {here.input(i).get_partial_shape()} in the "
                    f"full-size UNet but NNCF's replacement from the twin is {new.get_partial_shape()}: a quantized "
                    "constant depends on the resolution, so this quantization cannot be carried over (keep that "
                    "operator out of int8)")
            here.input(i).replace_source_output(new)
            rerouted += 1
    target.validate_nodes_and_infer_types()

    here, there = (sum(op.get_type_name() == "FakeQuantize" for op in m.get_ordered_ops()) for m in (target, twin))
    if here != there:
        raise GraphError(f"carrying the twin's quantization left {here} FakeQuantize nodes in the full-size UNet, "
                         f"the twin has {there}")
    return target, rerouted
