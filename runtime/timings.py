"""Where one generation's time goes: seconds per stage, in execution order, and per sampling step.

The stages of ``SV3DPipeline.generate``: preprocess, clip_encoder, vae_encoder, conditioning, unet (the graph time of
every step), sampling_glue (the sampler's numpy time), vae_decoder, postprocess, total; plus load_<graph> in the
sequential memory mode. A step's graph time is what a TimedRunner around the UNet runner measured during the step,
its glue time the rest of the step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

import numpy as np


@dataclass(frozen=True)
class StepTiming:
    index: int
    sigma: float
    graph_s: float      # time inside the UNet graph call(s)
    glue_s: float       # numpy time of the step: preconditioning, batch assembly, guidance, Euler update


@dataclass
class Timings:
    """Seconds per stage (in execution order) and per sampling step."""
    stages: Dict[str, float] = field(default_factory=dict)
    steps: List[StepTiming] = field(default_factory=list)
    precision: Dict[str, str] = field(default_factory=dict)     # graph -> precision it ran at

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + float(seconds)

    def to_dict(self) -> dict:
        return {"stages": dict(self.stages), "precision": dict(self.precision),
                "steps": [{"index": s.index, "sigma": s.sigma, "graph_s": s.graph_s, "glue_s": s.glue_s}
                          for s in self.steps]}

    def summary(self) -> str:
        """A small table: per-stage seconds and share, then per-step mean graph/glue time and steps/s."""
        lines = []
        if self.precision:
            lines.append("precision: " + ", ".join(f"{k} {v}" for k, v in self.precision.items()))
        lines.append(f"{'stage':<16}{'seconds':>10}{'share':>8}")
        total = self.stages.get("total") or sum(v for k, v in self.stages.items() if k != "total") or 1e-12
        for k, v in self.stages.items():
            lines.append(f"{k:<16}{v:>10.4f}{100 * v / total:>7.1f}%")
        if self.steps:
            g = np.array([s.graph_s for s in self.steps])
            u = np.array([s.glue_s for s in self.steps])
            per = g + u
            lines.append(f"{len(self.steps)} steps: {1.0 / max(per.mean(), 1e-12):.2f} step/s; per step median "
                         f"{np.median(per):.4f} s (graph {np.median(g):.4f} s, numpy glue {np.median(u):.4f} s)")
        return "\n".join(lines)


class TimedRunner:
    """A proxy of a graph runner (anything with ``spec`` and ``run(feeds)``) that adds up the seconds its runs take,
    so that the code calling it (the denoiser) stays free of timing. ``take()`` returns them and starts again."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._seconds = 0.0

    @property
    def spec(self):
        return self.runner.spec

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        t0 = time.perf_counter()
        try:
            return self.runner.run(feeds)
        finally:
            self._seconds += time.perf_counter() - t0

    def take(self) -> float:
        """The seconds spent in ``run`` since the last take."""
        seconds, self._seconds = self._seconds, 0.0
        return seconds


__all__ = ["StepTiming", "TimedRunner", "Timings"]
