"""Rewrite the exported ONNX graphs into the fused ops that inference engines have kernels for.

MindSpore's ONNX exporter writes opset 11 and cannot write GroupNorm, Erf or LayerNorm (models/layers.py), so our
graphs spell them out; ONNX Runtime and OpenVINO then run dozens of memory-bound elementwise passes per block and,
worst, materialise every attention score matrix: 21 GiB per call for the 576 px UNet's first level at batch 42.
This pass, run on the written file, replaces

  attention   MatMul(q, Transpose(k)) * scale -> Softmax -> MatMul(., v)
              -> com.microsoft.MultiHeadAttention (flash attention in ONNX Runtime's CPU kernel; OpenVINO maps it
                 to its ScaledDotProductAttention); where q/k/v come through our split_heads chain
                 (Reshape -> Transpose -> Reshape) and the output goes through merge_heads, the chains are folded
                 into the op's (B, N, heads * d) layout;
  gelu        models.layers.gelu_erf, the Abramowitz-Stegun erf from Abs/Pow/Exp (20 elementwise nodes)
              -> com.microsoft.Gelu (exact erf GELU; both engines have it);
  layernorm   mean / subtract / square / mean / + eps / sqrt / divide (* weight + bias)
              -> LayerNormalization (opset 17);
  groupnorm   models.layers.GroupNorm's staged means over (N, G, R, H, W) -> two MatMuls with 1/n columns
              each (precise on every engine, see _fuse_groupnorm; no engine has a precise fused GroupNorm on
              the CPU: ONNX Runtime's InstanceNormalization and OpenVINO's MVN both lose 3-6e-4 per 576 px group);
  geglu_split the GEGLU projection Gemm(x, W[2I]) read by two Slices -> two Gemms of I outputs (bit-identical;
              no (B, L, 2I) tensor: -0.95 GB peak per 576 px UNet call on OpenVINO bf16, time unchanged,
              benchmarks/README.md section 8).

and, for engines whose ONNX importers are stricter (the MindSpore Lite 2.0 converter), two clean-ups:

  identity_slice   Slice with empty starts/ends (how MindSpore writes ``x[...]`` after ExpandDims) -> removed
                   (Lite cannot infer such a Slice's shape: "InferShape fail ... StridedSlice");
  conv_attributes  Conv without strides / dilations -> the ONNX defaults written out (Lite reads them as null:
                   "kernel_size/stride/dilation is nullptr").

Each target engine gets one form, a set of these rewrites (FORMS): "fused" for ONNX Runtime and OpenVINO,
"mslite" for the Lite converter -- no MultiHeadAttention (Lite 2.0 has no such op: attention stays
MatMul-Softmax-MatMul, in query chunks with --attention-chunk) and no LayerNormalization (Lite's kernel lost 8e-5
relative L2 on the tiny CLIP tower, against 2e-6 for the spelled-out form), "plain" for none.

Every match is checked structurally and every replaced GELU region is evaluated on probe values before it is
replaced, so a graph that does not have the expected form is left as it was (and counted under "skipped").
The graph's opset is raised from 11 to 17 (LayerNormalization); the only op whose signature changes between them
in our graphs is Squeeze (axes attribute -> input), converted here; any other such op stops the pass.

Works on onnx_ir models: external weights are never loaded (``onnx_ir.load`` maps them lazily and ``save``
streams them), so the 6 GB UNet is rewritten in a few hundred MB.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

TARGET_OPSET = 17
MS_DOMAIN = "com.microsoft"
FUSIONS = ("attention", "gelu", "layernorm", "groupnorm", "geglu_split", "identity_slice", "conv_attributes")
# the name prefix of a fused GroupNorm's nodes (its means are MatMuls against 1/n columns, whose column length is
# the group's size: export/int8.py keeps them out of int8, where both the precision and the shapes would suffer)
GROUPNORM_PREFIX = "fused_groupnorm_"
# the ONNX form each target engine reads: the rewrites that make it (module docstring); recorded per graph in the
# manifest (GraphEntry.form)
FORMS = {"fused": ("attention", "gelu", "layernorm", "groupnorm", "geglu_split"),
         "mslite": ("gelu", "groupnorm", "identity_slice", "conv_attributes"),
         "plain": ()}
CONV_DEFAULTS = ("strides", "dilations")     # each an int per spatial axis, default 1
# ops whose inputs or attributes differ between opset 11 and TARGET_OPSET, beside the Squeeze we convert
_OPSET_SENSITIVE = {"Unsqueeze", "ReduceSum", "Split", "Resize", "Upsample"}
GELU_PROBE_TOL = 1e-6          # the A&S erf is within 1.5e-7 of erf; a region further than this is not our GELU


@dataclass
class FuseReport:
    fused: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    nodes_before: int = 0
    nodes_after: int = 0

    def to_dict(self) -> dict:
        return {"fused": dict(self.fused), "skipped": dict(self.skipped), "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after}

    def summary(self) -> str:
        parts = [f"{k} {self.fused[k]}" for k in FUSIONS if self.fused[k]]
        if self.fused["attention_heads_folded"]:
            parts.append(f"(heads folded in {self.fused['attention_heads_folded']})")
        skipped = [f"{k} {v}" for k, v in self.skipped.items() if v]
        return (", ".join(parts) or "nothing fused") + (f"; skipped {', '.join(skipped)}" if skipped else "") + \
            f"; {self.nodes_before} -> {self.nodes_after} nodes"


class FuseError(RuntimeError):
    """The graph holds an op this pass cannot carry to the target opset."""


# ---------------------------------------------------------------------------------------------------- helpers


def _ir():
    import onnx_ir as ir
    import onnx_ir.passes.common  # noqa: F401  (RemoveUnusedNodesPass)
    return ir


def const_array(value) -> Optional[np.ndarray]:
    """The constant a value holds: an initializer, a Constant node's tensor, or a Cast of either; else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Constant" and node.domain == "":
        attr = node.attributes.get("value")
        return None if attr is None else attr.as_tensor().numpy()
    if node.op_type == "Cast" and node.domain == "":
        inner = const_array(node.inputs[0])
        if inner is None:
            return None
        to = _ir().DataType(node.attributes["to"].as_int())
        return inner.astype(to.numpy())
    return None


def _scalar(value) -> Optional[float]:
    a = const_array(value)
    return None if a is None or a.size != 1 else float(a.reshape(()))


def _producer(value, op_type: str):
    node = None if value is None else value.producer()
    return node if node is not None and node.op_type == op_type and node.domain == "" else None


def _only_consumer(value, op_type: Optional[str] = None):
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    node = uses[0][0]
    if op_type is not None and (node.op_type != op_type or node.domain != ""):
        return None
    return node


def _ints(node, name: str) -> Optional[Tuple[int, ...]]:
    attr = node.attributes.get(name)
    return None if attr is None else tuple(attr.as_ints())


def _shape(value) -> Optional[Tuple[int, ...]]:
    """A value's static shape: declared (value_info), or the target of the Reshape that produced it."""
    s = value.shape
    if s is not None:
        dims = tuple(s)
        if all(isinstance(d, int) for d in dims):
            return dims
    r = _producer(value, "Reshape")
    target = const_array(r.inputs[1]) if r is not None else None
    if target is None or any(int(d) <= 0 for d in target):
        return None
    return tuple(int(d) for d in target)


class _Builder:
    """New nodes and constants, inserted before an anchor node (keeps the node list topologically sorted)."""

    def __init__(self, graph, anchor, tag: str):
        self.graph, self.anchor, self.tag = graph, anchor, tag
        self.n = 0

    def const(self, array: np.ndarray, what: str):
        ir = _ir()
        self.n += 1
        v = ir.Value(name=f"{self.tag}/{what}_{self.n}", const_value=ir.tensor(np.asarray(array)))
        v.shape = ir.Shape(np.asarray(array).shape)
        v.type = ir.TensorType(ir.DataType.from_numpy(np.asarray(array).dtype))
        self.graph.register_initializer(v)
        return v

    def node(self, op_type: str, inputs: Sequence, domain: str = "", **attrs):
        ir = _ir()
        self.n += 1
        node = ir.Node(domain, op_type, list(inputs), attributes=[_attr(k, v) for k, v in attrs.items()],
                       name=f"{self.tag}/{op_type}_{self.n}")
        node.outputs[0].name = f"{self.tag}/{op_type}_{self.n}_out"
        self.graph.insert_before(self.anchor, node)
        return node.outputs[0]

    def reshape(self, value, shape: Sequence[int]):
        return self.node("Reshape", [value, self.const(np.asarray(shape, np.int64), "shape")])


def _attr(name: str, value):
    ir = _ir()
    if isinstance(value, float):
        return ir.AttrFloat32(name, value)
    if isinstance(value, int):
        return ir.AttrInt64(name, value)
    if isinstance(value, (list, tuple)):
        return ir.AttrInt64s(name, [int(v) for v in value])
    raise TypeError(f"attribute {name}: {type(value).__name__}")


def _replace(old, new) -> None:
    """Point every use of `old` (and the graph output it may be) at `new`."""
    ir = _ir()
    ir.convenience.replace_all_uses_with(old, new)
    graph = old.graph or new.graph
    if old.is_graph_output():
        outs = graph.outputs
        for i, o in enumerate(outs):
            if o is old:
                name = old.name
                old.name = None
                new.name = name
                new.shape, new.type = old.shape, old.type
                outs[i] = new


# -------------------------------------------------------------------------------------------------- attention


def _head_chain(value) -> Optional[Tuple[object, int, int, int, int]]:
    """value = Reshape(Transpose(Reshape(x, [B, N, H, D]), [0, 2, 1, 3]), [B*H, N, D]) (layers.split_heads):
    (x, B, N, H, D), else None."""
    r2 = _producer(value, "Reshape")
    tr = _producer(r2.inputs[0], "Transpose") if r2 is not None else None
    r1 = _producer(tr.inputs[0], "Reshape") if tr is not None else None
    if r1 is None or _ints(tr, "perm") != (0, 2, 1, 3):
        return None
    s1, s2 = const_array(r1.inputs[1]), const_array(r2.inputs[1])
    if s1 is None or s2 is None or s1.size != 4 or s2.size != 3:
        return None
    b, n, h, d = (int(v) for v in s1)
    if tuple(int(v) for v in s2) != (b * h, n, d) or min(b, n, h, d) <= 0:
        return None
    return r1.inputs[0], b, n, h, d


def _merge_chain(value, b: int, h: int, n: int, d: int):
    """The last node of merge_heads on `value` (B*H, N, D): Reshape [B, H, N, D] -> Transpose [0, 2, 1, 3] ->
    Reshape to (B, N, H*D) or a flattening of it such as (-1, H*D) (the Gemm after it); None otherwise."""
    r1 = _only_consumer(value, "Reshape")
    if r1 is None or tuple(int(v) for v in (const_array(r1.inputs[1]) if r1 is not None else [])) != (b, h, n, d):
        return None
    tr = _only_consumer(r1.outputs[0], "Transpose")
    if tr is None or _ints(tr, "perm") != (0, 2, 1, 3):
        return None
    r2 = _only_consumer(tr.outputs[0], "Reshape")
    if r2 is None:
        return None
    s = const_array(r2.inputs[1])
    if s is None or s.size < 1 or int(s[-1]) != h * d or int(np.prod([v for v in s if v > 0])) not in (
            b * n * h * d, b * n, n, b):
        return None
    return r2


def _fuse_attention(graph, softmax, report: FuseReport) -> bool:
    mul = _producer(softmax.inputs[0], "Mul")
    if mul is None:
        return False
    scale, mm = None, None
    for i in (0, 1):
        s = _scalar(mul.inputs[1 - i])
        if s is not None and _producer(mul.inputs[i], "MatMul") is not None:
            scale, mm = s, _producer(mul.inputs[i], "MatMul")
    if mm is None:
        report.skipped["attention"] += 1
        return False
    q3, kt = mm.inputs
    tk = _producer(kt, "Transpose")
    if tk is None or _ints(tk, "perm") != (0, 2, 1):                 # q (B', N, d) @ k^T (B', d, N)
        report.skipped["attention"] += 1
        return False
    k3 = tk.inputs[0]
    axis = softmax.attributes.get("axis")
    if axis is not None and axis.as_int() not in (-1, 2):
        report.skipped["attention"] += 1
        return False
    out_mm = _only_consumer(softmax.outputs[0], "MatMul")
    if out_mm is None or out_mm.inputs[0] is not softmax.outputs[0]:
        report.skipped["attention"] += 1
        return False
    v3 = out_mm.inputs[1]
    if len(set(id(u[0]) for u in mm.outputs[0].uses())) != 1 or len(list(mul.outputs[0].uses())) != 1:
        report.skipped["attention"] += 1
        return False
    b_ = _Builder(graph, out_mm, f"fused_attention_{report.fused['attention']}")
    # heads folded when q, k, v all come through split_heads with the same (B, H, D) and the output through
    # merge_heads: MHA then reads (B, N, H*D) directly and the six reshape/transpose pairs go
    chains = [_head_chain(v) for v in (q3, k3, v3)]
    merged = None
    if all(chains) and len({(c[1], c[3], c[4]) for c in chains}) == 1:
        _, b, n, h, d = chains[0]
        merged = _merge_chain(out_mm.outputs[0], b, h, n, d)
    if merged is not None:
        ins = [b_.reshape(c[0], [c[1], c[2], c[3] * c[4]]) if _shape(c[0]) != (c[1], c[2], c[3] * c[4]) else c[0]
               for c in chains]
        out = b_.node("MultiHeadAttention", ins, domain=MS_DOMAIN, num_heads=h, scale=float(scale))
        if tuple(int(v) for v in const_array(merged.inputs[1])) != (b, n, h * d):
            out = b_.node("Reshape", [out, merged.inputs[1]])                 # the flattening merge_heads did
        out.shape = merged.outputs[0].shape
        out.type = merged.outputs[0].type
        _replace(merged.outputs[0], out)
        report.fused["attention_heads_folded"] += 1
    else:
        out = b_.node("MultiHeadAttention", [q3, k3, v3], domain=MS_DOMAIN, num_heads=1, scale=float(scale))
        out.shape, out.type = out_mm.outputs[0].shape, out_mm.outputs[0].type
        _replace(out_mm.outputs[0], out)
    report.fused["attention"] += 1
    return True


# ------------------------------------------------------------------------------------------------------- gelu

_GELU_OPS = {"Abs", "Mul", "Add", "Sub", "Div", "Pow", "Exp", "Neg", "Cast", "Constant"}


def _eval_region(nodes, x_value, out_value, probe: np.ndarray) -> Optional[np.ndarray]:
    """Evaluate a small elementwise region on `probe` (numpy, float64); None if an op is not elementwise."""
    env = {id(x_value): probe.astype(np.float64)}

    def get(v):
        if id(v) in env:
            return env[id(v)]
        c = const_array(v)
        if c is None:
            raise KeyError
        return c.astype(np.float64)

    fns = {"Abs": np.abs, "Exp": np.exp, "Neg": np.negative, "Mul": np.multiply, "Add": np.add,
           "Sub": np.subtract, "Div": np.divide, "Pow": np.power, "Cast": lambda a: a}
    try:
        for node in nodes:
            if node.op_type == "Constant":
                continue
            args = [get(v) for v in node.inputs]
            env[id(node.outputs[0])] = fns[node.op_type](*args)
        return env[id(out_value)]
    except (KeyError, TypeError, FloatingPointError):
        return None


def _gelu_region(graph_order, abs_node):
    """The elementwise nodes computing gelu_erf(x) for x = abs_node's input, and the one value leaving them."""
    x = abs_node.inputs[0]
    region = []
    inside = {id(x)}
    frontier = [u[0] for u in x.uses()]
    seen = set()
    # grow forward from x through elementwise ops whose non-constant inputs are all inside
    changed = True
    while changed:
        changed = False
        for node in list(frontier):
            if id(node) in seen or node.op_type not in _GELU_OPS or node.domain != "":
                continue
            if all(id(v) in inside or const_array(v) is not None for v in node.inputs):
                seen.add(id(node))
                region.append(node)
                inside.add(id(node.outputs[0]))
                frontier.extend(u[0] for u in node.outputs[0].uses())
                changed = True
    members = {id(n) for n in region}
    exits = [n for n in region if n.outputs[0].is_graph_output()
             or any(id(u[0]) not in members for u in n.outputs[0].uses())]
    if len(exits) != 1:
        return None
    order = {id(n): i for i, n in enumerate(graph_order)}
    region.sort(key=lambda n: order[id(n)])
    return x, region, exits[0].outputs[0]


def _fuse_gelu(graph, graph_order, abs_node, report: FuseReport) -> bool:
    found = _gelu_region(graph_order, abs_node)
    if found is None:
        report.skipped["gelu"] += 1
        return False
    x, region, out = found
    probe = np.linspace(-6.0, 6.0, 97)
    got = _eval_region(region, x, out, probe)
    erf = np.vectorize(math.erf)
    want = 0.5 * probe * (1.0 + erf(probe / math.sqrt(2.0)))
    if got is None or got.shape != probe.shape or not np.max(np.abs(got - want)) < GELU_PROBE_TOL:
        report.skipped["gelu"] += 1
        return False
    b_ = _Builder(graph, region[-1], f"fused_gelu_{report.fused['gelu']}")
    g = b_.node("Gelu", [x], domain=MS_DOMAIN)
    g.shape, g.type = out.shape, out.type
    _replace(out, g)
    report.fused["gelu"] += 1
    return True


# ------------------------------------------------------------------------------------------------------ norms


def _var_chain(mean_node, axes_want):
    """From mean = ReduceMean(x): d = Sub(x, mean), var = ReduceMean(Mul(d, d)) [ staged ], Add eps, Sqrt,
    Div(d, sqrt) -> (d_sub, div, eps) or None."""
    x = mean_node.inputs[0]
    subs = [u[0] for u in mean_node.outputs[0].uses() if u[0].op_type == "Sub" and u[0].inputs[0] is x]
    if len(subs) != 1:
        return None
    sub = subs[0]
    d = sub.outputs[0]
    uses = list({id(u[0]): u[0] for u in d.uses()}.values())         # Mul(d, d) uses d twice
    muls = [n for n in uses if n.op_type == "Mul" and n.inputs[0] is d and n.inputs[1] is d]
    divs = [n for n in uses if n.op_type == "Div" and n.inputs[0] is d]
    if len(muls) != 1 or len(divs) != 1 or len(uses) != 2:
        return None
    v = muls[0].outputs[0]
    for axes in axes_want:
        r = _only_consumer(v, "ReduceMean")
        if r is None or _ints(r, "axes") != axes:
            return None
        v = r.outputs[0]
    add = _only_consumer(v, "Add")
    if add is None:
        return None
    eps = _scalar(add.inputs[1])
    sqrt = _only_consumer(add.outputs[0], "Sqrt")
    if eps is None or sqrt is None or divs[0].inputs[1] is not sqrt.outputs[0]:
        return None
    return sub, divs[0], eps


def _fuse_layernorm(graph, mean_node, report: FuseReport) -> bool:
    x = mean_node.inputs[0]
    keep = mean_node.attributes.get("keepdims")
    if _ints(mean_node, "axes") != (-1,) or (keep is not None and keep.as_int() != 1):
        return False
    chain = _var_chain(mean_node, [(-1,)])
    if chain is None:
        return False
    _, div, eps = chain
    shape = _shape(x)
    out, scale, bias = div.outputs[0], None, None
    mul = _only_consumer(out, "Mul")
    w = const_array(mul.inputs[1]) if mul is not None and mul.inputs[0] is out else None
    c = shape[-1] if shape is not None else (w.shape[0] if w is not None and w.ndim == 1 else None)
    if c is None:
        report.skipped["layernorm"] += 1
        return False
    b_ = _Builder(graph, div, f"fused_layernorm_{report.fused['layernorm']}")
    if mul is not None:
        if w is not None and w.shape == (c,) and mul.inputs[1].const_value is not None:
            scale, out = mul.inputs[1], mul.outputs[0]
            add = _only_consumer(out, "Add")
            bv = const_array(add.inputs[1]) if add is not None and add.inputs[0] is out else None
            if bv is not None and bv.shape == (c,) and add.inputs[1].const_value is not None:
                bias, out = add.inputs[1], add.outputs[0]
    dtype = x.dtype.numpy() if x.dtype is not None else np.float32
    if scale is None:
        scale = b_.const(np.ones(c, dtype), "ones")
    if bias is None:
        bias = b_.const(np.zeros(c, dtype), "zeros")
    ln = b_.node("LayerNormalization", [x, scale, bias], axis=-1, epsilon=float(eps))
    ln.shape, ln.type = out.shape, out.type
    _replace(out, ln)
    report.fused["layernorm"] += 1
    return True


def _staged_chain(first):
    """first = ReduceMean(axes -1) -> ReduceMean(-2) -> ReduceMean(-3) (layers.staged_mean): the last node, or None."""
    if _ints(first, "axes") != (-1,):
        return None
    m2 = _only_consumer(first.outputs[0], "ReduceMean")
    m3 = _only_consumer(m2.outputs[0], "ReduceMean") if m2 is not None else None
    if m3 is None or _ints(m2, "axes") != (-2,) or _ints(m3, "axes") != (-3,):
        return None
    return m3


def _fuse_groupnorm(graph, mean_node, report: FuseReport, done: set) -> bool:
    """models.layers.GroupNorm: g = Reshape(x, (N, G, R, H, W)); mean and variance as staged means over W, H, R.

    Both staged means become two MatMuls with constant columns of 1/n: (N*G*R*H, W) @ (W, 1) / W, then
    (N*G, R*H) @ (R*H, 1). Engines run MatMul with blocked fp32 accumulation, while their reductions -- even three
    staged ones, which OpenVINO merges back into one MVN -- sum a 331,776-value group naively: 3.4e-4 relative
    error per GroupNorm in OpenVINO f32 (and 5.6e-4 for ONNX Runtime's InstanceNormalization) against 2-7e-6 here
    (benchmarks/README.md, "normalisation precision"). Same work: one read of the tensor per mean."""
    g = mean_node.inputs[0]
    gshape = _shape(g)
    m3 = _staged_chain(mean_node)
    if gshape is None or len(gshape) != 5 or min(gshape) <= 0 or m3 is None:
        return False
    fake = _StagedMean(g, m3)
    chain = _var_chain(fake, [(-1,), (-2,), (-3,)])
    if chain is None:
        report.skipped["groupnorm"] += 1
        return False
    sub, div, _ = chain
    n, groups, r, h, w = gshape
    dtype = g.dtype.numpy() if g.dtype is not None else np.float32
    sq = next(u[0] for u in sub.outputs[0].uses() if u[0].op_type == "Mul")
    v1 = _only_consumer(sq.outputs[0], "ReduceMean")
    v3 = _staged_chain(v1)
    b_ = _Builder(graph, sub, f"{GROUPNORM_PREFIX}{report.fused['groupnorm']}")
    col_w = b_.const(np.full((w, 1), 1.0 / w, dtype), "mean_w")
    col_rh = b_.const(np.full((r * h, 1), 1.0 / (r * h), dtype), "mean_rh")

    def mean(value, before):
        b_.anchor = before
        a = b_.node("MatMul", [b_.reshape(value, [n * groups * r * h, w]), col_w])          # (N*G*R*H, 1)
        a = b_.node("MatMul", [b_.reshape(a, [n * groups, r * h]), col_rh])               # (N*G, 1)
        return b_.reshape(a, [n, groups, 1, 1, 1])

    new_mean = mean(g, sub)
    _replace(m3.outputs[0], new_mean)
    add = _only_consumer(v3.outputs[0], "Add")
    new_var = mean(sq.outputs[0], add)
    _replace(v3.outputs[0], new_var)
    done.add(id(v1))                                    # the variance chain's first mean: replaced too
    report.fused["groupnorm"] += 1
    return True


# ---------------------------------------------------------------------------------------------------- clean-ups


def _drop_identity_slice(node, report: FuseReport) -> bool:
    """Slice(x, starts=[], ends=[], ...) selects all of x: its users read x instead."""
    starts = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if starts is None or starts.size != 0 or node.outputs[0].is_graph_output():
        return False
    _ir().convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
    report.fused["identity_slice"] += 1
    return True


def _explicit_conv_attributes(node, report: FuseReport) -> bool:
    """Write the default strides and dilations (1 per spatial axis) on a Conv that leaves them out."""
    kernel = _ints(node, "kernel_shape")
    if kernel is None:
        w = _shape(node.inputs[1])
        kernel = None if w is None else w[2:]
    missing = [a for a in CONV_DEFAULTS if a not in node.attributes]
    if not missing or kernel is None:
        return False
    for a in missing:
        node.attributes[a] = _attr(a, [1] * len(kernel))
    report.fused["conv_attributes"] += 1
    return True


def _slice_range(node, rank: int) -> Optional[Tuple[int, int]]:
    """(start, end) of a Slice that cuts only the last axis of a rank-`rank` tensor with step 1; else None."""
    args = [const_array(v) if v is not None else None for v in node.inputs[1:]]
    if len(args) < 3 or any(a is None or a.size != 1 for a in args[:3]):
        return None
    start, end, axis = (int(a.reshape(())) for a in args[:3])
    step = int(args[3].reshape(())) if len(args) > 3 and args[3] is not None and args[3].size == 1 else 1
    if axis not in (-1, rank - 1) or step != 1:
        return None
    return start, end


def _split_geglu(graph, gemm, report: FuseReport) -> bool:
    """models.unet_blocks.GEGLU: h = Reshape(Gemm(x, W, b, transB=1), [B, L, 2I]) read only by two Slices, h[..., :I]
    (the value) and h[..., I:] (the gate). The Gemm is cut into two, (x W[:I]^T + b[:I]) and (x W[I:]^T + b[I:]),
    each reshaped to (B, L, I): the same arithmetic, without the (B, L, 2I) tensor that engines split with a copy
    (OpenVINO's VariadicSplit ran 3.6 s of a 63 s 576 px UNet call in a reference kernel)."""
    w, bias = (const_array(v) for v in gemm.inputs[1:3]) if len(gemm.inputs) == 3 else (None, None)
    attrs = {k: v.value for k, v in gemm.attributes.items()}
    if w is None or bias is None or w.ndim != 2 or attrs.get("transA", 0) != 0 or attrs.get("transB", 0) != 1 \
            or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return False
    reshape = _only_consumer(gemm.outputs[0], "Reshape")
    target = const_array(reshape.inputs[1]) if reshape is not None else None
    if target is None or target.ndim != 1 or int(target[-1]) != w.shape[0] or w.shape[0] % 2:
        return False
    inner, rank = w.shape[0] // 2, int(target.size)
    uses = [u for u, _ in reshape.outputs[0].uses()]
    if reshape.outputs[0].is_graph_output() or len(uses) != 2 or any(u.op_type != "Slice" or u.domain != ""
                                                                     for u in uses):
        return False
    halves = {_slice_range(u, rank): u for u in uses}
    value, gate = halves.get((0, inner)), halves.get((inner, 2 * inner))
    if value is None or gate is None:
        return False
    n = report.fused["geglu_split"]
    b_ = _Builder(graph, gemm, f"geglu_split_{n}")
    half_shape = [int(d) for d in target[:-1]] + [inner]
    for sl, rows in ((value, slice(0, inner)), (gate, slice(inner, 2 * inner))):
        part = b_.node("Gemm", [gemm.inputs[0], b_.const(np.ascontiguousarray(w[rows]), "weight"),
                                b_.const(np.ascontiguousarray(bias[rows]), "bias")], transA=0, transB=1)
        _replace(sl.outputs[0], b_.reshape(part, half_shape))
    report.fused["geglu_split"] += 1
    return True


class _StagedMean:
    """Adapter: the staged mean's last ReduceMean seen as one mean node over the 5D group tensor."""

    def __init__(self, x, last):
        self.inputs = [x]
        self.outputs = last.outputs


# ------------------------------------------------------------------------------------------------------ opset


def _raise_opset(model, report: FuseReport) -> None:
    graph = model.graph
    have = graph.opset_imports.get("", 11)
    if have >= TARGET_OPSET:
        return
    for node in list(graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Squeeze" and "axes" in node.attributes:
            axes = node.attributes.pop("axes").as_ints()
            b_ = _Builder(graph, node, f"opset_squeeze_{report.fused['squeeze_axes']}")
            node.resize_inputs(2)
            node.replace_input_with(1, b_.const(np.asarray(axes, np.int64), "axes"))
            report.fused["squeeze_axes"] += 1
        elif node.op_type == "Softmax":
            axis = node.attributes.get("axis")
            shape = _shape(node.inputs[0])
            if shape is not None and axis is not None and axis.as_int() not in (-1, len(shape) - 1):
                raise FuseError(f"Softmax over axis {axis.as_int()} of a rank-{len(shape)} tensor changes meaning "
                                f"between opset 11 and {TARGET_OPSET}")
        elif node.op_type in _OPSET_SENSITIVE:
            raise FuseError(f"the graph has {node.op_type}, whose signature changes between opset {have} and "
                            f"{TARGET_OPSET}; this pass cannot convert it")
    graph.opset_imports[""] = TARGET_OPSET
    model.opset_imports[""] = TARGET_OPSET


# ------------------------------------------------------------------------------------------------------ entry


def _check_fusions(fusions: Sequence[str]) -> frozenset:
    unknown = [f for f in fusions if f not in FUSIONS]
    if unknown:
        raise ValueError(f"unknown fusion(s) {unknown}; expected some of {list(FUSIONS)}")
    return frozenset(fusions)


def fuse_model(model, fusions: Sequence[str] = FORMS["fused"]) -> FuseReport:
    """Rewrite an onnx_ir Model in place with the named rewrites (default: the "fused" form; a subset measures
    what each one buys); returns what was fused and what was left."""
    want = _check_fusions(fusions)
    ir = _ir()
    graph = model.graph
    report = FuseReport(nodes_before=len(graph))
    ir.passes.common.ShapeInferencePass()(model)      # static shapes of every value (weights are not read)
    _raise_opset(model, report)
    if "attention" in want:
        for node in [n for n in graph if n.op_type == "Softmax" and n.domain == ""]:
            _fuse_attention(graph, node, report)
    if "gelu" in want:
        order = list(graph)
        for node in [n for n in order if n.op_type == "Abs" and n.domain == ""]:
            _fuse_gelu(graph, order, node, report)
    done: set = set()
    for node in [n for n in graph if n.op_type == "ReduceMean" and n.domain == ""]:
        if node.graph is None or id(node) in done:
            continue
        if "groupnorm" in want and _fuse_groupnorm(graph, node, report, done):
            continue
        if "layernorm" in want:
            _fuse_layernorm(graph, node, report)
    for node in list(graph):
        if node.domain != "":
            continue
        if node.op_type == "Slice" and "identity_slice" in want:
            _drop_identity_slice(node, report)
        elif node.op_type == "Conv" and "conv_attributes" in want:
            _explicit_conv_attributes(node, report)
        elif node.op_type == "Gemm" and "geglu_split" in want:
            _split_geglu(graph, node, report)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    graph.sort()                 # new nodes may read constants that the exporter placed after their anchor
    model.opset_imports.setdefault(MS_DOMAIN, 1)
    report.nodes_after = len(graph)
    return report


def fuse_file(src: Path, dst: Path, data_name: Optional[str] = None,
              fusions: Sequence[str] = FORMS["fused"]) -> FuseReport:
    """Read the ONNX file `src`, rewrite it (the "fused" form, or the named rewrites), write `dst` (weights streamed into
    `data_name` beside it when given, else inline). `src` and `dst` must differ."""
    ir = _ir()
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError("fuse_file writes a new file: src and dst must differ")
    model = ir.load(str(src))
    report = fuse_model(model, fusions)      # onnx_ir.load maps the weights lazily: an unknown name fails fast
    if data_name:
        ir.save(model, str(dst), external_data=data_name)
    else:
        ir.save(model, str(dst))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """python -m export.onnx_fuse SRC.onnx DST.onnx [--data NAME]: fuse one file (for inspection and benchmarks;
    `python -m export` runs this pass itself unless --onnx-form plain)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m export.onnx_fuse", description=main.__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--data", default=None, help="external data file name for the weights (beside DST)")
    ap.add_argument("--only", default=",".join(FORMS["fused"]),
                    help=f"comma-separated subset of {','.join(FUSIONS)} (default: the fused form, "
                         f"{','.join(FORMS['fused'])}; the mslite form is {','.join(FORMS['mslite'])})")
    a = ap.parse_args(argv)
    fusions = [f for f in a.only.split(",") if f]
    try:
        _check_fusions(fusions)
    except ValueError as e:
        ap.error(str(e))
    print(fuse_file(Path(a.src), Path(a.dst), a.data, fusions).summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
