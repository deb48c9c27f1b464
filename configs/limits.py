"""Bounds on everything a user's input sizes (work, memory, disk), and the runtime's reliability settings.

Typed and in one place, like the model constants in schema.py, but not part of SV3DConfig: they bound what this
runtime accepts, they do not describe the model (and so do not change a config's hash or an export's manifest).
Both command lines and the Python API refuse a value outside these bounds with an error that names the bound.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # sampling (python -m runtime, SV3DPipeline.generate)
    max_steps: int = 1000                   # SV3D samples 50 steps; one step of the full model is ~1 min on a CPU
    max_guidance_scale: float = 100.0       # the reference uses 1.0 .. 2.5; far above that the frames saturate
    max_fps: int = 240
    # intra-op threads: at most usable_cpus(), a bound of the machine (more only oversubscribe the CPUs: on 2 CPUs,
    # 16 threads made a step 8x slower, 64 threads 28x, and 1000 threads did not finish a 2-step tiny run)
    max_images: int = 10000                 # images per command (each is read and checked before the first step)
    small_input_fraction: float = 0.25      # warn when the object is upscaled from under this share of the size
    # memory "auto" (runtime.pipeline): graphs whose files exceed this share of the machine's RAM are loaded one
    # stage at a time ("sequential"); the full fp32 export (8.7 GB) on a 24 GiB machine is over it
    resident_ram_fraction: float = 0.25
    # export (python -m export)
    max_resolution: int = 2048              # square pixels; SV3D is trained at 576
    max_attention_chunk: int = 1 << 20      # query tokens per attention chunk
    isolate_bytes: int = 1 << 30            # --isolate auto: graphs with more weight bytes run in worker processes
    attention_warn_bytes: int = 4 << 30     # a plain-attention score matrix above this gets a hint
    disk_margin: float = 1.05               # free-disk check: estimated bytes times this
    # the generation service (python -m runtime.serve); each is the default of a --flag where one exists
    serve_queue_size: int = 16              # queued jobs behind the running one; more gets 429 + Retry-After
    serve_max_queue_size: int = 10000
    serve_upload_bytes: int = 32 << 20      # the image part of a submission, streamed to disk and cut off past it
    serve_upload_pixels: int = 4096 * 4096  # refused before decoding (preprocess's own guard is 8192 x 8192)
    serve_form_bytes: int = 64 << 10        # everything in a submission but the image (the option fields)
    serve_form_fields: int = 64             # option fields per submission (elevation / azimuths may repeat)
    serve_retention_hours: float = 24.0     # finished jobs (their results and their record) are kept this long
    serve_max_attempts: int = 2             # a job whose worker died is run once more, then marked failed
    serve_lease_s: float = 30.0             # a running job whose worker sent no heartbeat for this long is orphaned
    serve_poll_s: float = 0.5               # an idle worker looks for jobs (another process may have queued one)
    serve_callback_timeout_s: float = 10.0  # per POST of a job's callback URL
    serve_callback_tries: int = 3
    # mesh (python -m runtime.mesh, --mesh)
    mesh_min_resolution: int = 16           # voxels a side of the carved cube
    mesh_max_resolution: int = 512          # 512^3 float32 = 512 MiB for the field alone
    mesh_min_faces: int = 100
    mesh_max_faces: int = 5_000_000
    mesh_max_smooth: int = 1000             # Taubin passes
    mesh_max_refine: int = 100              # colour-consistency passes (each carves at most one voxel layer)
    # reliability
    signal_guard_poll_s: float = 0.01       # how often runtime/interrupts.py re-asserts the SIGINT/SIGTERM handler
    worker_parent_poll_s: float = 0.5       # export workers check this often that their parent is alive


LIMITS = Limits()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), which is what the engines size their thread pools by."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # not Linux
        return os.cpu_count() or 1


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal, never '0.0 GB' for a small non-zero size."""
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


__all__ = ["LIMITS", "Limits", "human_bytes", "usable_cpus"]
