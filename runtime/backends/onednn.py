"""The oneDNN ISA cap MindSpore needs on AVX-512 CPUs (numpy-free, stdlib only).

MindSpore 2.10's CPU convolution hands plain-layout (NCHW/OIHW) k x k convolutions to oneDNN, which on AVX-512 CPUs
dispatches them to a reference loop (~1 GFLOP/s); capped at AVX2, oneDNN uses its im2col + jit sgemm path instead
(~190 GFLOP/s on this machine), at the cost of capping its matmuls too (294 -> 170 GFLOP/s). Measured in
benchmarks/README.md section 3. oneDNN reads the cap once, when MindSpore loads, so it must be in the environment
before `import mindspore`; a value the user set is kept.
"""
import contextlib
import os

ISA_ENV = "ONEDNN_MAX_CPU_ISA"
MINDSPORE_CPU_ISA = "AVX2"
_set_by_us = False


def cap_onednn_isa() -> None:
    """Set ONEDNN_MAX_CPU_ISA=AVX2 unless the user chose a value (call before MindSpore is imported)."""
    global _set_by_us
    if ISA_ENV not in os.environ:
        os.environ[ISA_ENV] = MINDSPORE_CPU_ISA
        _set_by_us = True


@contextlib.contextmanager
def without_our_cap():
    """The environment without the cap this module set (a user's own value stays), for the duration of a block.

    Other engines link their own oneDNN, which reads the same variable once, at its first kernel: OpenVINO's CPU
    plugin under an AVX2 cap loses AMX/AVX-512 and has no bf16 softmax at all. It initialises inside this block.
    """
    removed = _set_by_us and os.environ.get(ISA_ENV) == MINDSPORE_CPU_ISA
    if removed:
        del os.environ[ISA_ENV]
    try:
        yield
    finally:
        if removed:
            os.environ[ISA_ENV] = MINDSPORE_CPU_ISA
