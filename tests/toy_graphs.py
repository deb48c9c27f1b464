"""The toy export: the four SV3D graphs as tiny stand-ins with the real contracts, for the tests that need *an*
export rather than the real networks (backends, the CLIs, the fault suite, the service).

Every input and output name, shape and dtype is read from runtime/specs.py (``graph_specs``), and the manifest is
written by the exporter's own functions (``export.api.graph_entry``, ``write_manifest``), so the runtime loads a
toy export exactly as it loads a real one. The ONNX graphs are built node by node with ``onnx.helper`` and numpy:
no MindSpore, a few kilobytes each; ONNX Runtime and OpenVINO run them. Written only when asked for: MindIR (the
mindspore backend), the same functions as MindSpore Cells traced by MindSpore; and mslite, the ONNX graphs
converted by the exporter's own MindSpore Lite step.

The math (float64 numpy in :func:`toy_numpy`; S = resolution, f = latent_factor, h = S / f, C = latent channels,
D = context dim, V = vector dim, B = UNet batch, n = decode chunk; W* from :func:`toy_weights`):

    clip_encoder  embedding (1, D)     = tanh(mean over H, W of image (1, 3)  @ Wclip (3, D))
    vae_encoder   latent (1, C, h, h)  = 1x1 conv of the f x f average pool of image (1, 3, h, h), Wenc (3, C)
    unet          out (B, C, h, h)     = tanh(1x1 conv of x (B, 2C, h, h) with Wx (2C, C)
                                              + timesteps (B, 1) @ wt (1, C) + context (B, D) @ Wctx (D, C)
                                              + y (B, V) @ Wy (V, C), broadcast over h, w)
    vae_decoder   image (n, 3, S, S)   = f x f nearest upsampling of tanh(1x1 conv of latent / scale_factor,
                                                                       Wdec (C, 3))

Every output depends on every input, each input through its own weights, so a feed bound to the wrong name
changes the numbers (or fails on its shape).

    export = write_toy_export(folder)                        # ONNX only: onnx and numpy
    export = write_toy_export(folder, formats=("onnx", "mindir"))   # + MindIR: needs mindspore
    export = write_toy_export(folder, formats=("mslite",))  # Lite's engine, onnx_ir, no MindSpore in the process
    export.folder, export.reference["unet"](x=..., timesteps=..., context=..., y=...)
    open_toy_export(folder)                                  # one written before (no onnx needed to read it)
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np

from runtime.specs import DTYPES, ExportShapes, GraphSpec, graph_specs

TOY_SEED = 7
TOY_CONFIGS = ("sv3d_u_tiny", "sv3d_p_tiny")     # the configs the tests make toy exports of
MINDIR_TOY_FORMATS = ("onnx", "mindir")          # the toy export of the mindspore backend's tests
# a folder of ONNX toy exports written before, <folder>/<config> (conftest's toy_exports reads them from there): the
# runtime-only venv of tests/test_install.py, which has no onnx to write them
TOY_EXPORTS_ENV = "SV3D_TOY_EXPORTS"
# ReduceMean takes its axes as an attribute up to opset 17; ONNX Runtime, OpenVINO and MindSpore Lite's converter
# all read opset 17 at IR version 8
ONNX_OPSET = 17
ONNX_IR_VERSION = 8


class ToyExport(NamedTuple):
    folder: Path
    reference: Dict[str, Callable[..., np.ndarray]]    # graph name -> float64 numpy of the graph, by input name


# ----------------------------------------------------------------------------------------------------------------
# the math


def toy_weights(specs: Mapping[str, GraphSpec]) -> Dict[str, np.ndarray]:
    """The toy graphs' weights (float32, seeded), each shaped from the specs' channel counts."""
    rng = np.random.default_rng(TOY_SEED)
    image_c = specs["clip_encoder"].inputs[0].shape[1]                 # 3
    d = specs["clip_encoder"].outputs[0].shape[1]                      # context dim
    zc = specs["vae_encoder"].outputs[0].shape[1]                      # latent channels
    unet = {t.name: t.shape for t in specs["unet"].inputs}

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    return {"clip_w": w(image_c, d), "enc_w": w(image_c, zc), "unet_x": w(unet["x"][1], zc),
            "unet_t": w(1, zc)[0], "unet_c": w(unet["context"][2], zc), "unet_y": w(unet["y"][1], zc),
            "dec_w": w(zc, image_c)}


def toy_numpy(cfg, weights: Mapping[str, np.ndarray]) -> Dict[str, Callable[..., np.ndarray]]:
    """The toy graphs in float64 numpy: {graph name: f(**feeds) -> output} (module docstring)."""
    f = cfg.latent_factor
    inv = 1.0 / cfg.scale_factor

    def clip(image):
        return np.tanh(image.mean(axis=(2, 3)) @ weights["clip_w"])

    def enc(image):
        b, c, s, _ = image.shape
        pooled = image.reshape(b, c, s // f, f, s // f, f).mean(axis=(3, 5))
        return (pooled.transpose(0, 2, 3, 1) @ weights["enc_w"]).transpose(0, 3, 1, 2)

    def unet(x, timesteps, context, y):
        b = x.shape[0]
        h = x.transpose(0, 2, 3, 1) @ weights["unet_x"]
        extra = (timesteps[:, None] * weights["unet_t"][None] + context.reshape(b, -1) @ weights["unet_c"]
                 + y @ weights["unet_y"])
        return np.tanh(h + extra[:, None, None, :]).transpose(0, 3, 1, 2)

    def dec(latent):
        img = np.tanh((latent * inv).transpose(0, 2, 3, 1) @ weights["dec_w"])
        img = np.repeat(np.repeat(img, f, axis=1), f, axis=2)
        return img.transpose(0, 3, 1, 2)

    return {"clip_encoder": clip, "vae_encoder": enc, "unet": unet, "vae_decoder": dec}


def toy_reference(cfg, specs: Mapping[str, GraphSpec]) -> Dict[str, Callable[..., np.ndarray]]:
    """toy_numpy with the toy weights for these specs: what the toy export of (cfg, specs) computes."""
    return toy_numpy(cfg, toy_weights(specs))


# ----------------------------------------------------------------------------------------------------------------
# ONNX, with onnx.helper


def _onnx_nodes(name: str, spec: GraphSpec, cfg, weights: Mapping[str, np.ndarray]):
    """(nodes, initializers {name: array}) of graph `name`: the math of toy_numpy as ONNX operators. The 1x1
    convolutions carry the matmul weights transposed to (out, in, 1, 1)."""
    from onnx import helper

    f = cfg.latent_factor
    shape = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    out = spec.outputs[0].name

    def conv1x1(w):                                     # (in, out) matmul weight -> (out, in, 1, 1) Conv weight
        return np.ascontiguousarray(w.T[:, :, None, None])

    def dims(*d):
        return np.array(d, np.int64)

    def conv(x, w, y):                                  # every attribute explicit: Lite's converter needs them
        return helper.make_node("Conv", [x, w], [y], kernel_shape=[1, 1], strides=[1, 1], dilations=[1, 1],
                                pads=[0, 0, 0, 0], group=1)

    if name == "clip_encoder":
        nodes = [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),   # (1, 3)
                 helper.make_node("MatMul", ["pooled", "clip_w"], ["proj"]),                        # (1, D)
                 helper.make_node("Tanh", ["proj"], [out])]
        return nodes, {"clip_w": weights["clip_w"]}
    if name == "vae_encoder":
        nodes = [helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[f, f], strides=[f, f],
                                  pads=[0, 0, 0, 0]),
                 conv("pooled", "enc_k", out)]                               # (1, C, h, h)
        return nodes, {"enc_k": conv1x1(weights["enc_w"])}
    if name == "unet":
        b, zc = shape["out"][:2]
        nodes = [conv("x", "unet_xk", "hx"),                                # (B, C, h, h)
                 helper.make_node("Reshape", ["timesteps", "shape_b1"], ["t"]),                      # (B, 1)
                 helper.make_node("MatMul", ["t", "unet_t"], ["et"]),                                # (B, C)
                 helper.make_node("Reshape", ["context", "shape_bd"], ["ctx"]),                      # (B, D)
                 helper.make_node("MatMul", ["ctx", "unet_c"], ["ec"]),
                 helper.make_node("MatMul", ["y", "unet_y"], ["ey"]),
                 helper.make_node("Add", ["et", "ec"], ["etc"]),
                 helper.make_node("Add", ["etc", "ey"], ["extra"]),
                 helper.make_node("Reshape", ["extra", "shape_bc11"], ["extra4"]),                   # (B, C, 1, 1)
                 helper.make_node("Add", ["hx", "extra4"], ["pre"]),
                 helper.make_node("Tanh", ["pre"], [out])]
        return nodes, {"unet_xk": conv1x1(weights["unet_x"]), "unet_t": weights["unet_t"][None],
                       "unet_c": weights["unet_c"], "unet_y": weights["unet_y"], "shape_b1": dims(b, 1),
                       "shape_bd": dims(b, shape["context"][2]), "shape_bc11": dims(b, zc, 1, 1)}
    if name == "vae_decoder":
        n, zc, h, w = shape["latent"]
        nodes = [helper.make_node("Mul", ["latent", "inv_scale"], ["scaled"]),
                 conv("scaled", "dec_k", "rgb"),                             # (n, 3, h, w)
                 helper.make_node("Tanh", ["rgb"], ["img"]),
                 # nearest upsampling by f: (n, 3, h, 1, w, 1) -> expand (n, 3, h, f, w, f) -> (n, 3, S, S)
                 helper.make_node("Reshape", ["img", "shape_split"], ["img6"]),
                 helper.make_node("Expand", ["img6", "shape_rep"], ["rep"]),
                 helper.make_node("Reshape", ["rep", "shape_out"], [out])]
        c = shape[out][1]
        return nodes, {"inv_scale": np.array(1.0 / cfg.scale_factor, np.float32), "dec_k": conv1x1(weights["dec_w"]),
                       "shape_split": dims(n, c, h, 1, w, 1), "shape_rep": dims(n, c, h, f, w, f),
                       "shape_out": dims(*shape[out])}
    raise KeyError(f"no toy graph {name!r}")


def toy_onnx_model(name: str, spec: GraphSpec, cfg, weights: Mapping[str, np.ndarray]):
    """The ONNX ModelProto of toy graph `name`, its inputs and outputs declared as `spec` says; checked by onnx's
    strict shape inference, so the declared output shapes are the ones its nodes make."""
    import onnx
    from onnx import helper, numpy_helper

    nodes, consts = _onnx_nodes(name, spec, cfg, weights)

    def value_info(t):
        return helper.make_tensor_value_info(t.name, DTYPES[t.dtype].onnx, t.shape)

    dtype = spec.outputs[0].dtype                       # weights in the graph's dtype, shapes as int64
    inits = [numpy_helper.from_array(a if a.dtype == np.int64 else a.astype(dtype), name=k) for k, a in consts.items()]
    graph = helper.make_graph(nodes, name, [value_info(t) for t in spec.inputs], [value_info(t) for t in spec.outputs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION, producer_name="tests/toy_graphs.py")
    onnx.checker.check_model(model, full_check=True)
    return model


def _write_onnx(folder: Path, name: str, spec: GraphSpec, cfg, weights) -> Tuple[Path, List[Path]]:
    import onnx

    path = folder / "onnx" / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(toy_onnx_model(name, spec, cfg, weights), str(path))
    return path, [path]


def _write_mslite(folder: Path, name: str, spec: GraphSpec, cfg, weights) -> Tuple[Path, List[Path]]:
    """The ONNX graph converted as the exporter converts it (export.workers.convert_mslite: its mslite form, then
    MindSpore Lite's converter). Needs the Lite engine (python -m runtime.backends.mslite_native setup, or the
    mindspore_lite package), onnx_ir, and a process without MindSpore in it."""
    import shutil

    from export.workers import convert_mslite

    scratch = folder / ".scratch"
    try:
        src, _ = _write_onnx(scratch, name, spec, cfg, weights)
        model, files, _ = convert_mslite(src, [src], folder / "mslite", scratch / "work")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return model, files


# ----------------------------------------------------------------------------------------------------------------
# MindIR, traced by MindSpore (the mindspore backend's format)


def _toy_cells(cfg, weights):
    """{graph name: () -> a fresh Cell computing toy_numpy's function}."""
    import mindspore as ms
    from mindspore import nn, ops

    f = cfg.latent_factor
    inv = float(1.0 / cfg.scale_factor)

    def param(a):
        return ms.Parameter(ms.Tensor(a), requires_grad=False)

    class OneWeight(nn.Cell):
        def __init__(self, key):
            super().__init__()
            self.w = param(weights[key])

    class Clip(OneWeight):
        def construct(self, image):
            return ops.tanh(ops.matmul(image.mean(axis=(2, 3)), self.w))

    class Enc(OneWeight):
        def construct(self, image):
            b, c, s, _ = image.shape
            pooled = image.reshape(b, c, s // f, f, s // f, f).mean(axis=(3, 5))
            return ops.matmul(pooled.transpose(0, 2, 3, 1), self.w).transpose(0, 3, 1, 2)

    class Unet(nn.Cell):
        def __init__(self):
            super().__init__()
            self.wx, self.wt = param(weights["unet_x"]), param(weights["unet_t"])
            self.wc, self.wy = param(weights["unet_c"]), param(weights["unet_y"])

        def construct(self, x, timesteps, context, y):
            b = x.shape[0]
            h = ops.matmul(x.transpose(0, 2, 3, 1), self.wx)
            extra = (timesteps.reshape(b, 1) * self.wt.reshape(1, -1) + ops.matmul(context.reshape(b, -1), self.wc)
                     + ops.matmul(y, self.wy))
            return ops.tanh(h + extra.reshape(b, 1, 1, -1)).transpose(0, 3, 1, 2)

    class Dec(OneWeight):
        def construct(self, latent):
            n, c, h, w = latent.shape
            img = ops.tanh(ops.matmul((latent * inv).transpose(0, 2, 3, 1), self.w))
            img = ops.broadcast_to(img.reshape(n, h, 1, w, 1, 3), (n, h, f, w, f, 3)).reshape(n, h * f, w * f, 3)
            return img.transpose(0, 3, 1, 2)

    return {"clip_encoder": lambda: Clip("clip_w"), "vae_encoder": lambda: Enc("enc_w"), "unet": Unet,
            "vae_decoder": lambda: Dec("dec_w")}


def _write_mindir(folder: Path, name: str, spec: GraphSpec, cfg, weights) -> Tuple[Path, List[Path]]:
    import mindspore as ms

    (folder / "mindir").mkdir(parents=True, exist_ok=True)
    cell = _toy_cells(cfg, weights)[name]()             # a fresh Cell per export (MINDSPORE_NOTES.md)
    args = [ms.Tensor(a) for a in spec.example_inputs().values()]
    ms.export(cell, *args, file_name=str(folder / "mindir" / name), file_format="MINDIR")
    path = folder / "mindir" / f"{name}.mindir"
    return path, [path]


# format -> (writer(folder, name, spec, cfg, weights) -> (model file, every file), the form recorded). The ONNX
# form is the exporter's default: the toy graphs hold none of the spelled-out regions (attention, GELU, norms) that
# form rewrites, so they are in it as written.
_WRITERS = {"onnx": (_write_onnx, "fused"), "mindir": (_write_mindir, "plain"), "mslite": (_write_mslite, "mslite")}


# ----------------------------------------------------------------------------------------------------------------
# the export folder


def _tools(formats: Sequence[str]) -> dict:
    """Versions of what wrote the graphs, under the exporter's manifest keys."""
    tools = {"numpy": np.__version__, "python": platform.python_version()}
    if "onnx" in formats or "mslite" in formats:        # mslite graphs are converted from the ONNX ones
        tools["onnx"] = __import__("onnx").__version__
    if "mindir" in formats:
        tools["mindspore"] = __import__("mindspore").__version__
    if "mslite" in formats:
        from export.workers import mslite_version

        tools["mindspore_lite_converter"] = mslite_version()
    return tools


def write_toy_export(folder, config: str = "sv3d_u_tiny", *, resolution: int = 64, unet_batch=None,
                     decode_chunk: int = 14, formats: Sequence[str] = ("onnx",)) -> ToyExport:
    """Write the toy export of bundled config `config` into `folder` (graphs in `formats`, then manifest.json);
    returns (folder, numpy reference). ONNX needs onnx and numpy; MindIR needs mindspore."""
    from configs import load_config
    from export.api import graph_entry, write_manifest

    unknown = [f for f in formats if f not in _WRITERS]
    if unknown or not formats:
        raise ValueError(f"toy export formats: expected a non-empty subset of {list(_WRITERS)}, got {list(formats)}")
    cfg = load_config(config)
    t = cfg.num_frames
    shapes = ExportShapes(resolution, t, unet_batch or 2 * t, decode_chunk)
    specs = graph_specs(cfg, shapes)
    weights = toy_weights(specs)
    folder = Path(folder)
    graphs = {fmt: {} for fmt in formats}
    for fmt in formats:
        write, form = _WRITERS[fmt]
        for name, spec in specs.items():
            model, files = write(folder, name, spec, cfg, weights)
            graphs[fmt][name] = graph_entry(spec, fmt, model, files, folder, form)
    write_manifest(folder, cfg, shapes, graphs, tools=_tools(formats),
                   source={"toy": "tests/toy_graphs.py", "seed": TOY_SEED}, created="toy export (tests)",
                   parity={"gate": "off", "graphs": {name: {"gate": "off", "reason": "toy graphs: tests/test_backends"
                                                            ".py runs each against tests/toy_graphs.toy_numpy"}
                                                     for name in specs}})
    return ToyExport(folder, toy_numpy(cfg, weights))


def open_toy_export(folder) -> ToyExport:
    """A toy export written before (by write_toy_export, perhaps in another environment): its folder and numpy
    reference, from its manifest's config -- no onnx, MindSpore or PyYAML needed."""
    from runtime.manifest import Manifest

    manifest = Manifest.load(folder)
    cfg = manifest.sv3d_config()
    specs = graph_specs(cfg, manifest.shapes)
    return ToyExport(Path(folder), toy_reference(cfg, specs))
