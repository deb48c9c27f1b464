"""The GPU check of issue 17, prepared to run once where a GPU is lent: ONNX Runtime CUDA on the fused 576 px export.

    python -m benchmarks.gpu_check --graphs E576_FP32 [--graphs-fp16 E576_FP16] [--steps 50] [--json OUT]

For each export (fp32, and fp16 where given): one UNet call (a warm-up, then `--calls` timed calls, synchronised by
the engine: ONNX Runtime returns host arrays), then a complete `--steps`-step generation with the decoder, and the
peak GPU memory over each (nvidia-smi's memory.used, sampled every 0.2 s in a thread, minus what was used before
the session opened). Prints one JSON line per measurement; benchmarks/README.md section 8 says what to compare them
with (SVD-XT's TensorRT card: 0.76 s per UNet step on an H100 at 25 frames, 576 x 1024).

Make the exports on the GPU machine itself where the files cannot travel (8.7 GB each):
    python -m models.random_checkpoint -c sv3d_u -o ckpt.safetensors
    python -m export -c sv3d_u -k ckpt.safetensors -o e576 --formats onnx --parity off
    python -m export -c sv3d_u -k ckpt.safetensors -o e576h --formats onnx --dtype fp16 --parity off
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

from runtime.sample_data import sample_image_path

SAMPLE_IMAGE = sample_image_path()


def gpu_memory_mib(device: int = 0) -> Optional[int]:
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class PeakSampler:
    """The largest nvidia-smi memory.used seen while the `with` block runs (MiB)."""

    def __init__(self, device: int = 0, every_s: float = 0.2):
        self.device, self.every_s, self.peak, self._stop = device, every_s, 0, threading.Event()

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, gpu_memory_mib(self.device) or 0)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def check(graphs: str, label: str, calls: int, steps: int, device_id: int) -> List[dict]:
    import numpy as np

    from runtime import Manifest, SV3DPipeline
    from runtime.backends import RunOptions, load_graph

    out = []
    base = gpu_memory_mib(device_id) or 0
    manifest = Manifest.load(graphs)
    with PeakSampler(device_id) as peak:
        t0 = time.perf_counter()
        unet = load_graph(manifest, "unet", backend="onnxruntime", device="cuda", device_id=device_id,
                          options=RunOptions())
        load_s = time.perf_counter() - t0
        feeds = manifest.entry("onnx", "unet").spec.example_inputs(seed=0)
        t0 = time.perf_counter()
        unet.run(feeds)
        first_s = time.perf_counter() - t0
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            unet.run(feeds)
            times.append(time.perf_counter() - t0)
        del unet
    out.append({"check": "unet_call", "export": label, "batch": manifest.shapes.unet_batch, "load_s": load_s,
                "first_s": first_s, "calls_s": times, "median_s": float(np.median(times)),
                "peak_gpu_mib": peak.peak - base})
    print(json.dumps(out[-1]), flush=True)
    base = gpu_memory_mib(device_id) or 0
    with PeakSampler(device_id) as peak:
        t0 = time.perf_counter()
        pipe = SV3DPipeline.from_export(graphs, backend="onnxruntime", device="cuda", device_id=device_id)
        result = pipe.generate(str(SAMPLE_IMAGE), num_steps=steps, seed=0)
        wall = time.perf_counter() - t0
    out.append({"check": "generation", "export": label, "steps": steps, "wall_s": wall,
                "stages": result.timings.to_dict(), "peak_gpu_mib": peak.peak - base})
    print(json.dumps(out[-1], default=str), flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--graphs", required=True, help="the fp32 fused 576 px export")
    p.add_argument("--graphs-fp16", default="", help="the same exported with --dtype fp16")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device-id", type=int, default=0)
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    if gpu_memory_mib(a.device_id) is None:
        print(json.dumps({"error": "nvidia-smi reports no GPU here"}))
        return 1
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(json.dumps({"error": "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)",
                          "providers": ort.get_available_providers()}))
        return 1
    records = check(a.graphs, "fp32", a.calls, a.steps, a.device_id)
    if a.graphs_fp16:
        records += check(a.graphs_fp16, "fp16", a.calls, a.steps, a.device_id)
    if a.json:
        Path(a.json).write_text("\n".join(json.dumps(r, default=str) for r in records) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
