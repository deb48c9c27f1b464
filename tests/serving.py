"""What the service's test modules share: a ``python -m runtime.serve`` process on a free loopback port (its UNet
slowed by UNET_DELAY_S per call, tests/slow_unet/sitecustomize.py), requests to it, and waiting on a job's state
(polling with a deadline: no bare sleeps).

Everything talks to 127.0.0.1 only.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from runtime.sample_data import sample_image_path
from tests.helpers import REPO

SAMPLE_IMAGE = sample_image_path()
START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 120
POLL_S = 0.05
TOKEN = "test-token-1234"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = POLL_S):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


SLOW_UNET = Path(__file__).resolve().parent / "slow_unet"     # sitecustomize.py: a slower engine's test double
UNET_DELAY_S = 0.005                 # per UNet call: a 1000-step job lasts over 5 s, long enough to act on mid-run


def env(unet_delay_s: float = 0.0) -> dict:
    paths = [str(REPO)] + ([str(SLOW_UNET)] if unet_delay_s else []) + [os.environ.get("PYTHONPATH")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)),
                SV3D_TEST_UNET_DELAY_S=str(unet_delay_s) if unet_delay_s else "")


class Server:
    """A ``python -m runtime.serve`` subprocess; ``token`` is sent with every request."""

    def __init__(self, graphs: Path, data_dir: Path, *flags: str, token: Optional[str] = TOKEN,
                 port: Optional[int] = None) -> None:
        self.graphs, self.data_dir, self.flags, self.token = Path(graphs), Path(data_dir), flags, token
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.data_dir.parent / f"{self.data_dir.name}-server.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> "Server":
        cmd = [sys.executable, "-m", "runtime.serve", "--graphs", str(self.graphs), "--data-dir",
               str(self.data_dir), "--port", str(self.port), "--backend", "onnxruntime", *self.flags]
        if self.token:
            cmd += ["--token", self.token]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env(UNET_DELAY_S), stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_until(self._healthy, timeout, f"the server on port {self.port} ({self.log})")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return self.request("GET", "/healthz", timeout=2).status_code == 200
        except Exception:
            return False

    def request(self, method: str, path: str, *, token: Optional[str] = "default", **kw):
        import httpx

        headers = dict(kw.pop("headers", {}))
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.base + path, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def submit(self, image: Path = SAMPLE_IMAGE, **fields):
        with open(image, "rb") as f:
            return self.request("POST", "/v1/jobs", files={"image": (Path(image).name, f, "image/png")},
                                data={k: str(v) for k, v in fields.items()})

    def job(self, job_id: str) -> dict:
        r = self.request("GET", f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_state(self, job_id: str, states: Iterable[str], timeout: float = JOB_TIMEOUT_S) -> dict:
        states = tuple(states)
        return wait_until(lambda: (lambda j: j if j["state"] in states else None)(self.job(job_id)), timeout,
                          f"job {job_id} to be {states}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the server did not exit within {timeout} s of signal {sig}")


def running(server: Server):
    """Context manager: the server started, and stopped (Ctrl-C) at the end whatever happened."""
    from contextlib import contextmanager

    @contextmanager
    def cm():
        server.start()
        try:
            yield server
        finally:
            server.stop()

    return cm()
