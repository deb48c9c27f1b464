"""The official SV3D VideoUNet (Stability-AI/generative-models' sgm) under torch bf16 autocast: one 576 px CFG call,
timed in the same run as ours, so that "x times faster than the official code" is a ratio measured side by side.

    python -m benchmarks.official_unet --repo GENERATIVE_MODELS_CHECKOUT --checkpoint CKPT.safetensors
        [--config sv3d_u] [--resolution 576] [--calls 2] [--threads 2] [--json OUT]

Needs torch (CPU), einops and fsspec, and a checkout of generative-models (never vendored here: pass its folder).
The network is built from the checkout's own scripts/sampling/configs/<config>.yaml ``network_config`` and loads
``model.diffusion_model.*`` from an official-layout checkpoint (``python -m models.random_checkpoint`` writes one at
full size). One change, for the CPU: ``spatial_transformer_attn_type`` becomes "softmax" (torch's
scaled_dot_product_attention), since the config's "softmax-xformers" needs xformers, which has no CPU kernels. The
feeds are what the official sampler gives the network at one CFG step: x (2T, 8, h, w) = [noisy latents ; the
image latent], timesteps (2T,), context (2T, 1, 1024), y (2T, adm), num_video_frames T, image_only_indicator zeros.
sgm's package __init__ files import the training stack; the modules needed are loaded without them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import List, Optional

from runtime.peak_rss import peak_rss_bytes


def _load_sgm(repo: Path):
    """Import sgm.modules.diffusionmodules.video_model without running sgm's package __init__ files (they import
    pytorch_lightning, open_clip, ...): empty packages pointing at the checkout's folders stand in for them."""
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(repo / name.replace(".", "/"))]
        sys.modules.setdefault(name, pkg)
    from sgm.modules.diffusionmodules.video_model import VideoUNet
    return VideoUNet


def build(repo: Path, config: str, checkpoint: str):
    import torch
    import yaml
    from safetensors.torch import load_file

    path = Path(config) if config.endswith(".yaml") else repo / "scripts" / "sampling" / "configs" / f"{config}.yaml"
    cfg = yaml.safe_load(path.read_text())
    params = dict(cfg["model"]["params"]["network_config"]["params"])
    params["spatial_transformer_attn_type"] = "softmax"       # xformers has no CPU kernels (module docstring)
    net = _load_sgm(repo)(**params)
    prefix = "model.diffusion_model."
    state = {k[len(prefix):]: v for k, v in load_file(checkpoint).items() if k.startswith(prefix)}
    net.load_state_dict(state, strict=True)
    return net.eval().to(torch.float32), params


def feeds(params: dict, resolution: int, frames: int = 21, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    b, h = 2 * frames, resolution // 8
    return dict(x=torch.randn(b, params["in_channels"], h, h, generator=g),
                timesteps=torch.full((b,), 0.5), context=torch.randn(b, 1, params["context_dim"], generator=g),
                y=torch.randn(b, params["adm_in_channels"], generator=g), num_video_frames=frames,
                image_only_indicator=torch.zeros(2, frames))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.official_unet", description=__doc__.splitlines()[0])
    p.add_argument("--repo", required=True, type=Path, help="a generative-models checkout (sgm/, scripts/)")
    p.add_argument("--checkpoint", required=True, help="official-layout .safetensors (model.diffusion_model.*)")
    p.add_argument("--config", default="sv3d_u", help="a config name of the checkout, or an sgm YAML path")
    p.add_argument("--resolution", type=int, default=576)
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    if not (a.repo / "sgm").is_dir():
        p.error(f"--repo {a.repo}: no sgm/ folder there (expected a generative-models checkout)")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    net, params = build(a.repo, a.config, a.checkpoint)
    load_s = time.perf_counter() - t0
    inputs = feeds(params, a.resolution)
    wall = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(a.calls):
            t0 = time.perf_counter()
            out = net(**inputs)
            wall.append(time.perf_counter() - t0)
    rec = {"engine": f"sgm VideoUNet, torch {torch.__version__} bf16 autocast", "config": a.config,
           "resolution": a.resolution, "batch": int(inputs["x"].shape[0]), "threads": torch.get_num_threads(),
           "load_s": load_s, "call_wall_s": wall, "out_shape": list(out.shape),
           "peak_rss_gib": peak_rss_bytes() / 2 ** 30}
    print(json.dumps(rec))
    if a.json:
        Path(a.json).write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
