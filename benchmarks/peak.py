"""The machine the numbers come from: fp32, bf16 and int8 matmul peaks measured in the same run, CPU, memory,
versions.

The bf16 and int8 peaks are OpenVINO's CPU MatMul (n x n x n, constant weight: a FullyConnected node like the
UNet's linear layers) compiled with bf16 inference precision, and with FakeQuantize on both inputs for int8 -- on
CPUs with AMX that is the tile engine, several times the fp32 peak -- timed in a child process the same way; they
are the bars for the graphs that run in bf16 and int8. Each record names the kernel that ran (OpenVINO's
primitiveType, OpenBLAS's core type), so a probe that fell back to an older kernel shows it.

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
from typing import Dict, Optional, Tuple

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
try:                                        # the kernel OpenBLAS picked for this CPU (it may not know the model)
    from threadpoolctl import threadpool_info
    kernel = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                       for i in threadpool_info() if i.get("user_api") == "blas")
except ImportError:
    kernel = None
print(json.dumps({"times": times, "kernel": kernel}))
"""


# OpenVINO's CPU MatMul against a constant weight, the form of every linear layer of the UNet (OpenVINO makes it a
# FullyConnected node). int8: FakeQuantize on both inputs (activations u8, weights s8 levels 255), the form NNCF
# writes, which OpenVINO's low-precision transformations turn into a u8 x s8 kernel (AMX-INT8 where present). The
# child reports the kernel the plugin picked (the runtime model's primitiveType): a probe that ran a reference or
# AVX2 kernel says so instead of passing for the peak.
_OPENVINO_CHILD = r"""
import json, sys, time
import numpy as np
import openvino as ov
import openvino.opset13 as ops
m, k, n, repeats = (int(v) for v in sys.argv[1:5])
precision = sys.argv[5]
rng = np.random.default_rng(0)
a = ops.parameter([m, k], np.float32, name="a")
x, w = a, ops.constant(rng.standard_normal((n, k), dtype=np.float32))
if precision == "int8":
    lo, hi = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
    x = ops.fake_quantize(a, lo, hi, lo, hi, 256)
    w = ops.fake_quantize(w, lo, hi, lo, hi, 255)
model = ov.Model([ops.matmul(x, w, False, True)], [a], "peak")
hint = "bf16" if precision == "int8" else precision       # int8 comes from the FakeQuantize, not the hint
compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
kernels = [(op.get_rt_info()["primitiveType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
           for op in compiled.get_runtime_model().get_ordered_ops()
           if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul")]
req = compiled.create_infer_request()
xv = rng.standard_normal((m, k), dtype=np.float32)
req.infer({"a": xv})
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    req.infer({"a": xv})
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "kernel": " + ".join(f"{k} ({p})" for k, p in kernels)}))
"""
OPENVINO_PRECISIONS = ("f32", "bf16", "int8")


# OpenBLAS core types with AVX-512 kernels, newest first, and the CPU flag each needs. OpenBLAS 0.3.23 does not
# know every CPU model (it read this Sapphire Rapids guest as "Prescott", SSE3 kernels, 24 GFLOP/s); naming the core
# type (OPENBLAS_CORETYPE) gives numpy the kernel the CPU can run.
OPENBLAS_AVX512_CORES = (("SapphireRapids", "amx_bf16"), ("Cooperlake", "avx512_bf16"), ("SkylakeX", "avx512f"))


def _sgemm_child(n: int, repeats: int, threads: int, coretype: Optional[str]) -> dict:
    env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    proc = subprocess.run([sys.executable, "-c", _SGEMM_CHILD, str(n), str(repeats)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sgemm probe failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return _peak_record(f"numpy sgemm {n}^3" + (f" (OPENBLAS_CORETYPE={coretype})" if coretype else ""),
                        threads, repeats, 2 * n ** 3, proc.stdout)


def sgemm_peak(n: int = DEFAULT_GEMM_N, repeats: int = DEFAULT_GEMM_REPEATS,
               threads: Optional[int] = None) -> dict:
    """numpy fp32 matmul n^3 in a child process with `threads` BLAS threads (default: all CPUs), with the kernel
    OpenBLAS ran. Where that kernel is not an AVX-512 one on an AVX-512 CPU, the probe is run again with the core
    type the CPU supports, and the faster of the two is returned, the default's record under "default_kernel"."""
    if n <= 0 or repeats <= 0:
        raise ValueError(f"sgemm_peak: n and repeats must be positive, got n={n}, repeats={repeats}")
    threads = threads or usable_cpus()
    default = _sgemm_child(n, repeats, threads, None)
    flags = set(_cpuinfo().get("flags", "").split())
    coretype = next((c for c, flag in OPENBLAS_AVX512_CORES if flag in flags), None)
    if coretype is None or any(c.lower() in str(default["kernel"]).lower() for c, _ in OPENBLAS_AVX512_CORES):
        return default
    forced = _sgemm_child(n, repeats, threads, coretype)
    best = forced if forced["gflops_best"] > default["gflops_best"] else default
    return {**best, "default_kernel": {k: default[k] for k in ("kernel", "gflops_best", "gflops_median")}}


def _peak_record(op: str, threads: int, repeats: int, flops: int, stdout: str) -> dict:
    """The record of one probe child: its times (best and median), GFLOP/s for `flops` per call, its kernel."""
    child = json.loads(stdout.strip().splitlines()[-1])
    times = sorted(child["times"])
    return {"op": op, "threads": threads, "repeats": repeats, "flops": flops, "kernel": child.get("kernel"),
            "best_s": times[0], "median_s": times[len(times) // 2],
            "gflops_best": flops / times[0] / 1e9, "gflops_median": flops / times[len(times) // 2] / 1e9}


# (m, k, n) of the OpenVINO probes: a square matmul, and the shapes of the UNet's largest linear layers at 576 px
# (tokens x channels -> the GEGLU projection at levels 0 and 2): the best of them is the peak, each is kept
OPENVINO_PEAK_SHAPES = ((4096, 4096, 4096), (2048, 2048, 2048), (16384, 320, 2560), (13608, 1280, 10240))


def matmul_peak_openvino(n: int = DEFAULT_GEMM_N * 2, repeats: int = DEFAULT_GEMM_REPEATS,
                         precision: str = "bf16", shape: Optional[Tuple[int, int, int]] = None) -> Optional[dict]:
    """OpenVINO CPU MatMul (m, k) x (k, n) against a constant weight (`shape`; default n^3) at `precision` in
    OPENVINO_PRECISIONS (bf16: AMX / AVX512_BF16 where present; int8: u8 x s8, AMX-INT8 / VNNI where present), in a
    child process, with the kernel the plugin ran; None where openvino is not installed or the probe fails."""
    m, k, n = shape or (n, n, n)
    if min(m, k, n) <= 0 or repeats <= 0:
        raise ValueError(f"matmul_peak_openvino: sizes and repeats must be positive, got {(m, k, n)}, {repeats}")
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"matmul_peak_openvino: precision must be one of {OPENVINO_PRECISIONS}, got {precision!r}")
    env = {key: v for key, v in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
    proc = subprocess.run([sys.executable, "-c", _OPENVINO_CHILD, str(m), str(k), str(n), str(repeats), precision],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    rec = _peak_record(f"openvino matmul {m}x{k}x{n} {precision}", usable_cpus(), repeats, 2 * m * k * n,
                       proc.stdout)
    return {**rec, "shape": [m, k, n]}


def openvino_peaks(n: Optional[int] = None, repeats: int = DEFAULT_GEMM_REPEATS,
                   shapes=OPENVINO_PEAK_SHAPES) -> Dict[str, Optional[dict]]:
    """The OpenVINO MatMul peak at every precision: {"f32": ..., "bf16": ..., "int8": ...}, each the fastest of
    `shapes` (n: one n^3 shape instead), with every shape's record under "shapes"."""
    shapes = [(n, n, n)] if n else list(shapes)
    out: Dict[str, Optional[dict]] = {}
    for p in OPENVINO_PRECISIONS:
        recs = [r for r in (matmul_peak_openvino(repeats=repeats, precision=p, shape=s) for s in shapes) if r]
        best = max(recs, key=lambda r: r["gflops_best"]) if recs else None
        out[p] = {**best, "shapes": [{k: r[k] for k in ("shape", "gflops_best", "gflops_median", "kernel")}
                                     for r in recs]} if best else None
    return out


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
                      "openvino_matmul": openvino_peaks(repeats=a.repeats)}, indent=1))


if __name__ == "__main__":
    main()
