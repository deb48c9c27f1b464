"""The oneDNN ISA cap MindSpore needs on AVX-512 CPUs (numpy-free, stdlib only).

MindSpore 2.10's CPU convolution hands plain-layout (NCHW/OIHW) k x k convolutions to oneDNN, which on AVX-512 CPUs
dispatches them to a reference loop (~1 GFLOP/s); capped at AVX2, oneDNN uses its im2col + jit sgemm path instead
(~190 GFLOP/s on this machine), at the cost of capping its matmuls too (294 -> 170 GFLOP/s). Measured in
benchmarks/README.md section 3. oneDNN reads the cap once, when MindSpore loads, so it must be in the environment
before `import mindspore`; a value the user set is kept.
"""
import os

ISA_ENV = "ONEDNN_MAX_CPU_ISA"
MINDSPORE_CPU_ISA = "AVX2"


def cap_onednn_isa() -> None:
    """Set ONEDNN_MAX_CPU_ISA=AVX2 unless the user chose a value (call before MindSpore is imported)."""
    os.environ.setdefault(ISA_ENV, MINDSPORE_CPU_ISA)
