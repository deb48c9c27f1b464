"""One serving process: the export's graphs loaded once, the job store, the worker, and what the HTTP layer asks
of them (runtime/serve/app.py holds no logic of its own beyond status codes).

A submission is checked completely before it is queued, by the command line's own code: the options
(runtime/serve/flags.py), then the image (runtime.preprocess.prepare_image: a readable image, within the pixel
cap, with a foreground). The prepared conditioning image is kept (``inputs/<id>.png``), the upload removed; a
refused submission leaves nothing behind.
"""
from __future__ import annotations

import fcntl
import logging
import os
import statistics
import time
import zipfile
from pathlib import Path
from typing import Dict, Optional

from configs.limits import LIMITS

from ..cli import generation_options, run_options
from ..errors import SV3DError
from ..manifest import Manifest
from ..outputs import write_png
from ..pipeline import SV3DPipeline
from ..preprocess import prepare_image
from .flags import engine_options, job_argv, job_options
from .jobs import FINAL_STATES, JOB_ID, Job, JobStore, new_job_id
from .notify import check_callback_url
from .settings import ServeSettings
from .upload import Form
from .worker import Worker

log = logging.getLogger("runtime.serve")
LOCK_NAME = "server.lock"
RESTART_REASON = "the server stopped while it ran (restart or kill)"
RETRY_AFTER_DEFAULT_S = 5
RETRY_AFTER_JOBS = 20                    # recent jobs whose duration estimates Retry-After

# The files of a finished job: API name -> name in the result folder (runtime/outputs.py); frames.zip is built
# on first request from frames/.
RESULT_FILES = {"video.mp4": "{id}.mp4", "video.gif": "{id}.gif", "contact_sheet.png": "contact_sheet.png",
                "input.png": "input.png", "info.json": "info.json", "frames.zip": "frames.zip"}
MEDIA_TYPES = {".mp4": "video/mp4", ".gif": "image/gif", ".png": "image/png", ".json": "application/json",
               ".zip": "application/zip"}


class QueueFull(SV3DError):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__("the queue is full", expected=f"at most {limit} queued jobs",
                         hint=f"retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class NotFound(SV3DError):
    """An unknown job or result file (404)."""


class Conflict(SV3DError):
    """The job is not in a state that allows this (409)."""


class Service:
    """Graphs, store and worker of one process. ``standalone``: the only process on this data folder (it locks
    the folder, and on start re-queues or fails the jobs a previous process left running)."""

    def __init__(self, settings: ServeSettings, *, standalone: bool = True) -> None:
        self.settings = settings
        self.standalone = standalone
        settings.make_dirs()
        self._lock = self._lock_data_dir() if standalone else None
        self.store = JobStore(settings.data_dir, lease_s=settings.lease_s)
        engine = engine_options(["--graphs", settings.graphs, *settings.engine_argv])
        self.manifest = Manifest.load(settings.graphs)
        self.pipeline = SV3DPipeline.from_manifest(self.manifest, run_options(engine))
        self.worker = Worker(settings, self.store, self.pipeline, self.manifest)

    def _lock_data_dir(self):
        f = open(self.settings.root / LOCK_NAME, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise SV3DError("another server uses this data folder", path=self.settings.root,
                            hint="one standalone server per --data-dir; use --ray for several workers") from None
        return f

    def start(self) -> None:
        if self.standalone:
            for job_id in self.store.recover(RESTART_REASON):
                log.warning("job %s was running when the server stopped: queued again or failed", job_id)
            for stale in self.settings.uploads.iterdir():        # submissions cut off by the stop
                stale.unlink(missing_ok=True)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- submission --------------------------------------------------------------------------------------------
    def check_room(self) -> None:
        """Refuse before reading a submission when the queue is full."""
        if self.store.queued() >= self.settings.queue_size:
            raise QueueFull(self.settings.queue_size, self.retry_after_s())

    def accept(self, form: Form) -> str:
        """Check a received submission completely, keep its prepared image, queue it; returns the job id."""
        callback_url = check_callback_url((form.fields.pop("callback_url", None) or [None])[-1])
        argv = job_argv(form.fields)
        if form.image is None:
            raise SV3DError("no image in the submission", expected="a file in the form field 'image'", got="none")
        try:
            opts = job_options(argv, str(form.image), self.settings.graphs)
            generation_options(self.manifest, opts)
            pre = prepare_image(self.manifest.runtime, self.manifest.shapes.resolution, form.image,
                                remove_background=opts.remove_background, max_pixels=self.settings.max_pixels)
        except SV3DError as e:                   # name the client's file, not the server's upload path
            if e.path is not None:
                raise type(e)(str(e).replace(f" [{e.path}]", f" [{form.filename}]")) from None
            raise
        job_id = new_job_id()
        target = self.settings.inputs / f"{job_id}.png"
        part = target.with_suffix(".png.part")
        try:
            write_png(part, pre.rgb_uint8)
            os.replace(part, target)
            if not self.store.submit(job_id, argv, callback_url, self.settings.queue_size):
                raise QueueFull(self.settings.queue_size, self.retry_after_s())
        except BaseException:
            part.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            raise
        self.worker.wake()
        return job_id

    def retry_after_s(self) -> int:
        """Seconds until a queue slot is likely free: the median of the recent jobs' run times."""
        seconds = self.store.recent_run_seconds(RETRY_AFTER_JOBS)
        return max(1, round(statistics.median(seconds))) if seconds else RETRY_AFTER_DEFAULT_S

    # -- jobs and results --------------------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        if not JOB_ID.fullmatch(job_id):
            raise SV3DError("invalid job id", expected="32 lowercase hex digits", got=repr(job_id[:80]))
        job = self.store.get(job_id)
        if job is None:
            raise NotFound("no such job", got=job_id, hint="finished jobs are kept "
                                                           f"{self.settings.retention_hours:g} h")
        return job

    def view(self, job_id: str) -> Dict:
        job = self.job(job_id)
        out = job.view()
        if job.state == "done":
            out["results"] = {name: f"/v1/jobs/{job.id}/result/{name}" for name in RESULT_FILES}
        return out

    def cancel(self, job_id: str) -> Dict:
        job = self.job(job_id)
        if job.state in FINAL_STATES:
            raise Conflict(f"the job is already {job.state}", expected="a queued or running job")
        job = self.store.cancel(job_id)
        if job.state == "cancelled":                 # it was queued: its prepared image is no longer needed
            (self.settings.inputs / f"{job_id}.png").unlink(missing_ok=True)
        return job.view()

    def result_file(self, job_id: str, name: str) -> Path:
        job = self.job(job_id)
        if name not in RESULT_FILES:
            raise NotFound("no such result file", expected=f"one of {list(RESULT_FILES)}", got=repr(name[:80]))
        if job.state != "done":
            raise Conflict(f"the job is {job.state}", expected="a done job")
        folder = self.settings.results / job.id
        path = folder / RESULT_FILES[name].format(id=job.id)
        if name == "frames.zip" and not path.exists():
            zip_frames(folder / "frames", path)
        if not path.is_file():
            raise NotFound("the result file is gone", got=name, hint="removed outside the server?")
        return path

    # -- health and metrics ------------------------------------------------------------------------------------
    def health(self) -> Dict:
        return {"status": "ok" if self.worker.alive else "worker stopped", "worker": self.worker.name,
                "variant": self.manifest.variant, "backend": self.pipeline.backend,
                "resolution": self.manifest.shapes.resolution, "num_frames": self.manifest.shapes.num_frames,
                "camera": self.pipeline.has_camera,
                "graphs_load_s": round(self.pipeline.load_seconds, 3), "queue": self.store.queued(),
                "queue_size": self.settings.queue_size}

    def metrics(self) -> str:
        counts = self.store.counts()
        steps = self.store.step_stats()
        lines = ["# HELP sv3d_queue_length Jobs waiting to run.", "# TYPE sv3d_queue_length gauge",
                 f"sv3d_queue_length {counts['queued']}",
                 "# HELP sv3d_queue_limit Queued jobs beyond which submissions get 429.",
                 "# TYPE sv3d_queue_limit gauge", f"sv3d_queue_limit {self.settings.queue_size}",
                 "# HELP sv3d_jobs Jobs in the store by state (finished ones until the retention removes them).",
                 "# TYPE sv3d_jobs gauge"]
        lines += [f'sv3d_jobs{{state="{s}"}} {n}' for s, n in counts.items()]
        lines += ["# HELP sv3d_step_seconds Sampling step latency over the stored jobs.",
                  "# TYPE sv3d_step_seconds summary",
                  f"sv3d_step_seconds_sum {steps['sum']:.6f}", f"sv3d_step_seconds_count {steps['count']}",
                  "# HELP sv3d_last_step_seconds Latency of the latest sampling step.",
                  "# TYPE sv3d_last_step_seconds gauge",
                  f"sv3d_last_step_seconds {steps['last'] if steps['last'] is not None else 'NaN'}",
                  "# HELP sv3d_graphs_load_seconds Time this process took to load the graphs.",
                  "# TYPE sv3d_graphs_load_seconds gauge",
                  f"sv3d_graphs_load_seconds {self.pipeline.load_seconds:.6f}",
                  "# HELP sv3d_worker_up 1 while this process's worker thread runs.",
                  "# TYPE sv3d_worker_up gauge", f"sv3d_worker_up {int(self.worker.alive)}"]
        return "\n".join(lines) + "\n"


def zip_frames(frames: Path, target: Path) -> Path:
    """frames/*.png -> target, written aside and renamed into place (two requests at once both get a whole zip)."""
    part = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.part")
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as z:
            for png in sorted(frames.glob("*.png")):
                z.write(png, f"frames/{png.name}")
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


__all__ = ["Conflict", "MEDIA_TYPES", "NotFound", "QueueFull", "RESULT_FILES", "Service", "zip_frames"]
