"""What several test modules share: the repository root, relative-L2 comparison, and the toy export.

Test modules import from here (and fixtures come from conftest.py); no test module imports another.

The toy export: four small graphs with the real SV3D graph contracts (names, shapes), exported by MindSpore to
MindIR and ONNX, with the manifest written by the exporter's own code (export.api.write_manifest), plus the same
functions in numpy as the reference. The toy graphs use every input with its own weights, so a wrong
name-to-position binding changes the numbers. Fast CLI and backend runs without the real models.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[1]
TOY_SEED = 7


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: got {a.shape}, reference {b.shape}")
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (den if den > 0 else 1.0))


def edit_manifest(folder, fn) -> None:
    """Apply ``fn`` to the manifest JSON of ``folder`` in place."""
    path = Path(folder) / MANIFEST_NAME
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


# ----------------------------------------------------------------------------------------------------------------
# toy export


def toy_weights(cfg):
    rng = np.random.default_rng(TOY_SEED)
    d, v, zc = cfg.unet.context_dim, cfg.conditioner.vector_dim, cfg.latent_channels

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    return {"clip_w": w(3, d), "enc_w": w(3, zc), "unet_x": w(2 * zc, zc), "unet_t": w(1, zc)[0],
            "unet_c": w(d, zc), "unet_y": w(v, zc), "dec_w": w(zc, 3)}


def toy_numpy(cfg, weights):
    """The toy graphs in float64 numpy: {graph name: f(**feeds) -> output}."""
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


def _toy_cells(cfg, weights):
    import mindspore as ms
    from mindspore import nn, ops

    f = cfg.latent_factor
    inv = float(1.0 / cfg.scale_factor)

    def param(a):
        return ms.Parameter(ms.Tensor(a), requires_grad=False)

    class Clip(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = param(weights["clip_w"])

        def construct(self, image):
            return ops.tanh(ops.matmul(image.mean(axis=(2, 3)), self.w))

    class Enc(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = param(weights["enc_w"])

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

    class Dec(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = param(weights["dec_w"])

        def construct(self, latent):
            n, c, h, w = latent.shape
            img = ops.tanh(ops.matmul((latent * inv).transpose(0, 2, 3, 1), self.w))
            img = ops.broadcast_to(img.reshape(n, h, 1, w, 1, 3), (n, h, f, w, f, 3)).reshape(n, h * f, w * f, 3)
            return img.transpose(0, 3, 1, 2)

    return {"clip_encoder": Clip, "vae_encoder": Enc, "unet": Unet, "vae_decoder": Dec}


def build_toy_export(folder, config: str = "sv3d_u_tiny", resolution: int = 64, unet_batch=None,
                     decode_chunk: int = 14, formats=("mindir", "onnx")):
    """Write a toy export (graphs + manifest) into ``folder``; returns (folder, numpy reference functions).

    The graphs are the toy Cells traced by MindSpore; their manifest entries and the manifest itself are made by
    the exporter's own functions (export.api.graph_entry, write_manifest), so the toy export is what the
    exporter would record for these graphs."""
    import mindspore as ms
    import onnx

    from configs import load_config
    from export.api import graph_entry, write_manifest
    from runtime.specs import ExportShapes, graph_specs

    cfg = load_config(config)
    t = cfg.num_frames
    shapes = ExportShapes(resolution, t, unet_batch or 2 * t, decode_chunk)
    specs = graph_specs(cfg, shapes)
    weights = toy_weights(cfg)
    cells = _toy_cells(cfg, weights)
    folder = Path(folder)
    graphs = {}
    for fmt in formats:
        (folder / fmt).mkdir(parents=True, exist_ok=True)
        graphs[fmt] = {}
        for name, spec in specs.items():
            args = [ms.Tensor(a) for a in spec.example_inputs().values()]
            cell = cells[name]()                         # a fresh Cell per export (MINDSPORE_NOTES.md)
            path = folder / fmt / f"{name}.{fmt}"
            if fmt == "mindir":
                ms.export(cell, *args, file_name=str(folder / fmt / name), file_format="MINDIR")
            else:
                ms.onnx.export(cell, *args, file_name=str(path))
                model = onnx.load(str(path))             # name the output as the spec does
                old, new = model.graph.output[0].name, spec.outputs[0].name
                for node in model.graph.node:
                    node.output[:] = [new if o == old else o for o in node.output]
                model.graph.output[0].name = new
                onnx.save(model, str(path))
            graphs[fmt][name] = graph_entry(spec, fmt, path, [path], folder)
    write_manifest(folder, cfg, shapes, graphs, created="toy export (tests)")
    return folder, toy_numpy(cfg, weights)


def read_keys_tsv(path) -> dict:
    """{tensor name: shape} from shared/reference/sv3d_{u,p}.keys.tsv (header line, then name, shape, dtype)."""
    out = {}
    for line in path.read_text().splitlines()[1:]:
        name, shape, _ = line.split("\t")
        out[name] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return out
