"""The job store: one SQLite database (``<data-dir>/jobs.sqlite``) beside the outputs, shared by every process that
serves the same data folder (the standalone server, or the replicas of the Ray deployment on one machine).

A job's life::

    queued --claim--> running --finish--> done | failed | cancelled
       |                 |  \\--lease expired (its worker died)--> queued again (attempt 2), or failed after it
       \\--cancel--> cancelled          \\--cancel: cancel_requested, the worker stops at the next step

Every change is one transaction (``BEGIN IMMEDIATE``: writers queue on SQLite's lock), so two workers never claim
the same job and the queue bound holds under concurrent submissions. A running job carries a lease that its
worker renews (:meth:`JobStore.heartbeat`); a claim first re-queues the running jobs whose lease ran out, so a
job whose worker was killed (kill -9, a lost Ray replica) is run again by another worker -- once: after
``max_attempts`` it is marked failed with the reason. A worker whose job was taken from it notices on its next
progress report (:class:`LeaseLost`).
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from configs.limits import LIMITS

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
JOB_ID = re.compile(r"[0-9a-f]{32}")          # uuid4().hex; anything else never reaches a path
DB_NAME = "jobs.sqlite"
BUSY_TIMEOUT_S = 30.0
LOST_WORKER = "its worker stopped while it ran ({worker}, no heartbeat for {lease:g} s)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- queue order
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    argv TEXT NOT NULL,                         -- JSON: the job's options as the CLI's flags (runtime/serve/form.py)
    callback_url TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    step INTEGER NOT NULL DEFAULT 0,
    num_steps INTEGER,
    last_step_s REAL,
    step_s_sum REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    notes TEXT NOT NULL DEFAULT '[]'            -- JSON list: what happened to the job besides its state
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


_RESET_PROGRESS = "step = 0, num_steps = NULL, last_step_s = NULL, step_s_sum = 0"


class LeaseLost(Exception):
    """The job was taken from this worker (its lease ran out and another worker re-queued it)."""


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    argv: List[str]
    callback_url: Optional[str]
    created: float
    started: Optional[float]
    finished: Optional[float]
    step: int
    num_steps: Optional[int]
    last_step_s: Optional[float]
    step_s_sum: float
    attempts: int
    worker: Optional[str]
    cancel_requested: bool
    error: Optional[str]
    notes: List[str]
    position: Optional[int] = None              # 1 = next to run; queued jobs only

    def view(self) -> Dict:
        """The job as the API shows it (GET /v1/jobs/{id})."""
        out = {"id": self.id, "state": self.state, "created": self.created, "started": self.started,
               "finished": self.finished, "attempts": self.attempts, "notes": self.notes}
        if self.state == "queued":
            out["position"] = self.position
        if self.state == "running" or self.num_steps:
            out.update(step=self.step, num_steps=self.num_steps, last_step_s=self.last_step_s)
        if self.state == "running":
            out.update(worker=self.worker, cancel_requested=self.cancel_requested)
            out["eta_s"] = (None if not self.last_step_s or not self.num_steps
                            else round((self.num_steps - self.step) * self.last_step_s, 3))
        if self.error:
            out["error"] = self.error
        return out


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """The jobs of one data folder. Safe to share between threads and processes (one connection per call)."""

    def __init__(self, data_dir, *, lease_s: float = LIMITS.serve_lease_s,
                 max_attempts: int = LIMITS.serve_max_attempts) -> None:
        self.path = Path(data_dir) / DB_NAME
        self.lease_s = float(lease_s)
        self.max_attempts = int(max_attempts)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("PRAGMA journal_mode=WAL")        # readers never wait for the writer; kept in the file
            db.executescript(_SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # -- submission and reading --------------------------------------------------------------------------------
    def submit(self, job_id: str, argv: List[str], callback_url: Optional[str], max_queued: int) -> bool:
        """Queue a job unless ``max_queued`` jobs are queued already (then False, nothing stored)."""
        with self._tx() as db:
            if _count(db, "queued") >= max_queued:
                return False
            db.execute("INSERT INTO jobs (id, state, argv, callback_url, created) VALUES (?, 'queued', ?, ?, ?)",
                       (job_id, json.dumps(argv), callback_url, time.time()))
            return True

    def get(self, job_id: str) -> Optional[Job]:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            position = None
            if row["state"] == "queued":
                position = 1 + db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?",
                                          (row["seq"],)).fetchone()[0]
            return _job(row, position)

    def counts(self) -> Dict[str, int]:
        """{state: number of jobs}, every state present."""
        with self._tx() as db:
            found = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {s: int(found.get(s, 0)) for s in STATES}

    def step_stats(self) -> Dict[str, float]:
        """Steps run and their seconds over the stored jobs, and the latest step's latency."""
        with self._tx() as db:
            n, total = db.execute("SELECT COALESCE(SUM(step), 0), COALESCE(SUM(step_s_sum), 0) FROM jobs").fetchone()
            last = db.execute("SELECT last_step_s FROM jobs WHERE last_step_s IS NOT NULL "
                              "ORDER BY COALESCE(finished, 1e300) DESC, started DESC LIMIT 1").fetchone()
        return {"count": int(n), "sum": float(total), "last": None if last is None else float(last[0])}

    def recent_run_seconds(self, n: int) -> List[float]:
        """Run times (finished - started) of the latest ``n`` done jobs."""
        with self._tx() as db:
            rows = db.execute("SELECT finished - started FROM jobs WHERE state = 'done' ORDER BY finished DESC "
                              "LIMIT ?", (n,)).fetchall()
        return [float(r[0]) for r in rows]

    # -- the worker's side -------------------------------------------------------------------------------------
    def claim(self, worker: str) -> Optional[Job]:
        """The next queued job, now running on ``worker`` (after re-queueing the jobs of lost workers), or None."""
        now = time.time()
        with self._tx() as db:
            for row in db.execute("SELECT * FROM jobs WHERE state = 'running' AND lease_until < ?",
                                  (now,)).fetchall():
                _orphaned(db, row, LOST_WORKER.format(worker=row["worker"], lease=self.lease_s),
                          self.max_attempts, now)
            row = db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, worker = ?, "
                       f"lease_until = ?, {_RESET_PROGRESS} WHERE id = ?",
                       (now, worker, now + self.lease_s, row["id"]))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """Renew the lease; False (a cancel was asked) or LeaseLost (the job is no longer this worker's)."""
        with self._tx() as db:
            row = self._owned(db, job_id, worker)
            db.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (time.time() + self.lease_s, job_id))
            return not row["cancel_requested"]

    def progress(self, job_id: str, worker: str, step: int, num_steps: int, step_s: float,
                 steps_s: Optional[float] = None) -> bool:
        """Record that ``step`` of ``num_steps`` is done, the last one taking ``step_s`` (``steps_s``: the seconds
        of every step since the previous record; default ``step_s``), and renew the lease. False: cancel asked."""
        with self._tx() as db:
            row = self._owned(db, job_id, worker)
            db.execute("UPDATE jobs SET step = ?, num_steps = ?, last_step_s = ?, step_s_sum = step_s_sum + ?, "
                       "lease_until = ? WHERE id = ?",
                       (step, num_steps, step_s, step_s if steps_s is None else steps_s, time.time() + self.lease_s,
                        job_id))
            return not row["cancel_requested"]

    def finish(self, job_id: str, worker: str, state: str, error: Optional[str] = None) -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"finish: expected one of {FINAL_STATES}, got {state!r}")
        with self._tx() as db:
            self._owned(db, job_id, worker)
            db.execute("UPDATE jobs SET state = ?, finished = ?, error = ?, lease_until = NULL WHERE id = ?",
                       (state, time.time(), error, job_id))

    def requeue(self, job_id: str, worker: str, note: str) -> None:
        """Put a running job back in the queue, not counting the attempt (the server is stopping)."""
        with self._tx() as db:
            row = self._owned(db, job_id, worker)
            if _cancelled_meanwhile(db, row):
                return
            db.execute("UPDATE jobs SET state = 'queued', attempts = attempts - 1, worker = NULL, lease_until = NULL, "
                       f"{_RESET_PROGRESS}, notes = ? WHERE id = ?", (_add_note(row, note), job_id))

    def recover(self, reason: str) -> List[str]:
        """Every running job's worker is gone (a restarted single server): re-queue them, or fail them after
        ``max_attempts``. Returns their ids."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                _orphaned(db, row, reason, self.max_attempts, now)
        return [r["id"] for r in rows]

    @staticmethod
    def _owned(db: sqlite3.Connection, job_id: str, worker: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row["state"] != "running" or row["worker"] != worker:
            raise LeaseLost(f"job {job_id} is no longer running on {worker}")
        return row

    # -- cancel and retention ----------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Optional[Job]:
        """Cancel a queued job at once; ask a running one to stop at its next step. Returns the job after it."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state = 'queued'",
                       (time.time(), job_id))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'", (job_id,))
        return self.get(job_id)

    def expired(self, finished_before: float) -> List[str]:
        with self._tx() as db:
            marks = ",".join("?" * len(FINAL_STATES))
            rows = db.execute(f"SELECT id FROM jobs WHERE state IN ({marks}) AND finished < ?",
                              (*FINAL_STATES, finished_before)).fetchall()
        return [r[0] for r in rows]

    def delete(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def queued(self) -> int:
        with self._tx() as db:
            return _count(db, "queued")


def _count(db: sqlite3.Connection, state: str) -> int:
    return int(db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0])


def _add_note(row: sqlite3.Row, note: str) -> str:
    return json.dumps(json.loads(row["notes"]) + [note])


def _orphaned(db: sqlite3.Connection, row: sqlite3.Row, reason: str, max_attempts: int, now: float) -> None:
    """A running job whose worker is gone: queued again for another attempt, or failed after the last."""
    if _cancelled_meanwhile(db, row):
        return
    if row["attempts"] < max_attempts:
        db.execute(f"UPDATE jobs SET state = 'queued', worker = NULL, lease_until = NULL, {_RESET_PROGRESS}, notes = ? "
                   "WHERE id = ?",
                   (_add_note(row, f"attempt {row['attempts']}: {reason}; queued again"), row["id"]))
    else:
        db.execute("UPDATE jobs SET state = 'failed', finished = ?, lease_until = NULL, error = ?, notes = ? "
                   "WHERE id = ?", (now, f"{reason} (attempt {row['attempts']} of {max_attempts})",
                                    _add_note(row, f"attempt {row['attempts']}: {reason}"), row["id"]))


def _cancelled_meanwhile(db: sqlite3.Connection, row: sqlite3.Row) -> bool:
    """A running job that lost its worker after a cancel was asked is cancelled, not queued again."""
    if row["cancel_requested"]:
        db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, lease_until = NULL WHERE id = ?",
                   (time.time(), row["id"]))
    return bool(row["cancel_requested"])


def _job(row: sqlite3.Row, position: Optional[int] = None) -> Job:
    return Job(id=row["id"], state=row["state"], argv=json.loads(row["argv"]), callback_url=row["callback_url"],
               created=row["created"], started=row["started"], finished=row["finished"], step=row["step"],
               num_steps=row["num_steps"], last_step_s=row["last_step_s"], step_s_sum=row["step_s_sum"],
               attempts=row["attempts"], worker=row["worker"], cancel_requested=bool(row["cancel_requested"]),
               error=row["error"], notes=json.loads(row["notes"]), position=position)


__all__ = ["FINAL_STATES", "JOB_ID", "STATES", "Job", "JobStore", "LeaseLost", "new_job_id"]
