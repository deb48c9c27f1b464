"""``python -m runtime.serve``: the export's graphs behind an HTTP job API and a web page.

    python -m runtime.serve --graphs exports/sv3d_p_576 --data-dir serve-data            # http://127.0.0.1:8000
    python -m runtime.serve --graphs DIR --host 0.0.0.0 --token "$TOKEN" --backend openvino
    python -m runtime.serve --graphs DIR --ray --replicas 2                              # Ray Serve replicas

The engine flags (--backend, --device, --device-id, --threads, --precision, --cache-dir, --memory,
--skip-checksums) are ``python -m runtime``'s, parsed and checked by its code. Binds 127.0.0.1 unless --host says
otherwise; any other address needs --token (or $SV3D_SERVE_TOKEN), and every /v1 request and /metrics then needs
``Authorization: Bearer <token>``. Errors print one line and exit 1 (usage errors 2); Ctrl-C (SIGINT) exits 130
and SIGTERM 143 after the running job stops at its step boundary and goes back to the queue.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import List, Optional

from configs.limits import LIMITS

from .. import interrupts
from ..command import ExitRule, run_command
from ..errors import SV3DError
from .flags import engine_options
from .settings import LOOPBACK_HOSTS, ServeSettings

PROG = "python -m runtime.serve"
TOKEN_ENV = "SV3D_SERVE_TOKEN"
DEFAULT_PORT = 8000
DEFAULT_DATA_DIR = "serve-data"
EXIT_OK, EXIT_ERROR = 0, 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Serve an SV3D export: HTTP job API, web page, optional Ray Serve replicas.",
        epilog="Engine flags as `python -m runtime`: --backend, --device, --device-id, --threads, --precision, "
               "--cache-dir, --memory, --skip-checksums.")
    p.add_argument("--graphs", required=True, metavar="DIR", help="export folder (holds manifest.json)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                   help=f"job database and outputs (default {DEFAULT_DATA_DIR})")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"bearer token every /v1 request and /metrics must carry (default ${TOKEN_ENV})")
    p.add_argument("--queue-size", type=int, default=LIMITS.serve_queue_size,
                   help=f"queued jobs beyond which submissions get 429 (default {LIMITS.serve_queue_size})")
    p.add_argument("--max-upload-bytes", type=int, default=LIMITS.serve_upload_bytes,
                   help=f"image upload cap (default {LIMITS.serve_upload_bytes})")
    p.add_argument("--max-pixels", type=int, default=LIMITS.serve_upload_pixels,
                   help=f"image pixel cap (default {LIMITS.serve_upload_pixels})")
    p.add_argument("--retention-hours", type=float, default=LIMITS.serve_retention_hours,
                   help=f"finished jobs and their results are removed after this (default "
                        f"{LIMITS.serve_retention_hours:g})")
    p.add_argument("--lease-s", type=float, default=LIMITS.serve_lease_s,
                   help="a running job whose worker sent no heartbeat for this long is run again once "
                        f"(default {LIMITS.serve_lease_s:g})")
    p.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment (runtime/serve/ray_app.py)")
    p.add_argument("--replicas", type=int, default=2, help="--ray: worker replicas, each with resident graphs")
    p.add_argument("--ray-address", default=None,
                   help="--ray: the cluster to join (default: start a local one on this machine)")
    return p


def settings_from(args: argparse.Namespace, engine_argv: List[str]) -> ServeSettings:
    """Check the server's flags, and the engine's with runtime.cli's code (runtime/serve/flags.py)."""
    for name, value, low, high in (("--port", args.port, 0, 65535),
                                   ("--queue-size", args.queue_size, 1, LIMITS.serve_max_queue_size),
                                   ("--max-upload-bytes", args.max_upload_bytes, 1, None),
                                   ("--max-pixels", args.max_pixels, 1, None),
                                   ("--replicas", args.replicas, 1, None)):
        if value < low or (high is not None and value > high):
            raise SV3DError(f"invalid {name}", expected=f"an integer in [{low}, {high if high else 'inf'}]",
                            got=value)
    for name, value in (("--retention-hours", args.retention_hours), ("--lease-s", args.lease_s)):
        if not value > 0:
            raise SV3DError(f"invalid {name}", expected="a number > 0", got=value)
    engine_options(["--graphs", args.graphs, *engine_argv])   # refused here, not in each replica
    if args.host not in LOOPBACK_HOSTS and not args.token:
        raise SV3DError(f"binding {args.host} needs a token", expected=f"--token or ${TOKEN_ENV}", got="none",
                        hint="without one, only loopback addresses are served")
    return ServeSettings(graphs=args.graphs, data_dir=args.data_dir, engine_argv=tuple(engine_argv),
                         host=args.host, port=args.port, token=args.token or None, queue_size=args.queue_size,
                         max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels,
                         retention_hours=args.retention_hours, lease_s=args.lease_s)


def serve(settings: ServeSettings) -> int:
    import uvicorn

    from .app import create_app
    from .service import Service

    service = Service(settings)
    try:
        service.start()
        print(f"serving {service.manifest.variant} ({service.pipeline.backend}, graphs loaded in "
              f"{service.pipeline.load_seconds:.2f} s) on http://{settings.host}:{settings.port}/ ; data in "
              f"{settings.data_dir}" + (" ; bearer token required" if settings.token else ""), flush=True)
        config = uvicorn.Config(create_app(service), host=settings.host, port=settings.port, lifespan="off",
                                log_level="warning", timeout_graceful_shutdown=5)
        uvicorn.Server(config).run()             # re-raises a caught SIGINT/SIGTERM after its graceful stop
    finally:
        service.stop()
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    args, engine_argv = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        settings = settings_from(args, engine_argv)
        if args.ray:
            from .ray_app import run_ray

            return run_ray(settings, replicas=args.replicas, address=args.ray_address)
        return serve(settings)      # uvicorn restores the guard's handlers, then re-raises its signal

    return run_command(body, interrupted=f"{interrupts.MESSAGE}: the running job went back to the queue",
                       rules=[ExitRule(SV3DError, EXIT_ERROR)])


__all__ = ["build_parser", "main", "serve", "settings_from"]
