"""What one serving process is configured with (``python -m runtime.serve``'s flags), and where its files live.

    <data-dir>/jobs.sqlite       the job store (runtime/serve/jobs.py)
    <data-dir>/results/<id>/     a finished job's outputs (runtime/outputs.py layout), published atomically
    <data-dir>/inputs/<id>.png   a queued job's conditioning image (checked and prepared at submission)
    <data-dir>/uploads/          submissions being received (removed when received, refused or cut off)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from configs.limits import LIMITS

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    graphs: str
    data_dir: str
    engine_argv: Tuple[str, ...] = ()       # --backend, --device ... as python -m runtime takes them (flags.py)
    host: str = "127.0.0.1"
    port: int = 8000
    token: Optional[str] = None
    queue_size: int = LIMITS.serve_queue_size
    max_upload_bytes: int = LIMITS.serve_upload_bytes
    max_pixels: int = LIMITS.serve_upload_pixels
    retention_hours: float = LIMITS.serve_retention_hours
    lease_s: float = LIMITS.serve_lease_s

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def make_dirs(self) -> None:
        for d in (self.results, self.inputs, self.uploads):
            d.mkdir(parents=True, exist_ok=True)


__all__ = ["LOOPBACK_HOSTS", "ServeSettings"]
