"""A job submission's multipart body, streamed: the image part straight to a file, the option fields into memory,
each with its own cap, cut off the moment a cap is passed (the rest of the body is never read).

A client that disconnects mid-upload, a cap passed, or a malformed body leaves no file behind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Dict, List, Optional

from configs.limits import human_bytes

from ..errors import SV3DError


class UploadError(SV3DError):
    """A submission's body is malformed (status 400), too large (413), or not multipart (415)."""

    def __init__(self, message: str, status: int = 400, **kw) -> None:
        super().__init__(message, **kw)
        self.status = status


@dataclass
class Form:
    fields: Dict[str, List[str]] = field(default_factory=dict)
    image: Optional[Path] = None            # the image part's file, when one was sent
    filename: str = ""                      # as the client named it
    image_bytes: int = 0


def multipart_boundary(content_type: Optional[str]) -> bytes:
    from python_multipart.multipart import parse_options_header

    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError("a job is submitted as multipart/form-data", status=415,
                          expected="Content-Type: multipart/form-data; boundary=...", got=content_type or "none")
    return params[b"boundary"]


async def receive_form(chunks: AsyncIterator[bytes], content_type: Optional[str], image_path: Path, *,
                       image_field: str, max_image_bytes: int, max_form_bytes: int, max_fields: int) -> Form:
    """Parse the body from ``chunks`` (Starlette's ``request.stream()``); the part named ``image_field`` goes to
    ``image_path``. Raises UploadError; on any exception (a client disconnect included) ``image_path`` is gone."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = multipart_boundary(content_type)
    form = Form()
    part: Dict = {}
    sizes = {"form": 0}
    out = {"file": None}

    def on_part_begin():
        part.clear()
        part.update(headers={}, name=None, data=bytearray(), header_field=bytearray(), header_value=bytearray())

    def on_header_field(data, start, end):
        part["header_field"] += data[start:end]

    def on_header_value(data, start, end):
        part["header_value"] += data[start:end]

    def on_header_end():
        part["headers"][bytes(part["header_field"]).lower()] = bytes(part["header_value"])
        part["header_field"], part["header_value"] = bytearray(), bytearray()

    def on_headers_finished():
        _, params = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        part["name"] = name
        if name == image_field:
            if out["file"] is not None or form.image is not None:
                raise UploadError(f"more than one {image_field!r} part", expected="one image")
            form.filename = os.path.basename(params.get(b"filename", b"").decode("utf-8", "replace")) or "image"
            out["file"] = open(image_path, "wb")
        elif sum(len(v) for v in form.fields.values()) >= max_fields:
            raise UploadError("too many form fields", status=413, expected=f"at most {max_fields}")

    def on_part_data(data, start, end):
        n = end - start
        if part["name"] == image_field:
            form.image_bytes += n
            if form.image_bytes > max_image_bytes:
                raise UploadError("image too large", status=413, expected=f"at most {human_bytes(max_image_bytes)}",
                                  got=f"more than that ({human_bytes(form.image_bytes)} so far)")
            out["file"].write(data[start:end])
        else:
            sizes["form"] += n
            if sizes["form"] > max_form_bytes:
                raise UploadError("form fields too large", status=413,
                                  expected=f"at most {human_bytes(max_form_bytes)} besides the image")
            part["data"] += data[start:end]

    def on_part_end():
        if part["name"] == image_field:
            out["file"].close()
            out["file"] = None
            form.image = image_path
        else:
            try:
                value = bytes(part["data"]).decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(f"form field {part['name']!r} is not UTF-8 text") from None
            form.fields.setdefault(part["name"], []).append(value)

    parser = MultipartParser(boundary, callbacks=dict(
        on_part_begin=on_part_begin, on_part_data=on_part_data, on_part_end=on_part_end,
        on_header_field=on_header_field, on_header_value=on_header_value, on_header_end=on_header_end,
        on_headers_finished=on_headers_finished))
    try:
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if out["file"] is not None:
            raise UploadError("the body ended inside the image part", expected="a complete multipart body")
        return form
    except FormParserError as e:
        _discard(out["file"], image_path)
        raise UploadError(f"malformed multipart body: {e}") from None
    except BaseException:                        # a cap passed, the client gone (ClientDisconnect), Ctrl-C
        _discard(out["file"], image_path)
        raise


def _discard(file, path: Path) -> None:
    if file is not None:
        file.close()
    path.unlink(missing_ok=True)


__all__ = ["Form", "UploadError", "multipart_boundary", "receive_form"]
