"""The worker: one thread that runs the queued jobs one at a time on graphs loaded once.

Each turn it claims the next job from the store (runtime/serve/jobs.py), generates it through the pipeline's
per-step callback -- which records the step's latency, renews the lease, and raises to stop at the step boundary
when the job was cancelled or the server is stopping -- and publishes the result with runtime.outputs.write_result
(written aside, renamed into place). A heartbeat thread renews the lease while a long step runs. Between jobs it
removes the finished jobs older than the retention setting.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
from typing import Optional

import numpy as np

from configs.limits import LIMITS

from ..cli import generation_options
from ..errors import SV3DError
from ..outputs import write_result
from . import notify
from .flags import job_options
from .jobs import Job, JobStore, LeaseLost

log = logging.getLogger("runtime.serve")
RETENTION_SWEEP_S = 60.0
PROGRESS_WRITE_S = 0.2          # steps faster than this are recorded (and a cancel looked for) together


class Cancelled(Exception):
    """The job was cancelled while it ran."""


class Stopping(Exception):
    """The server is stopping: the job goes back to the queue."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """Runs the jobs of ``store`` on ``pipeline`` (an SV3DPipeline of ``manifest``) in a thread."""

    def __init__(self, settings, store: JobStore, pipeline, manifest, name: Optional[str] = None) -> None:
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.manifest = manifest
        self.name = name or worker_name()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lost = threading.Event()           # the heartbeat found the running job taken away
        self._next_sweep = 0.0

    # -- control -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sv3d-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop after the running job's current step (that job is queued again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sweep()
            try:
                job = self.store.claim(self.name)
            except Exception:                    # a locked or broken database: keep the worker alive, say why
                log.error("claiming a job failed:\n%s", traceback.format_exc())
                job = None
            if job is None:
                self._wake.wait(LIMITS.serve_poll_s)
                self._wake.clear()
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        """Run one claimed job to its end state (or back to the queue when the server stops)."""
        self._lost.clear()
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, beat_stop), name="sv3d-heartbeat",
                                daemon=True)
        beat.start()
        state, error = None, None
        try:
            self._generate(job)
            state = "done"
        except Cancelled:
            state = "cancelled"
        except Stopping:
            self._quietly(self.store.requeue, job.id, self.name, "the server stopped while it ran; queued again")
        except LeaseLost as e:
            log.warning("%s", e)
        except SV3DError as e:
            state, error = "failed", str(e)
        except Exception as e:                   # a bug or an engine failure: the job fails, the worker goes on
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            state, error = "failed", f"internal error: {type(e).__name__}: {e}"
        finally:
            beat_stop.set()
            beat.join()
        if state is not None:
            self._quietly(self.store.finish, job.id, self.name, state, error)
            (self.settings.inputs / f"{job.id}.png").unlink(missing_ok=True)
            if job.callback_url:
                notify.post_later(job.callback_url, {"id": job.id, "state": state, "error": error})

    def _generate(self, job: Job) -> None:
        from PIL import Image

        image_path = self.settings.inputs / f"{job.id}.png"
        opts = job_options(job.argv, str(image_path), self.settings.graphs)
        options = generation_options(self.manifest, opts)
        with Image.open(image_path) as im:
            image = np.asarray(im.convert("RGB"))     # the prepared conditioning image, S x S (submission)

        pending = {"s": 0.0, "written": time.monotonic()}

        def on_step(info) -> None:
            if self._lost.is_set():
                raise LeaseLost(f"job {job.id} was taken from {self.name} (its lease ran out)")
            pending["s"] += float(info["step_s"])
            step, n = int(info["step"]) + 1, int(info["num_steps"])
            now = time.monotonic()
            if now - pending["written"] >= PROGRESS_WRITE_S or step == n or self._stop.is_set():
                go_on = self.store.progress(job.id, self.name, step, n, float(info["step_s"]), pending["s"])
                pending.update(s=0.0, written=now)
                if not go_on:
                    raise Cancelled()
            if self._stop.is_set():
                raise Stopping()

        result = self.pipeline.generate(image, options=options, callback=on_step)
        shutil.rmtree(self.settings.results / job.id, ignore_errors=True)   # an earlier attempt's, unfinished
        info = {"job": job.id, "graphs": os.path.basename(os.path.normpath(self.settings.graphs)),
                "variant": self.manifest.variant, "backend": self.pipeline.backend, "device": self.pipeline.device,
                "precision": self.pipeline.precisions, "memory": self.pipeline.memory, "worker": self.name,
                "attempt": job.attempts}
        write_result(result, self.settings.results, job.id, fps=opts.fps, info=info)

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.store.lease_s / 3):
            try:
                self.store.heartbeat(job_id, self.name)
            except LeaseLost:
                self._lost.set()
                return
            except Exception:
                log.error("heartbeat of job %s failed:\n%s", job_id, traceback.format_exc())

    def _sweep(self) -> None:
        """Remove the results and records of jobs finished more than the retention setting ago."""
        now = time.time()
        if now < self._next_sweep:
            return
        retention_s = self.settings.retention_hours * 3600.0
        self._next_sweep = now + min(RETENTION_SWEEP_S, max(retention_s / 4, LIMITS.serve_poll_s))
        for job_id in self.store.expired(now - retention_s):
            shutil.rmtree(self.settings.results / job_id, ignore_errors=True)
            (self.settings.inputs / f"{job_id}.png").unlink(missing_ok=True)
            self.store.delete(job_id)

    @staticmethod
    def _quietly(fn, *args) -> None:
        try:
            fn(*args)
        except LeaseLost as e:
            log.warning("%s", e)


__all__ = ["Cancelled", "Stopping", "Worker", "worker_name"]
