"""A job's callback: one JSON POST to the URL given at submission when the job ends (done, failed or cancelled).

Tried ``LIMITS.serve_callback_tries`` times, ``LIMITS.serve_callback_timeout_s`` each, from a daemon thread; a
callback that cannot be delivered is logged, never retried later (the job's state is always there to poll).
Only http and https URLs are accepted (:func:`check_callback_url`).
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from configs.limits import LIMITS

from .flags import OptionsError

log = logging.getLogger("runtime.serve")
MAX_URL_CHARS = 2048


def check_callback_url(url: Optional[str]) -> Optional[str]:
    if url is None or not url.strip():
        return None
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise OptionsError("invalid callback_url", expected=f"an http(s) URL of at most {MAX_URL_CHARS} characters",
                           got=url[:100])
    return url


def post(url: str, payload: dict) -> bool:
    body = json.dumps(payload).encode()
    for attempt in range(1, LIMITS.serve_callback_tries + 1):
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=LIMITS.serve_callback_timeout_s) as r:
                if 200 <= r.status < 300:
                    return True
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.warning("callback %s for job %s, try %d: %s", url, payload.get("id"), attempt, e)
    return False


def post_later(url: str, payload: dict) -> threading.Thread:
    t = threading.Thread(target=post, args=(url, payload), name="sv3d-callback", daemon=True)
    t.start()
    return t


__all__ = ["check_callback_url", "post", "post_later"]
