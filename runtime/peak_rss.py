"""Peak resident memory of this process or of its children, in bytes: the one reading of ``ru_maxrss`` that the
exporter, the benchmarks and models.load_check report.

Linux reports ``ru_maxrss`` in KiB, macOS in bytes. RUSAGE_CHILDREN is the largest of the finished (waited-for) child processes,
not their sum: the exporter's worker steps and the benchmarks' per-backend children each report their own peak.
"""
from __future__ import annotations

import sys


def peak_rss_bytes(children: bool = False) -> int:
    """Peak RSS of this process, or of its largest finished child process when `children`."""
    import resource                   # POSIX only; imported here so that importing the module needs nothing

    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return int(resource.getrusage(who).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


__all__ = ["peak_rss_bytes"]
