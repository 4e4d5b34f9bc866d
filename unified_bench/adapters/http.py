"""Small JSON-over-HTTP client with retries (standard library only).

Retries on 429 and 5xx answers and on connection failures, waiting what ``Retry-After``
asks for when the server says, else exponential backoff with jitter (so many workers
hitting one rate limit do not retry in lock-step). Other 4xx answers fail at once: retrying
a bad request or a bad key cannot help.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class HttpError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return base * (0.5 + rand())  # jitter in [0.5, 1.5) x base


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def request_json(
    url: str,
    payload: Mapping[str, Any] | None = None,
    *,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Send JSON (POST when ``payload`` is given, else GET) and return the decoded answer."""
    body = json.dumps(payload).encode("utf-8") if payload is not None else None
    all_headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    attempt = 0
    while True:
        request = urllib.request.Request(url, data=body, headers=all_headers, method=method or ("POST" if body is not None else "GET"))
        retry_after: float | None = None
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                raw = response.read()
            try:
                return json.loads(raw)
            except json.JSONDecodeError as err:
                raise HttpError(f"{url}: answer is not JSON ({err})") from err
        except urllib.error.HTTPError as err:
            detail = _error_detail(err)
            if err.code not in RETRY_STATUSES or attempt >= retry.max_retries:
                raise HttpError(f"{url}: HTTP {err.code}: {detail}", err.code) from None
            retry_after = parse_retry_after(err.headers.get("Retry-After") if err.headers else None)
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
            if attempt >= retry.max_retries:
                reason = getattr(err, "reason", None) or err
                raise HttpError(f"{url}: {reason} (after {attempt + 1} attempts)") from None
        sleep(retry.delay(attempt, retry_after))
        attempt += 1


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        text = err.read().decode("utf-8", "replace")
    except Exception:
        return err.reason or ""
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            inner = data.get("error")
            if isinstance(inner, dict):
                return str(inner.get("message") or inner)
            if inner:
                return str(inner)
    except json.JSONDecodeError:
        pass
    return text[:500]


def encode_png(image: Image.Image) -> str:
    """PNG bytes as base64 text (lossless, so the model sees exactly the reference)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(text: str) -> Image.Image:
    """Base64 (optionally a ``data:`` URL) -> a fully loaded PIL image."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    image = Image.open(io.BytesIO(base64.b64decode(text, validate=False)))
    image.load()
    return image
