"""The generation service's HTTP API on the toy export (issue 19): one ``python -m runtime.serve`` process on a
loopback port for the module, driven as a client would: submit, poll, download, cancel; every kind of bad input
refused with its 4xx before it costs anything (no job, no file left); the bearer token; callbacks; metrics.
Skipped without the serve requirements (requirements-serve.txt)."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from tests.serving import SAMPLE_IMAGE, TOKEN, Server, env, free_port, wait_until  # noqa: E402
from tests.helpers import REPO  # noqa: E402

QUEUE_SIZE = 3
MAX_UPLOAD_BYTES = 100_000
MAX_PIXELS = 128 * 128                       # the sample image's size exactly
LONG_STEPS = 1000                            # the limit; over 5 s with the test servers' slowed UNet


@pytest.fixture(scope="module")
def server(toy_export, tmp_path_factory):
    folder, _ = toy_export
    s = Server(folder, tmp_path_factory.mktemp("serve") / "data", "--queue-size", str(QUEUE_SIZE),
               "--max-upload-bytes", str(MAX_UPLOAD_BYTES), "--max-pixels", str(MAX_PIXELS))
    s.start()
    yield s
    assert s.stop() == 130, s.log.read_text()[-2000:]


def leftovers(server: Server) -> list:
    return sorted(p.name for d in ("uploads", "inputs") for p in (server.data_dir / d).iterdir())


def job_count(server: Server) -> int:
    text = server.request("GET", "/metrics").text
    return sum(int(line.split()[-1]) for line in text.splitlines() if line.startswith("sv3d_jobs{"))


def png_bytes(width: int, height: int, noise: bool = False) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    rgba = (rng.integers(0, 256, (height, width, 4)) if noise else np.full((height, width, 4), 200)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def post_bytes(server: Server, data: bytes, name: str = "x.png", **fields):
    return server.request("POST", "/v1/jobs", files={"image": (name, data, "image/png")},
                          data={k: str(v) for k, v in fields.items()})


def raw_post(server: Server, headers: dict, body: bytes):
    """A POST /v1/jobs written on a socket as given (a client may lie about its length); (status, body text)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Authorization": f"Bearer {TOKEN}",
                                                 "Host": "127.0.0.1", "Connection": "close"}.items())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\n{head}\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode()


def test_submit_poll_download_equal_to_the_pipeline(server, toy_export):
    from PIL import Image

    from runtime import SV3DPipeline

    r = server.submit(steps=3, seed=11, fps=7)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    view = server.wait_state(job_id, ["done", "failed"])
    assert view["state"] == "done", view
    assert (view["step"], view["num_steps"], view["attempts"]) == (3, 3, 1) and view["last_step_s"] > 0
    files = {name: server.request("GET", path) for name, path in view["results"].items()}
    assert all(f.status_code == 200 for f in files.values()), {k: f.status_code for k, f in files.items()}
    assert files["video.mp4"].content[4:8] == b"ftyp" and files["video.mp4"].headers["content-type"] == "video/mp4"
    assert files["video.gif"].content[:6] == b"GIF89a"
    assert files["contact_sheet.png"].content[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads(files["info.json"].content)
    assert (info["num_steps"], info["seed"], info["fps"], info["job"]) == (3, 11, 7, job_id)
    assert set(info["timings"]["stages"]) >= {"clip_encoder", "vae_encoder", "unet", "vae_decoder", "total"}
    with zipfile.ZipFile(io.BytesIO(files["frames.zip"].content)) as z:
        names = sorted(z.namelist())
        frames = np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in names])
    assert len(names) == 21
    # the same generation through the Python API on the CLI's preprocessing of the same file: equal frames
    pipe = SV3DPipeline.from_export(toy_export[0], backend="onnxruntime")
    expected = pipe.generate(str(SAMPLE_IMAGE), seed=11, num_steps=3)
    np.testing.assert_array_equal(frames, expected.frames_uint8)
    assert leftovers(server) == []


def test_bad_input_gets_a_4xx_and_costs_nothing(server):
    before = job_count(server)
    cases = [
        (server.submit(steps=5000), 400, "invalid --steps: expected an integer in [1, 1000], got 5000"),
        (server.submit(steps="abc"), 400, "invalid int value: 'abc'"),
        (server.submit(guider="wobbly"), 400, "invalid choice: 'wobbly'"),
        (server.submit(min_scale=3, max_scale=2), 400, "--min-scale <= --max-scale"),
        (server.submit(backend="mindspore"), 400, "unknown options"),
        (server.submit(elevation="10 --demo"), 400, "invalid elevation"),
        (server.submit(elevation=10), 400, "sv3d_u"),                     # the toy export has no camera
        (server.submit(fps=0), 400, "invalid --fps"),
        (server.submit(callback_url="file:///etc/passwd"), 400, "invalid callback_url"),
        (post_bytes(server, b"this is not an image"), 422, "not an image"),
        (post_bytes(server, png_bytes(129, 128)), 422, f"at most {MAX_PIXELS} pixels"),
        (post_bytes(server, png_bytes(180, 180, noise=True)), 413, "image too large"),   # cut off mid-stream
        (server.request("POST", "/v1/jobs", files={"steps": (None, "2")}), 400, "no image"),
        (server.request("POST", "/v1/jobs", json={"steps": 2}), 415, "multipart/form-data"),
    ]
    for r, status, text in cases:
        assert (r.status_code, text in r.json().get("error", "")) == (status, True), (status, text, r.text)
    # a declared length over the cap is refused before the body is read
    status, body = raw_post(server, {"Content-Type": "multipart/form-data; boundary=zz",
                                     "Content-Length": str(10 ** 9)}, b"--zz\r\n")
    assert status == 413 and "submission too large" in body, body
    assert job_count(server) == before and leftovers(server) == []
    # the message names the client's file, not the server's upload path
    assert "[x.png]" in post_bytes(server, b"junk").json()["error"]


def test_ids_and_files_that_try_path_tricks(server):
    for path in ("/v1/jobs/..%2F..%2Fjobs.sqlite", "/v1/jobs/ABCDEF", "/v1/jobs/" + "0" * 31 + "g",
                 "/v1/jobs/..", "/v1/jobs/%2e%2e%2fserver.lock/result/info.json"):
        r = server.request("GET", path)
        assert r.status_code in (400, 404) and "jobs.sqlite" not in r.text, (path, r.status_code, r.text)
    assert server.request("GET", "/v1/jobs/" + "0" * 32).status_code == 404
    assert server.request("DELETE", "/v1/jobs/" + "0" * 32).status_code == 404
    job_id = server.submit(steps=1).json()["id"]
    server.wait_state(job_id, ["done"])
    for name in ("..%2F..%2Fjobs.sqlite", "frames", "../info.json", f"{job_id}.mp4", "nope.png"):
        r = server.request("GET", f"/v1/jobs/{job_id}/result/{name}")
        assert r.status_code == 404, (name, r.status_code, r.text)


def test_queue_bound_429_and_cancel_queued_and_running(server):
    # a 1000-step job takes over 5 s on the test server (tests/serving.py UNET_DELAY_S), a submission
    # milliseconds: the queue fills long before the worker drains it
    ids, full = [], None
    for _ in range(QUEUE_SIZE + 3):
        r = server.submit(steps=LONG_STEPS)
        if r.status_code == 429:
            full = r
            break
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    assert full is not None and int(full.headers["retry-after"]) >= 1 and "queue is full" in full.json()["error"]
    views = [server.job(i) for i in ids]
    positions = [v["position"] for v in views if v["state"] == "queued"]
    assert positions == list(range(1, len(positions) + 1)) and len(positions) >= QUEUE_SIZE - 1, views

    last = ids[-1]                                       # a queued job: cancelled at once
    r = server.request("DELETE", f"/v1/jobs/{last}")
    assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text
    running = wait_until(lambda: next((v for v in map(server.job, ids[:-1]) if v["state"] == "running"
                                       and 1 <= v.get("step", 0) < LONG_STEPS // 2), None), 60,
                         "a job half way through its steps")
    assert running["num_steps"] == LONG_STEPS and running["eta_s"] >= 0   # step i of N, latency, ETA
    r = server.request("DELETE", f"/v1/jobs/{running['id']}")           # running: stops at a step boundary
    assert r.status_code == 202 and r.json()["cancel_requested"] is True, r.text
    stopped = server.wait_state(running["id"], ["cancelled", "done"])
    assert stopped["state"] == "cancelled" and stopped["step"] < LONG_STEPS, stopped
    assert not (server.data_dir / "results" / running["id"]).exists()
    assert server.request("GET", f"/v1/jobs/{running['id']}/result/info.json").status_code == 409
    assert server.request("DELETE", f"/v1/jobs/{running['id']}").status_code == 409
    for i in ids:
        server.request("DELETE", f"/v1/jobs/{i}")
        assert server.wait_state(i, ["cancelled", "done"])["state"] in ("cancelled", "done")
    wait_until(lambda: leftovers(server) == [], 30, "the cancelled jobs' inputs to be removed")


def test_token_required(server):
    for method, path in (("GET", "/v1/jobs/" + "0" * 32), ("POST", "/v1/jobs"), ("GET", "/metrics")):
        for token in (None, "wrong"):
            r = server.request(method, path, token=token)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, r.text)
    assert server.request("GET", "/healthz", token=None).json()["status"] == "ok"
    page = server.request("GET", "/", token=None)
    assert page.status_code == 200 and "<form" in page.text


@pytest.mark.parametrize("flags, message", [
    (["--host", "0.0.0.0"], "binding 0.0.0.0 needs a token"),
    (["--backend", "bogus"], "invalid choice: 'bogus'"),
    (["--steps", "3"], "options not accepted here"),
    (["--queue-size", "0"], "invalid --queue-size"),
    (["--ray", "--graphs", "/nonexistent"], "graphs folder not found"),
])
def test_server_flags_refused_before_anything_starts(toy_export, tmp_path, flags, message):
    r = subprocess.run([sys.executable, "-m", "runtime.serve", "--graphs", str(toy_export[0]), "--data-dir",
                        str(tmp_path / "d"), *flags], cwd=REPO, env=dict(env(), SV3D_SERVE_TOKEN=""),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def test_callback_posted_to_a_loopback_receiver(server):
    got = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = HTTPServer(("127.0.0.1", free_port()), Receiver)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        job_id = server.submit(steps=1, callback_url=f"http://127.0.0.1:{httpd.server_port}/done").json()["id"]
        wait_until(lambda: got, 60, "the callback")
        assert got == [{"id": job_id, "state": "done", "error": None}]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_metrics_are_prometheus_text(server):
    r = server.request("GET", "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = dict(line.rsplit(" ", 1) for line in r.text.splitlines() if line and not line.startswith("#"))
    assert int(samples['sv3d_jobs{state="done"}']) >= 1 and samples["sv3d_queue_limit"] == str(QUEUE_SIZE)
    assert int(samples["sv3d_step_seconds_count"]) >= 1 and float(samples["sv3d_step_seconds_sum"]) > 0
    assert samples["sv3d_worker_up"] == "1" and int(samples["sv3d_queue_length"]) >= 0
