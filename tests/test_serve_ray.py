"""The service as a Ray Serve deployment (``python -m runtime.serve --ray``) on a local Ray cluster on 127.0.0.1
with the toy export: 2 replicas with resident graphs, 6 jobs, one replica killed (SIGKILL) mid-job; every job
ends done, none lost or run twice to a result, the killed one run again by the other replica; any replica
answers for any job. Kept small: half a CPU per replica, a 200 MB object store, no dashboard. Marked ``serve``."""
from __future__ import annotations

import json
import os
import signal

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("ray.serve")

from tests.serving import Server, wait_until  # noqa: E402

pytestmark = pytest.mark.serve

JOBS = 6
LONG_STEPS = 400                 # over 2 s each on the test servers (tests/serving.py)
LEASE_S = 3
RAY_START_S = 240


def job_or_none(server: Server, job_id: str):
    """The job's view, or None while the proxy still routes to the killed replica (a 5xx)."""
    try:
        r = server.request("GET", f"/v1/jobs/{job_id}", timeout=10)
    except Exception:
        return None
    return r.json() if r.status_code == 200 else None


def test_two_replicas_six_jobs_one_replica_killed_mid_job(toy_export, tmp_path):
    server = Server(toy_export[0], tmp_path / "data", "--ray", "--replicas", "2", "--lease-s", str(LEASE_S))
    server.start(timeout=RAY_START_S)
    try:
        ids = []
        for i in range(JOBS):
            r = server.submit(steps=LONG_STEPS, seed=i)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        victim = wait_until(lambda: next((v for v in (job_or_none(server, i) for i in ids)
                                          if v and v["state"] == "running" and v.get("step", 0) >= 1), None),
                            120, "a job running on a replica")
        host, pid = victim["worker"].rsplit(":", 1)
        assert int(pid) != server.proc.pid
        os.kill(int(pid), signal.SIGKILL)          # the replica process holding the job

        def all_final():
            views = [job_or_none(server, i) for i in ids]
            return views if all(v and v["state"] in ("done", "failed", "cancelled") for v in views) else None

        views = dict(zip(ids, wait_until(all_final, 300, "every job to end", interval=0.5)))
        assert {v["state"] for v in views.values()} == {"done"}, views
        lost = views[victim["id"]]
        assert lost["attempts"] == 2 and "no heartbeat" in lost["notes"][0], lost
        assert all(v["attempts"] == 1 for i, v in views.items() if i != victim["id"])
        assert sorted(p.name for p in (server.data_dir / "results").iterdir()) == sorted(ids)
        info = {i: json.loads(server.request("GET", f"/v1/jobs/{i}/result/info.json").content) for i in ids}
        assert info[victim["id"]]["worker"] != victim["worker"]             # finished by another replica
        assert len({v["worker"] for v in info.values()}) >= 2                # work went to both replicas
        # any replica answers for any job: 20 reads, answered by more than one replica, all the same
        answers = [server.request("GET", f"/v1/jobs/{victim['id']}") for _ in range(20)]
        assert len({a.headers["x-sv3d-worker"] for a in answers}) >= 2
        assert {a.status_code for a in answers} == {200} and len({a.text for a in answers}) == 1
    finally:
        assert server.stop(timeout=120) == 130, server.log.read_text()[-3000:]
