"""Load and fault tests of the generation service on the toy export (issue 19), loopback only, bounded in count
and time: 20 concurrent clients with the queue bound held; a client gone mid-upload; kill -9 and restart with no
job lost or duplicated; SIGTERM mid-job (143, the job back in the queue, then finished after a restart).
Marked ``serve``: in the full suite (CI), not the default tier."""
from __future__ import annotations

import signal
import socket

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from tests.serving import TOKEN, Server, wait_until  # noqa: E402

pytestmark = pytest.mark.serve

LONG_STEPS = 1000


def results_of(server: Server) -> list:
    return sorted(p.name for p in (server.data_dir / "results").iterdir())


def leftovers(server: Server) -> list:
    return sorted(p.name for d in ("uploads", "inputs") for p in (server.data_dir / d).iterdir())


def test_20_concurrent_submissions_all_complete_within_the_queue_bound(toy_export, tmp_path):
    from benchmarks.serve_load import run_load

    server = Server(toy_export[0], tmp_path / "data", "--queue-size", "6").start()
    try:
        report = run_load(server.base, jobs=20, steps=2, token=TOKEN, deadline_s=240)
    finally:
        assert server.stop() == 130
    assert report["states"] == {"done": 20}, report
    assert report["rejected_429"] > 0 and report["max_queue_seen"] <= 6, report     # the bound was reached, held
    assert report["seeds_match"] and report["ids_unique"], report
    assert len(results_of(server)) == 20 and leftovers(server) == []


def test_client_gone_mid_upload_leaves_nothing(toy_export, tmp_path):
    server = Server(toy_export[0], tmp_path / "data").start()
    try:
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 90000\r\n\r\n")
        part = b'--zz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + b"\x89PNG" * 5000
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head.encode() + part)
            uploads = server.data_dir / "uploads"
            wait_until(lambda: any(uploads.iterdir()), 30, "the upload to start arriving on disk")
        # the client is gone: the partial upload is removed, no job was made, and the server serves on
        wait_until(lambda: not any(uploads.iterdir()), 30, "the partial upload to be removed")
        job_id = server.submit(steps=1).json()["id"]
        assert server.wait_state(job_id, ["done", "failed"])["state"] == "done"
        assert results_of(server) == [job_id] and leftovers(server) == []
    finally:
        assert server.stop() == 130


def test_kill_9_and_restart_lose_and_duplicate_nothing(toy_export, tmp_path):
    server = Server(toy_export[0], tmp_path / "data").start()
    try:
        first = server.submit(steps=LONG_STEPS).json()["id"]
        others = [server.submit(steps=2, seed=i).json()["id"] for i in range(4)]
        wait_until(lambda: server.job(first).get("step", 0) >= 1, 60, "the first job to run a step")
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(30) == -signal.SIGKILL
    finally:
        server.stop()
    restarted = Server(toy_export[0], server.data_dir, port=server.port).start()
    try:
        views = {i: restarted.wait_state(i, ["done", "failed", "cancelled"]) for i in [first] + others}
    finally:
        assert restarted.stop() == 130
    assert {v["state"] for v in views.values()} == {"done"}, views
    assert views[first]["attempts"] == 2 and "restart or kill" in views[first]["notes"][0], views[first]
    assert all(views[i]["attempts"] == 1 for i in others)
    assert results_of(restarted) == sorted([first] + others)           # one folder each: nothing twice
    assert leftovers(restarted) == []


def test_sigterm_mid_job_requeues_it_and_exits_143(toy_export, tmp_path):
    server = Server(toy_export[0], tmp_path / "data").start()
    job_id = server.submit(steps=LONG_STEPS).json()["id"]
    wait_until(lambda: server.job(job_id).get("step", 0) >= 1, 60, "the job to run a step")
    assert server.stop(signal.SIGTERM) == 143
    assert "interrupted" in server.log.read_text()
    restarted = Server(toy_export[0], server.data_dir, port=server.port).start()
    try:
        view = restarted.wait_state(job_id, ["done", "failed"])
    finally:
        assert restarted.stop() == 130
    assert view["state"] == "done" and view["attempts"] == 1, view        # a clean stop costs no attempt
    assert "the server stopped while it ran" in view["notes"][0]
    assert results_of(restarted) == [job_id] and leftovers(restarted) == []
