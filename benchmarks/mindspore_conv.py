"""Why is MindSpore's CPU 3x3 convolution ~200x slower than ONNX Runtime's, and what fixes it?

Run: `python -m benchmarks.mindspore_conv` (all cases, ~5-10 min on 2 cores) or `--cases name,name` / `--quick`.
Each case runs in its own child process, because the knobs under test (oneDNN's ISA cap, thread environment)
are read once when the engine loads. The child sets ONEDNN_VERBOSE=1, so every result also names the oneDNN
implementation that ran (`impl`), which is what explains the numbers.

Ops (FLOPs counted as 2 per multiply-accumulate, like models/flops.py):
  conv3x3        nn.Conv2d(C, C, 3, padding 1) on (N, C, H, W)                      2 N C^2 9 H W
  conv3x3_s2     the UNet/VAE down-sampling conv, stride 2                           2 N C^2 9 (H/2)(W/2)
  conv1x1        nn.Conv2d(C, C, 1)                                                   2 N C^2 H W
  conv_t3        the temporal (3,1) conv over (N, C, T=21, H*W/21), pad_mode same         2 N C^2 3 T S
  im2col_1x1     a 3x3 conv written as zero-pad (concat) + 9 shifted slices concatenated on channels + one
                 1x1 conv 9C -> C (same FLOPs as conv3x3; no 3x3 kernel involved)
  im2col_matmul  the same 9 slices, (N, 9C, HW), then W (C, 9C) @ cols as one MatMul
  flat_matmul    im2col without 4D slices: pad, flatten (H+2)(W+2), 9 contiguous 1D slices at offsets
                 dy (W+2) + dx of length H (W+2), W (C, 9C) @ cols, drop the 2 wrap-around columns with a 2D
                 slice of the (N C H, W+2) view (computes 2/W more FLOPs than needed)
  unfold_matmul  ops.unfold (Im2Col) then W (C, 9C) @ cols
  matmul         ops.matmul (n, n) @ (n, n)                                          2 n^3
  ort_conv3x3    ONNX Runtime's Conv on the same shape, for comparison in the same run
Runners: graph (GRAPH_MODE Cell), pynative, graphcell (exported MindIR loaded with mindspore.load + GraphCell:
the runtime's path). Median/min over `repeats` after one warm-up call.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

RESULT_TAG = "RESULT "
# oneDNN's CPU ISA names (ONEDNN_MAX_CPU_ISA); AVX2 is the highest level below the AVX-512 dispatch that
# routes plain-layout convolutions through jit_uni_ncsp (see README).
ISA_ENV = "ONEDNN_MAX_CPU_ISA"
ISA_AVX2 = "AVX2"
# the temporal (3,1) conv probe works on (N, C, T, H*W / T) with SV3D's frame count
TEMPORAL_FRAMES = 21


@dataclass
class Case:
    name: str
    op: str = "conv3x3"
    runner: str = "graph"              # graph | pynative | graphcell | ort
    n: int = 1                         # batch
    c: int = 320                       # channels in = out
    hw: int = 72                       # spatial size (square)
    dtype: str = "float32"             # float32 | float16 | bfloat16
    repeats: int = 3
    env: Dict[str, str] = field(default_factory=dict)
    context: Dict[str, object] = field(default_factory=dict)   # extra mindspore.set_context kwargs
    note: str = ""


def op_flops(case: Case) -> int:
    n, c, hw = case.n, case.c, case.hw
    if case.op in ("conv3x3", "im2col_1x1", "im2col_matmul", "flat_matmul", "unfold_matmul", "ort_conv3x3"):
        return 2 * n * c * c * 9 * hw * hw
    if case.op == "conv3x3_s2":
        return 2 * n * c * c * 9 * (hw // 2) ** 2
    if case.op == "conv1x1":
        return 2 * n * c * c * hw * hw
    if case.op == "conv_t3":
        return 2 * n * c * c * 3 * TEMPORAL_FRAMES * (hw * hw // TEMPORAL_FRAMES)
    if case.op == "matmul":
        return 2 * c ** 3
    raise ValueError(f"unknown op {case.op!r}")


# ---------------------------------------------------------------------------------------------------------------
# child side


def _build_cell(case: Case):
    import mindspore as ms
    import numpy as np
    from mindspore import Parameter, Tensor, nn, ops

    dt = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}[case.dtype]
    rng = np.random.default_rng(0)
    n, c, hw = case.n, case.c, case.hw

    def param(shape):
        return Parameter(Tensor(rng.standard_normal(shape).astype(np.float32) * 0.02, dt))

    class Shifts(nn.Cell):
        """(N, C, H, W) -> (N, 9C, H, W): the 3x3 neighbourhood of every pixel, zero-padded, tap-major."""

        def construct(self, x):
            b, ch, h, w = x.shape
            zc = ops.zeros((b, ch, h, 1), x.dtype)
            x = ops.concat((zc, x, zc), axis=3)
            zr = ops.zeros((b, ch, 1, w + 2), x.dtype)
            x = ops.concat((zr, x, zr), axis=2)                         # (N, C, H+2, W+2)
            taps = []
            for dy in range(3):
                for dx in range(3):
                    taps.append(x[:, :, dy:dy + h, dx:dx + w])
            return ops.concat(taps, axis=1)

    class Im2colConv1x1(nn.Cell):
        def __init__(self):
            super().__init__()
            self.shifts = Shifts()
            self.conv = nn.Conv2d(9 * c, c, 1, has_bias=True, dtype=dt)

        def construct(self, x):
            return self.conv(self.shifts(x))

    class Im2colMatMul(nn.Cell):
        def __init__(self):
            super().__init__()
            self.shifts = Shifts()
            self.weight = param((c, 9 * c))
            self.bias = param((c, 1))

        def construct(self, x):
            b, ch, h, w = x.shape
            cols = self.shifts(x).reshape(b, 9 * ch, h * w)             # (N, 9C, HW)
            y = ops.matmul(self.weight, cols) + self.bias               # (C, 9C) @ (N, 9C, HW) -> (N, C, HW)
            return y.reshape(b, ch, h, w)

    class FlatIm2colMatMul(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weight = param((c, 9 * c))                             # tap-major columns, like Shifts
            self.bias = param((c, 1))

        def construct(self, x):
            b, ch, h, w = x.shape
            zc = ops.zeros((b, ch, h, 1), x.dtype)
            x = ops.concat((zc, x, zc), axis=3)
            zr = ops.zeros((b, ch, 1, w + 2), x.dtype)
            x = ops.concat((zr, x, zr), axis=2).reshape(b, ch, (h + 2) * (w + 2))
            x = ops.concat((x, ops.zeros((b, ch, 2), x.dtype)), axis=2)   # room for the last tap's overrun
            span = h * (w + 2)                                          # output rows computed at full width W+2
            taps = []
            for dy in range(3):
                for dx in range(3):
                    off = dy * (w + 2) + dx
                    taps.append(x[:, :, off:off + span])
            cols = ops.concat(taps, axis=1)                             # (N, 9C, H (W+2))
            y = ops.matmul(self.weight, cols) + self.bias               # (N, C, H (W+2))
            return y.reshape(b * ch * h, w + 2)[:, :w].reshape(b, ch, h, w)

    class UnfoldMatMul(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weight = param((c, 9 * c))                             # (C, Ci*3*3), the conv weight flattened
            self.bias = param((c, 1))

        def construct(self, x):
            b, ch, h, w = x.shape
            cols = ops.unfold(x, kernel_size=3, padding=1)              # (N, 9C, HW)
            return (ops.matmul(self.weight, cols) + self.bias).reshape(b, ch, h, w)

    class MatMul(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weight = param((c, c))

        def construct(self, x):
            return ops.matmul(x, self.weight)

    if case.op == "conv3x3":
        cell, shape = nn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=True, dtype=dt), (n, c, hw, hw)
    elif case.op == "conv3x3_s2":
        cell = nn.Conv2d(c, c, 3, stride=2, pad_mode="pad", padding=1, has_bias=True, dtype=dt)
        shape = (n, c, hw, hw)
    elif case.op == "conv1x1":
        cell, shape = nn.Conv2d(c, c, 1, has_bias=True, dtype=dt), (n, c, hw, hw)
    elif case.op == "conv_t3":
        cell = nn.Conv2d(c, c, (3, 1), pad_mode="same", has_bias=True, dtype=dt)
        shape = (n, c, TEMPORAL_FRAMES, hw * hw // TEMPORAL_FRAMES)
    elif case.op == "im2col_1x1":
        cell, shape = Im2colConv1x1(), (n, c, hw, hw)
    elif case.op == "im2col_matmul":
        cell, shape = Im2colMatMul(), (n, c, hw, hw)
    elif case.op == "flat_matmul":
        cell, shape = FlatIm2colMatMul(), (n, c, hw, hw)
    elif case.op == "unfold_matmul":
        cell, shape = UnfoldMatMul(), (n, c, hw, hw)
    elif case.op == "matmul":
        cell, shape = MatMul(), (c, c)
    else:
        raise ValueError(f"unknown op {case.op!r}")
    x = Tensor(rng.standard_normal(shape).astype(np.float32), dt)
    return cell, x


def _time(fn, repeats: int) -> List[float]:
    fn()                                                                # warm-up (compile, primitive creation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _run_mindspore(case: Case) -> List[float]:
    import mindspore as ms

    ms.set_device("CPU")
    mode = ms.PYNATIVE_MODE if case.runner == "pynative" else ms.GRAPH_MODE
    ms.set_context(mode=mode, **case.context)
    cell, x = _build_cell(case)
    if case.runner == "graphcell":
        from mindspore import nn

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "probe")
            ms.export(cell, x, file_name=path, file_format="MINDIR")
            cell = nn.GraphCell(ms.load(path + ".mindir"))
    for attempt in range(2):                 # numpy-2 first-call SystemError (MINDSPORE_NOTES.md): retry once
        try:
            return _time(lambda: cell(x).asnumpy(), case.repeats)
        except SystemError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _run_ort(case: Case) -> List[float]:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n, c, hw = case.n, case.c, case.hw
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.02).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(c, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [n, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, hw, hw])],
                              initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    threads = int(case.env.get("ORT_THREADS", "0"))
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    return _time(lambda: sess.run(None, {"x": x}), case.repeats)


def im2col_errors(c: int = 16, hw: int = 12) -> Dict[str, float]:
    """max |conv3x3(x) - variant(x)| for the three im2col variants, with the 3x3 weight rearranged to each
    variant's column order (checks that the workarounds compute the same convolution)."""
    import mindspore as ms
    from mindspore import Tensor

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ref_cell, x = _build_cell(Case("check", op="conv3x3", n=2, c=c, hw=hw))
    w = ref_cell.weight.asnumpy()                                       # (Co, Ci, 3, 3)
    bias = ref_cell.bias.asnumpy()
    ref = ref_cell(x).asnumpy()
    # tap-major columns (Shifts, flat): index (dy * 3 + dx) * C + ci;  unfold: ci * 9 + dy * 3 + dx
    tap_major = w.transpose(0, 2, 3, 1).reshape(c, 9 * c)
    errors = {}
    for op, weight in (("im2col_1x1", tap_major), ("flat_matmul", tap_major), ("unfold_matmul", w.reshape(c, -1))):
        cell, _ = _build_cell(Case("check", op=op, n=2, c=c, hw=hw))
        if op == "im2col_1x1":
            cell.conv.weight.set_data(Tensor(weight.reshape(c, 9 * c, 1, 1)))
            cell.conv.bias.set_data(Tensor(bias))
        else:
            cell.weight.set_data(Tensor(weight))
            cell.bias.set_data(Tensor(bias.reshape(c, 1)))
        errors[op] = float(abs(cell(x).asnumpy() - ref).max())
    return errors


def _child(case: Case) -> None:
    if case.op == "check_im2col":
        print(RESULT_TAG + json.dumps(im2col_errors()), flush=True)
        return
    times = _run_ort(case) if case.runner == "ort" else _run_mindspore(case)
    print(RESULT_TAG + json.dumps(times), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# parent side


def _impls(verbose_lines: List[str]) -> List[str]:
    """Distinct 'primitive:implementation' of oneDNN exec lines, e.g. 'convolution:jit_uni_ncsp:conv+ref:any'."""
    seen: List[str] = []
    for line in verbose_lines:
        parts = line.split(",")
        if len(parts) > 6 and parts[0] == "onednn_verbose" and parts[3] == "exec":
            key = f"{parts[5]}:{parts[6]}"
            if parts[5] in ("convolution", "matmul", "inner_product") and key not in seen:
                seen.append(key)
    return seen


def _child_run(case: Case, env: Dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`python -m benchmarks.mindspore_conv --child CASE` in a scratch folder (MindSpore writes rank_0/ there
    when a graph fails to compile), with the repository on PYTHONPATH."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(env, PYTHONPATH=os.pathsep.join([repo] + [p for p in [env.get("PYTHONPATH", "")] if p]))
    cmd = [sys.executable, "-m", "benchmarks.mindspore_conv", "--child", json.dumps(asdict(case))]
    with tempfile.TemporaryDirectory(prefix="ms_conv_probe_") as scratch:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=scratch)


def run_case(case: Case, timeout: float = 900.0) -> dict:
    # the case's own settings only: an ISA cap inherited from the caller (tests/conftest.py sets one) is dropped
    env = {k: v for k, v in os.environ.items() if k != ISA_ENV}
    env.update(case.env)
    env["ONEDNN_VERBOSE"] = "1"
    t0 = time.perf_counter()
    try:
        p = _child_run(case, env, timeout)
    except subprocess.TimeoutExpired:
        return {**asdict(case), "error": f"timed out after {timeout:.0f} s"}
    out = p.stdout.splitlines()
    res = [line for line in out if line.startswith(RESULT_TAG)]
    row = {**asdict(case), "flops": op_flops(case), "impl": _impls(out), "wall_s": time.perf_counter() - t0}
    if p.returncode != 0 or not res:
        err = [line for line in p.stderr.splitlines() if line.strip() and "Warning" not in line]
        row["error"] = (err[-1] if err else f"exit {p.returncode}")[:300]
        return row
    times = sorted(json.loads(res[-1][len(RESULT_TAG):]))
    row.update(times_s=times, min_s=times[0], median_s=times[len(times) // 2],
               gflops_best=op_flops(case) / times[0] / 1e9, gflops_median=op_flops(case) / times[len(times) // 2] / 1e9)
    return row


def default_cases(quick: bool = False) -> List[Case]:
    """The experiments of benchmarks/README.md. Slow (reference-kernel) cases use smaller shapes."""
    avx2 = {ISA_ENV: ISA_AVX2}
    small = dict(c=320, hw=36, repeats=2)                              # 2.4 GFLOP: ~2 s on the slow path
    cases = [
        # the problem, at the UNet's first-level shape, and what runs
        Case("baseline conv3x3 320@72", repeats=2),
        Case("ORT conv3x3 320@72", op="ort_conv3x3", runner="ort"),
        Case("conv1x1 320@72", op="conv1x1"),
        # the fix: cap oneDNN below AVX-512 (env, before mindspore loads)
        Case("conv3x3 320@72 ISA=AVX2", env=avx2),
        Case("conv3x3 320@72 ISA=AVX2 graphcell", runner="graphcell", env=avx2),
        Case("conv1x1 320@72 ISA=AVX2", op="conv1x1", env=avx2),
        Case("matmul 2048 default", op="matmul", c=2048),
        Case("matmul 2048 ISA=AVX2", op="matmul", c=2048, env=avx2),
        # the workaround inside the graph, no env needed
        Case("im2col+1x1 320@72", op="im2col_1x1"),
        Case("im2col+matmul 320@72", op="im2col_matmul"),
        Case("flat im2col+matmul 320@72", op="flat_matmul"),
        Case("flat im2col+matmul 320@72 graphcell", op="flat_matmul", runner="graphcell"),
        Case("unfold+matmul 320@72", op="unfold_matmul"),
        Case("unfold+matmul 320@72 graphcell", op="unfold_matmul", runner="graphcell"),
    ]
    if quick:
        return cases
    cases += [
        # settings that do not help (default ISA, smaller shape)
        Case("conv3x3 320@36", **small),
        Case("conv3x3 320@36 pynative", runner="pynative", **small),
        Case("conv3x3 320@36 graphcell", runner="graphcell", **small),
        Case("conv3x3 320@36 jit O0", context={"jit_config": {"jit_level": "O0"}}, **small),
        Case("conv3x3 320@36 jit O1", context={"jit_config": {"jit_level": "O1"}}, **small),
        Case("conv3x3 320@36 runtime_num_threads=1", context={"runtime_num_threads": 1}, **small),
        Case("conv3x3 320@36 OMP_NUM_THREADS=2", env={"OMP_NUM_THREADS": "2"}, **small),
        Case("conv3x3 320@36 ISA=AVX512_CORE", env={ISA_ENV: "AVX512_CORE"}, **small),
        Case("conv3x3 320@36 batch 4", n=4, c=320, hw=36, repeats=1),
        Case("conv3x3 64@72", c=64, hw=72, repeats=2),
        Case("conv3x3 320@36 fp16", dtype="float16", **small),
        Case("conv3x3 320@36 bf16", dtype="bfloat16", **small),
        Case("conv3x3_s2 320@72", op="conv3x3_s2", repeats=2),
        Case("temporal conv (3,1) 320@72", op="conv_t3", repeats=2),
        # with the ISA cap, the other UNet convolutions
        Case("conv3x3_s2 320@72 ISA=AVX2", op="conv3x3_s2", env=avx2),
        Case("temporal conv (3,1) 320@72 ISA=AVX2", op="conv_t3", env=avx2),
        Case("conv3x3 1280@18 ISA=AVX2", c=1280, hw=18, env=avx2),
        Case("conv3x3 320@72 batch 4 ISA=AVX2", n=4, env=avx2),
        Case("conv3x3 320@72 ISA=AVX2 runtime_num_threads=1", env=avx2, context={"runtime_num_threads": 1}),
        Case("im2col+1x1 320@72 ISA=AVX2", op="im2col_1x1", env=avx2),
        Case("flat im2col+matmul 1280@18", op="flat_matmul", c=1280, hw=18),
        Case("flat im2col+matmul 640@36", op="flat_matmul", c=640, hw=36),
        Case("flat im2col+matmul 320@72 batch 4", op="flat_matmul", n=4),
        Case("ORT conv3x3 1280@18", op="ort_conv3x3", runner="ort", c=1280, hw=18),
        Case("ORT conv3x3 640@36", op="ort_conv3x3", runner="ort", c=640, hw=36),
        Case("conv3x3 640@36 ISA=AVX2", c=640, hw=36, env=avx2),
        # reduced precision (AMX-BF16 / AVX512-FP16 on this CPU)
        Case("matmul 2048 bf16", op="matmul", c=2048, dtype="bfloat16"),
        Case("matmul 2048 fp16", op="matmul", c=2048, dtype="float16"),
        Case("conv1x1 320@72 bf16", op="conv1x1", dtype="bfloat16"),
        Case("im2col+1x1 320@72 bf16", op="im2col_1x1", dtype="bfloat16"),
    ]
    return cases


def to_markdown(rows: List[dict]) -> str:
    lines = ["| case | op | runner | N,C,HW | dtype | GFLOP/s best | median | oneDNN implementation |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = f"{r['n']},{r['c']},{r['hw']}" if r["op"] != "matmul" else f"{r['c']}^3"
        if "error" in r:
            perf = f"error: {r['error']}"
            lines.append(f"| {r['name']} | {r['op']} | {r['runner']} | {shape} | {r['dtype']} | {perf} | | |")
            continue
        impl = "; ".join(r["impl"]) or ("MLAS (ORT)" if r["runner"] == "ort" else "-")
        lines.append(f"| {r['name']} | {r['op']} | {r['runner']} | {shape} | {r['dtype']} | "
                     f"{r['gflops_best']:.1f} | {r['gflops_median']:.1f} | {impl} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mindspore_conv", description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="only the problem, the fix and the workaround")
    p.add_argument("--cases", default="", help="comma-separated substrings of case names to run")
    p.add_argument("--out", default="", help="append JSON lines here")
    a = p.parse_args(argv)
    if a.child:
        _child(Case(**json.loads(a.child)))
        return 0
    from .peak import machine_info, sgemm_peak

    check = _child_run(Case("check", op="check_im2col"), dict(os.environ), 600.0)
    err = [line for line in check.stdout.splitlines() if line.startswith(RESULT_TAG)]
    print(f"# im2col variants vs conv3x3, max abs difference: "
          f"{err[-1][len(RESULT_TAG):] if err else check.stderr[-300:]}")
    cases = default_cases(a.quick)
    if a.cases:
        keys = [k.strip() for k in a.cases.split(",") if k.strip()]
        cases = [c for c in cases if any(k in c.name for k in keys)]
    info = machine_info()
    peak = sgemm_peak()
    print(f"# {info['cpu_model']}, {info['cpus_usable']} CPUs, load {info['loadavg_1_5_15']}, numpy sgemm "
          f"{peak['gflops_best']:.0f} GFLOP/s best", flush=True)
    rows = []
    for case in cases:
        row = run_case(case)
        row["loadavg_1"] = os.getloadavg()[0]
        rows.append(row)
        perf = row.get("error") or f"{row['gflops_best']:.1f} GFLOP/s (median {row['gflops_median']:.1f})"
        print(f"{case.name:45s} {perf}  {'; '.join(row.get('impl', []))}", flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps({**row, "machine": info, "sgemm_peak": peak}) + "\n")
    print()
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
