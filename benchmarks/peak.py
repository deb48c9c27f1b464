"""The machine the numbers come from: fp32 and bf16 matmul peaks measured in the same run, CPU, memory, versions.

The bf16 peak is OpenVINO's CPU MatMul (n x n x n) compiled with bf16 inference precision -- on CPUs with AMX
that is the tile engine, several times the fp32 peak -- timed in a child process the same way; it is the bar for
the graphs that run in bf16.

The peak is numpy's sgemm (n x n x n, 2 n^3 FLOPs) timed in a child process, so that its BLAS thread count can
be set before numpy loads (OPENBLAS/OMP/MKL_NUM_THREADS), whatever this process has already imported. Best of
`repeats` after one warm-up: the best run is the closest to what the cores can do, which is what efficiency
ratios are taken against.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Dict, Optional

from configs.limits import usable_cpus

# CPU flags that decide which fp32/bf16/fp16 kernels an engine can use
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
                     "amx_tile", "amx_int8")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_GEMM_N = 2048
DEFAULT_GEMM_REPEATS = 10

_SGEMM_CHILD = r"""
import json, sys, time
import numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
c = np.empty((n, n), np.float32)
np.matmul(a, b, out=c)                      # warm-up: thread pool start, page faults
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    np.matmul(a, b, out=c)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


_BF16_CHILD = r"""
import json, sys, time
import numpy as np
import openvino as ov
import openvino.opset13 as ops
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = ops.parameter([n, n], np.float32, name="a")
w = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
model = ov.Model([ops.matmul(a, w, False, False)], [a], "peak")
compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": sys.argv[3],
                                                   "PERFORMANCE_HINT": "LATENCY"})
req = compiled.create_infer_request()
x = rng.standard_normal((n, n), dtype=np.float32)
req.infer({"a": x})
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    req.infer({"a": x})
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def sgemm_peak(n: int = DEFAULT_GEMM_N, repeats: int = DEFAULT_GEMM_REPEATS,
               threads: Optional[int] = None) -> dict:
    """numpy fp32 matmul n^3 in a child process with `threads` BLAS threads (default: all CPUs)."""
    if n <= 0 or repeats <= 0:
        raise ValueError(f"sgemm_peak: n and repeats must be positive, got n={n}, repeats={repeats}")
    threads = threads or usable_cpus()
    env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})
    proc = subprocess.run([sys.executable, "-c", _SGEMM_CHILD, str(n), str(repeats)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sgemm probe failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return _peak_record(f"numpy sgemm {n}^3", threads, repeats, n, proc.stdout)


def _peak_record(op: str, threads: int, repeats: int, n: int, stdout: str) -> dict:
    times = sorted(json.loads(stdout.strip().splitlines()[-1]))
    flops = 2 * n ** 3
    return {"op": op, "threads": threads, "repeats": repeats, "flops": flops,
            "best_s": times[0], "median_s": times[len(times) // 2],
            "gflops_best": flops / times[0] / 1e9, "gflops_median": flops / times[len(times) // 2] / 1e9}


def matmul_peak_openvino(n: int = DEFAULT_GEMM_N * 2, repeats: int = DEFAULT_GEMM_REPEATS,
                         precision: str = "bf16") -> Optional[dict]:
    """OpenVINO CPU MatMul n^3 at `precision` (bf16: AMX / AVX512_BF16 where present) in a child process;
    None where openvino is not installed or the probe fails."""
    if n <= 0 or repeats <= 0:
        raise ValueError(f"matmul_peak_openvino: n and repeats must be positive, got n={n}, repeats={repeats}")
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    proc = subprocess.run([sys.executable, "-c", _BF16_CHILD, str(n), str(repeats), precision], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return _peak_record(f"openvino matmul {n}^3 {precision}", usable_cpus(), repeats, n, proc.stdout)


def _cpuinfo() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)            # first processor's entries
    except OSError:
        pass
    return info


def _mem_total_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """CPU model and flags, CPUs, RAM, load average at the time of the call."""
    ci = _cpuinfo()
    flags = set(ci.get("flags", "").split())
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu_model": ci.get("model name", platform.processor() or "unknown"),
        "flags": {f: f in flags for f in FLAGS_OF_INTEREST},
        "hypervisor": "hypervisor" in flags,
        "logical_cpus": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "ram_bytes": _mem_total_bytes(),
        "loadavg_1_5_15": list(load) if load else None,
        "platform": platform.platform(),
    }


def _version(distribution: str) -> Optional[str]:
    """Installed version from the package metadata (no import: mindspore takes seconds to load)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions(distributions=("numpy", "onnx", "onnx-ir", "onnxruntime", "openvino", "mindspore", "mindspore_lite",
                            "mindspore-lite", "psutil")) -> dict:
    """Versions of the engines and libraries (None where not installed)."""
    out = {"python": platform.python_version()}
    for d in distributions:
        key = d.replace("-", "_")
        out[key] = out.get(key) or _version(d)
    try:
        import numpy as np
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:                       # older numpy without mode="dicts"
        pass
    return out


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=DEFAULT_GEMM_N)
    p.add_argument("--repeats", type=int, default=DEFAULT_GEMM_REPEATS)
    p.add_argument("--threads", type=int, default=0, help="BLAS threads (default: all usable CPUs)")
    a = p.parse_args()
    print(json.dumps({"machine": machine_info(), "versions": versions(),
                      "sgemm": sgemm_peak(a.n, a.repeats, a.threads or None),
                      "bf16_matmul": matmul_peak_openvino(2 * a.n, a.repeats)}, indent=1))


if __name__ == "__main__":
    main()
