"""The service's parts that need no web stack: the SQLite job store (queue bound, claim order, leases, retry once,
cancel, concurrent claims), the retention sweep, the job form read by the command line's parser, and the streamed
multipart reader (python-multipart; skipped without it)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime.errors import SV3DError
from runtime.serve.flags import OptionsError, engine_options, job_argv, job_options
from runtime.serve.jobs import JobStore, LeaseLost, new_job_id
from runtime.serve.settings import ServeSettings
from runtime.serve.worker import Worker


def store_with(tmp_path, n: int, **kw):
    store = JobStore(tmp_path, **kw)
    ids = [new_job_id() for _ in range(n)]
    for i in ids:
        assert store.submit(i, ["--steps=2"], None, max_queued=100)
    return store, ids


def test_queue_bound_and_order(tmp_path):
    store = JobStore(tmp_path)
    ids = [new_job_id() for _ in range(3)]
    assert [store.submit(i, [], None, max_queued=2) for i in ids] == [True, True, False]
    assert store.get(ids[2]) is None and store.queued() == 2
    assert [store.get(i).position for i in ids[:2]] == [1, 2]
    job = store.claim("w1")
    assert (job.id, job.state, job.attempts, job.worker) == (ids[0], "running", 1, "w1")
    assert store.get(ids[1]).position == 1
    assert store.progress(job.id, "w1", 1, 2, 0.5) is True
    view = store.get(job.id).view()
    assert (view["step"], view["num_steps"], view["last_step_s"], view["eta_s"]) == (1, 2, 0.5, 0.5)
    store.finish(job.id, "w1", "done")
    assert store.get(job.id).state == "done" and store.counts()["done"] == 1


def test_cancel_queued_at_once_running_at_the_next_step(tmp_path):
    store, (a, b) = store_with(tmp_path, 2)
    running = store.claim("w")
    assert store.cancel(b).state == "cancelled"
    assert store.cancel(a).cancel_requested and store.get(a).state == "running"
    assert store.progress(running.id, "w", 1, 2, 0.1) is False      # the worker's cue to stop
    store.finish(a, "w", "cancelled")
    assert store.get(a).state == "cancelled"


def test_lost_worker_retried_once_then_failed_with_the_reason(tmp_path):
    store, (job_id,) = store_with(tmp_path, 1, lease_s=0.2, max_attempts=2)
    assert store.claim("dead-1").id == job_id
    time.sleep(0.3)                               # the lease running out is what is tested
    second = store.claim("w2")
    assert (second.id, second.attempts, second.worker) == (job_id, 2, "w2")
    assert "no heartbeat" in second.notes[0] and "queued again" in second.notes[0]
    with pytest.raises(LeaseLost):                # the first worker, back from the dead, may not report
        store.progress(job_id, "dead-1", 1, 2, 0.1)
    time.sleep(0.3)
    assert store.claim("w3") is None
    failed = store.get(job_id)
    assert failed.state == "failed" and "attempt 2 of 2" in failed.error and "w2" in failed.error


def test_restart_recovery_and_stop_requeue(tmp_path):
    store, (a, b, c) = store_with(tmp_path, 3)
    store.claim("w")
    store.requeue(a, "w", "the server stopped")   # a graceful stop does not count the attempt
    assert (store.get(a).state, store.get(a).attempts) == ("queued", 0)
    store.claim("w")
    assert store.recover("restarted") == [a]
    job = store.get(a)
    assert (job.state, job.attempts, job.notes[-1]) == ("queued", 1, "attempt 1: restarted; queued again")
    store.claim("w")
    store.cancel(a)                               # cancel asked, then the worker died: cancelled, not re-run
    store.recover("restarted")
    assert store.get(a).state == "cancelled"


def test_concurrent_claims_never_share_a_job(tmp_path):
    store, ids = store_with(tmp_path, 40)
    claimed, lock = [], threading.Lock()

    def work(name):
        while (job := store.claim(name)) is not None:
            with lock:
                claimed.append(job.id)
            store.finish(job.id, name, "done")

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids) and store.counts()["done"] == 40


def test_retention_removes_old_results_and_records(tmp_path):
    settings = ServeSettings(graphs="g", data_dir=str(tmp_path), retention_hours=1.0)
    settings.make_dirs()
    store, (old, new) = store_with(tmp_path, 2)
    for i in (old, new):
        store.claim("w")
        store.finish(i, "w", "done")
        (settings.results / i).mkdir()
    with store._tx() as db:                      # finished two hours ago
        db.execute("UPDATE jobs SET finished = ? WHERE id = ?", (time.time() - 7200, old))
    Worker(settings, store, pipeline=None, manifest=None)._sweep()
    assert store.get(old) is None and not (settings.results / old).exists()
    assert store.get(new).state == "done" and (settings.results / new).is_dir()


def test_form_fields_become_the_clis_flags():
    argv = job_argv({"steps": ["4"], "seed": [""], "elevation": ["10, -5.5", "7"], "orbit": ["dynamic"]})
    assert argv == ["--steps=4", "--elevation", "10", "-5.5", "7", "--orbit=dynamic"]
    opts = job_options(argv, "x.png", "graphs")
    assert (opts.steps, opts.seed, opts.elevation, opts.orbit, opts.images) == (4, None, [10, -5.5, 7], "dynamic",
                                                                                 ["x.png"])
    for fields, message in (({"steps": ["--demo"]}, "invalid int value"), ({"threads": ["2"]}, "unknown options"),
                            ({"steps": ["1", "2"]}, "given 2 times"), ({"azimuths": ["1 --demo"]}, "invalid azimuths"),
                            ({"fps": ["100000"]}, "invalid --fps")):
        with pytest.raises(SV3DError, match=message):
            job_options(job_argv(fields), "x.png", "graphs")
    assert engine_options(["--graphs", "g", "--backend", "onnxruntime"]).backend == "onnxruntime"
    with pytest.raises(OptionsError, match="--steps"):
        engine_options(["--graphs", "g", "--steps", "3"])


def multipart(parts, boundary="b0undary"):
    body = b""
    for name, value, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def receive(body: bytes, content_type: str, path, chunk: int = 7, **caps):
    from runtime.serve.upload import receive_form

    async def chunks():
        for i in range(0, len(body), chunk):
            yield body[i:i + chunk]

    kw = dict(image_field="image", max_image_bytes=1000, max_form_bytes=100, max_fields=4)
    kw.update(caps)
    return asyncio.run(receive_form(chunks(), content_type, path, **kw))


def test_streamed_upload_with_caps(tmp_path):
    pytest.importorskip("python_multipart")
    from runtime.serve.upload import UploadError

    path = tmp_path / "up.part"
    image = bytes(range(256)) * 3
    body, ctype = multipart([("steps", b"4", None), ("image", image, "../../evil.png"), ("seed", b"1", None)])
    form = receive(body, ctype, path)
    assert form.fields == {"steps": ["4"], "seed": ["1"]} and form.filename == "evil.png"
    assert path.read_bytes() == image and form.image_bytes == len(image)
    for caps, message, status in (({"max_image_bytes": 500}, "image too large", 413),
                                  ({"max_form_bytes": 1}, "form fields too large", 413),
                                  ({"max_fields": 1}, "too many form fields", 413)):
        with pytest.raises(UploadError, match=message) as e:
            receive(body, ctype, path, **caps)
        assert e.value.status == status and not path.exists()
    with pytest.raises(UploadError, match="multipart/form-data") as e:
        receive(body, "application/json", path)
    assert e.value.status == 415
    with pytest.raises(UploadError, match="ended inside the image part"):
        receive(body[:len(body) // 2], ctype, path)
    assert not path.exists()


def test_importing_the_runtime_and_the_service_loads_no_web_stack():
    import subprocess
    import sys

    from tests.helpers import REPO

    script = ("import sys, runtime, runtime.serve.app, runtime.serve.ray_app, runtime.serve.service, "
              "runtime.serve.cli\n"
              "web = sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'uvicorn', 'ray', "
              "'python_multipart', 'httpx'})\n"
              "sys.exit(f'loaded {web}' if web else 0)")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
