"""The HTTP layer: FastAPI routes over a runtime.serve.service.Service, errors as JSON ``{"error": message}``.

    POST   /v1/jobs                      multipart: image + options named as the CLI's flags -> 202 {"id": ...}
    GET    /v1/jobs/{id}                 state, queue position, step i of N, last step latency, ETA
    GET    /v1/jobs/{id}/result/{file}   video.mp4, video.gif, contact_sheet.png, input.png, info.json, frames.zip
    DELETE /v1/jobs/{id}                 cancel (a running job stops at its next step)
    GET    /healthz, /metrics            liveness; Prometheus text
    GET    /                             the web page (static/)

Status codes: 400 bad options or id, 401 no/wrong bearer token, 404 unknown job or file, 409 not in a state for
that, 413 too large, 415 not multipart, 422 not a usable image, 429 queue full (Retry-After), 503 worker down.
FastAPI is imported here only: ``import runtime`` (and runtime.serve) loads no web stack.
"""
# NB: no `from __future__ import annotations`: FastAPI reads the route parameter types at runtime.

import hmac
from pathlib import Path

from configs.limits import LIMITS

from ..errors import InputImageError, SV3DError
from .flags import IMAGE_FIELD, OptionsError
from .jobs import new_job_id
from .service import MEDIA_TYPES, Conflict, NotFound, QueueFull, Service
from .upload import UploadError, receive_form

STATIC = Path(__file__).resolve().parent / "static"
FORM_OVERHEAD_BYTES = 16 << 10               # multipart headers and boundaries around the parts


def status_of(e: SV3DError) -> int:
    for cls, status in ((QueueFull, 429), (NotFound, 404), (Conflict, 409), (InputImageError, 422),
                        (OptionsError, 400)):
        if isinstance(e, cls):
            return status
    return getattr(e, "status", 400)


def create_app(service: Service):
    from fastapi import Depends, FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.requests import ClientDisconnect

    settings = service.settings
    app = FastAPI(title="SV3D generation service", docs_url="/docs", redoc_url=None)

    def error(e: SV3DError) -> JSONResponse:
        headers = {"Retry-After": str(e.retry_after_s)} if isinstance(e, QueueFull) else None
        return JSONResponse({"error": str(e)}, status_code=status_of(e), headers=headers)

    @app.middleware("http")
    async def answered_by(request, call_next):  # which process answered (Ray: which replica)
        response = await call_next(request)
        response.headers["X-SV3D-Worker"] = service.worker.name
        return response

    @app.exception_handler(SV3DError)
    async def on_error(request, e: SV3DError):
        return error(e)

    def authorised(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise Unauthorised()

    class Unauthorised(Exception):
        pass

    @app.exception_handler(Unauthorised)
    async def on_unauthorised(request, e):
        return JSONResponse({"error": "a bearer token is required: Authorization: Bearer <token>"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorised)]

    @app.post("/v1/jobs", status_code=202, dependencies=auth)
    async def submit(request: Request):
        service.check_room()                     # before reading a byte of the body
        limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES + LIMITS.serve_form_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise UploadError("submission too large", status=413, expected=f"at most {limit} bytes",
                              got=f"Content-Length {length}")
        upload = settings.uploads / f"{new_job_id()}.part"
        try:
            form = await receive_form(request.stream(), request.headers.get("content-type"), upload,
                                      image_field=IMAGE_FIELD, max_image_bytes=settings.max_upload_bytes,
                                      max_form_bytes=LIMITS.serve_form_bytes, max_fields=LIMITS.serve_form_fields)
            job_id = await run_in_threadpool(service.accept, form)
        except ClientDisconnect:
            return Response(status_code=400)    # nobody is listening; nothing was kept
        finally:
            upload.unlink(missing_ok=True)
        return {"id": job_id, "state": "queued", "status_url": f"/v1/jobs/{job_id}"}

    @app.get("/v1/jobs/{job_id}", dependencies=auth)
    async def status(job_id: str):
        return await run_in_threadpool(service.view, job_id)

    @app.delete("/v1/jobs/{job_id}", status_code=202, dependencies=auth)
    async def cancel(job_id: str):
        return await run_in_threadpool(service.cancel, job_id)

    @app.get("/v1/jobs/{job_id}/result/{name}", dependencies=auth)
    async def result(job_id: str, name: str):
        path = await run_in_threadpool(service.result_file, job_id, name)
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            filename=f"{job_id}-{name}")

    @app.get("/healthz")
    async def healthz():
        body = await run_in_threadpool(service.health)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics", dependencies=auth)
    async def metrics():
        return PlainTextResponse(await run_in_threadpool(service.metrics),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


__all__ = ["create_app", "status_of"]
