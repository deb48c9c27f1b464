"""``python -m benchmarks.serve_load``: N concurrent clients against a running ``python -m runtime.serve``.

    python -m runtime.serve --graphs DIR --data-dir /tmp/serve-load --queue-size 8 &
    python -m benchmarks.serve_load --url http://127.0.0.1:8000 --jobs 20 --steps 2

Each client submits one job (honouring 429 + Retry-After, at most ``--deadline`` seconds in all), then polls it
until it ends. A monitor samples /metrics for the queue length the whole time. Reports the submit latency
(p50 / p95 of the accepted POSTs), the 429s, the largest queue seen, jobs per minute (first submit to last job
done) and every job's end state; exits 1 when a job did not end done or the queue passed its limit. Loopback
only: the URL must point at 127.0.0.1 / localhost. Bounded in count (--jobs) and time (--deadline).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from runtime.sample_data import sample_image_path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
POLL_S = 0.1
MAX_CLIENTS = 100


def _client(base: str, token: Optional[str]):
    import httpx

    return httpx.Client(base_url=base, timeout=60,
                        headers={"Authorization": f"Bearer {token}"} if token else {})


def _one_job(base: str, token: Optional[str], image: bytes, fields: Dict[str, str], deadline: float) -> Dict:
    out = {"submit_s": None, "rejected": 0, "state": "not submitted", "id": None, "seed": fields.get("seed")}
    with _client(base, token) as c:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = c.post("/v1/jobs", files={"image": ("object.png", image, "image/png")}, data=fields)
            if r.status_code == 202:
                out.update(submit_s=time.perf_counter() - t0, id=r.json()["id"], state="queued")
                break
            if r.status_code != 429:
                out["state"] = f"refused {r.status_code}: {r.text[:200]}"
                return out
            out["rejected"] += 1
            time.sleep(min(float(r.headers.get("retry-after", 1)), max(0.0, deadline - time.monotonic())))
        while out["id"] and time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{out['id']}").json()
            out["state"] = job["state"]
            if job["state"] in ("done", "failed", "cancelled"):
                out["done_at"] = time.monotonic()
                if job["state"] == "done":
                    info = c.get(f"/v1/jobs/{out['id']}/result/info.json").json()
                    out["info_seed"], out["info_job"] = info["seed"], info["job"]
                break
            time.sleep(POLL_S)
    return out


def _queue_monitor(base: str, token: Optional[str], stop: threading.Event, seen: List[int]) -> None:
    with _client(base, token) as c:
        while not stop.is_set():
            for line in c.get("/metrics").text.splitlines():
                if line.startswith("sv3d_queue_length "):
                    seen.append(int(float(line.split()[1])))
            stop.wait(0.02)


def run_load(base: str, *, jobs: int = 20, steps: int = 2, token: Optional[str] = None, deadline_s: float = 300,
             image: Optional[Path] = None) -> Dict:
    host = urllib.parse.urlsplit(base).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"serve_load: loopback only: expected a URL on {LOOPBACK}, got {host}")
    if not 1 <= jobs <= MAX_CLIENTS:
        raise SystemExit(f"serve_load: --jobs: expected 1..{MAX_CLIENTS}, got {jobs}")
    data = Path(image or sample_image_path()).read_bytes()
    with _client(base, token) as c:
        limit = int(c.get("/healthz").json()["queue_size"])
    stop, seen = threading.Event(), []
    monitor = threading.Thread(target=_queue_monitor, args=(base, token, stop, seen), daemon=True)
    monitor.start()
    start = time.monotonic()
    deadline = start + deadline_s
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda i: _one_job(base, token, data, {"steps": str(steps), "seed": str(i)},
                                                   deadline), range(jobs)))
    stop.set()
    monitor.join()
    submit = np.array([r["submit_s"] for r in results if r["submit_s"] is not None])
    ends = [r["done_at"] for r in results if "done_at" in r]
    states = {}
    for r in results:
        states[r["state"]] = states.get(r["state"], 0) + 1
    wall = (max(ends) - start) if ends else float("nan")
    return {"jobs": jobs, "steps": steps, "queue_limit": limit, "states": states,
            "rejected_429": sum(r["rejected"] for r in results), "max_queue_seen": max(seen, default=0),
            "submit_p50_s": float(np.percentile(submit, 50)) if submit.size else None,
            "submit_p95_s": float(np.percentile(submit, 95)) if submit.size else None,
            "wall_s": wall, "jobs_per_min": states.get("done", 0) / wall * 60 if ends else 0.0,
            "seeds_match": all(r.get("info_seed") == int(r["seed"]) and r.get("info_job") == r["id"]
                               for r in results if r["state"] == "done"),
            "ids_unique": len({r["id"] for r in results if r["id"]}) == sum(1 for r in results if r["id"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--token", default=None)
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument("--image", default=None)
    args = p.parse_args(argv)
    report = run_load(args.url, jobs=args.jobs, steps=args.steps, token=args.token, deadline_s=args.deadline,
                      image=args.image)
    print(json.dumps(report, indent=1))
    ok = (report["states"].get("done") == args.jobs and report["max_queue_seen"] <= report["queue_limit"]
          and report["seeds_match"] and report["ids_unique"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
