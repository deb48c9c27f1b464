"""The service as a Ray Serve deployment: ``python -m runtime.serve --graphs DIR --ray --replicas 2``.

Each replica is one Service (runtime/serve/service.py): the export's graphs loaded once and resident, the same
FastAPI app (runtime/serve/app.py) as its ingress, and the same worker thread. The replicas share the data folder:
its SQLite job store is the queue, and each replica's worker claims the next job when it is free, so work goes
to free replicas and any replica answers for any job (Ray Serve's proxy spreads the HTTP requests). A replica
that dies mid-job (killed, out of memory) stops renewing its job's lease; after ``--lease-s`` another replica's
worker queues the job again and runs it (once; a second loss marks it failed with the reason). Ray Serve starts a
new replica in its place.

Several machines: every node must see the same export folder and the same data folder (a shared file system,
e.g. NFS, mounted at the same path); SQLite over NFS needs working POSIX locks, otherwise keep the store on one
node's local disk and run all replicas there. Start Ray on each node (``ray start --head`` / ``ray start
--address=HEAD:6379``) and pass ``--ray-address auto``.

``ray`` is imported inside the functions: importing this module needs no Ray.
"""
from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

from .settings import ServeSettings

APP_NAME = "sv3d"
REPLICA_CPUS = 0.5                       # a Ray scheduling share; the engine's threads are --threads
OBJECT_STORE_BYTES = 200 << 20           # the local cluster's object store: requests and replies only
REPO = Path(__file__).resolve().parents[2]
# Ray's single-machine mode (its name for it): every Ray service on the loopback address, not the node's; and no
# usage statistics sent anywhere.
LOCAL_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def build_app(settings: ServeSettings, replicas: int):
    """The bound Ray Serve application: ``replicas`` copies of the service behind one ingress."""
    from ray import serve

    @serve.deployment(name="SV3DService", num_replicas=replicas, ray_actor_options={"num_cpus": REPLICA_CPUS},
                      health_check_period_s=2, graceful_shutdown_timeout_s=10)
    @serve.ingress()
    class SV3DService:
        def __init__(self, settings: ServeSettings) -> None:
            from .service import Service

            self.service = Service(settings, standalone=False)
            self.service.start()

        def __serve_build_asgi_app__(self):
            from .app import create_app

            return create_app(self.service)

        def check_health(self) -> None:
            if not self.service.worker.alive:
                raise RuntimeError("the worker thread stopped")

        def __del__(self) -> None:
            self.service.stop()

    return SV3DService.bind(settings)


def absolute(settings: ServeSettings) -> ServeSettings:
    """Replicas run in other processes (and folders): every path absolute."""
    return replace(settings, graphs=str(Path(settings.graphs).resolve()),
                   data_dir=str(Path(settings.data_dir).resolve()))


def run_ray(settings: ServeSettings, *, replicas: int, address=None) -> int:
    """Start (or join) a Ray cluster, deploy, serve until Ctrl-C / SIGTERM, then tear the deployment down."""
    from ..manifest import Manifest

    Manifest.load(settings.graphs)       # a wrong export fails here, not in every replica Ray restarts
    if address is None:                  # read when ray is imported: the local cluster on 127.0.0.1, no reports
        os.environ.update(LOCAL_CLUSTER_ENV)
    import ray
    from ray import serve

    settings = absolute(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    local = dict(num_cpus=max(2, int(replicas * REPLICA_CPUS + 1)), object_store_memory=OBJECT_STORE_BYTES,
                 include_dashboard=False) if address is None else {}
    ray.init(address=address, runtime_env={"env_vars": env}, logging_level="WARNING", **local)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build_app(settings, replicas), name=APP_NAME, route_prefix="/")
        print(f"serving with {replicas} Ray Serve replicas on http://{settings.host}:{settings.port}/ ; data in "
              f"{settings.data_dir}" + (" ; bearer token required" if settings.token else ""), flush=True)
        signal.pause()                   # until SIGINT / SIGTERM (a KeyboardInterrupt: runtime/interrupts.py)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


__all__ = ["build_app", "run_ray"]
