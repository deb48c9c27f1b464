"""Timing summaries and a small timer for warm-up + repeated runs."""
from __future__ import annotations

import time
from typing import Callable, List, Sequence, Tuple

import numpy as np


def summarize(times: Sequence[float]) -> dict:
    """n, median, min, p90, max, mean of a list of seconds (p90 by linear interpolation)."""
    t = np.asarray(list(times), dtype=np.float64)
    if t.size == 0:
        raise ValueError("summarize: no timings")
    return {"n": int(t.size), "median_s": float(np.median(t)), "min_s": float(t.min()),
            "p90_s": float(np.percentile(t, 90)), "max_s": float(t.max()), "mean_s": float(t.mean())}


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> Tuple[List[float], List[float]]:
    """Run fn `warmup` times, then `repeats` times (wall clock, perf_counter): (warm-up times, timed times).

    The warm-up times are kept apart (the first call includes engine-side compilation and allocation) and do not
    enter the statistics."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"time_calls: warmup must be >= 0 and repeats >= 1, got {warmup}, {repeats}")
    warm, times = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        (warm if i < warmup else times).append(time.perf_counter() - t0)
    return warm, times
