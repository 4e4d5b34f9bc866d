"""Small JSON-over-HTTP client with retries and a circuit breaker (standard library only).

Retries on 429 and 5xx answers and on connection failures, waiting what ``Retry-After``
asks for when the server says, else exponential backoff with jitter (so many workers
hitting one rate limit do not retry in lock-step). Other 4xx answers fail at once: retrying
a bad request or a bad key cannot help.

A :class:`CircuitBreaker` shared by an adapter's requests tells a dead server from a bad
sample: a request that fails at the connection level (refused, reset, timed out, or a
gateway's 502/503/504) after all its retries counts as one failure, any answer from the
server resets the count, and ``limit`` failures in a row raise
:class:`~unified_bench.core.errors.ServerUnreachableError`, which the runner does not treat
as a per-sample error: it stops the run with the finished samples kept. Every API adapter
(``remote``, ``openai``, a plugin's) gets this by passing one breaker to ``request_json``.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from unified_bench.core.errors import ConfigError, ServerUnreachableError

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: answers of a proxy or load balancer whose server is down: the server itself is unreachable
UNREACHABLE_STATUSES = frozenset({502, 503, 504})


class HttpError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status).

    ``unreachable``: it never reached a working server (connection refused or reset, timed
    out, a gateway's 502/503/504), so it says nothing about the sample it carried."""

    def __init__(self, message: str, status: int | None = None, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    #: False: a request that timed out is not sent again (a server that is still working on
    #: it, or hung, would only queue the copy behind it)
    retry_timeouts: bool = True

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return base * (0.5 + rand())  # jitter in [0.5, 1.5) x base


class CircuitBreaker:
    """Counts requests in a row that failed to reach the server; opens at ``limit``.

    Thread-safe (an adapter may keep several requests in flight). Once open, every further
    request through it fails at once with the same error. ``limit`` 0 never opens.
    """

    def __init__(self, limit: int = 5) -> None:
        if limit < 0:
            raise ConfigError(f"--model-arg max_consecutive_failures must be >= 0 (0: never stop), got {limit}")
        self.limit = limit
        self.failures = 0
        self.error: ServerUnreachableError | None = None
        self._guard = threading.Lock()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def success(self) -> None:
        with self._guard:
            self.failures = 0

    def failure(self, url: str, reason: str) -> None:
        """Count one failed request; raise once ``limit`` have failed in a row."""
        with self._guard:
            self.failures += 1
            if self.limit and self.failures >= self.limit and self.error is None:
                self.error = ServerUnreachableError(
                    f"{self.failures} requests in a row could not reach {_origin(url)} (last: {reason})"
                )
        self.check()


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _timed_out(err: BaseException) -> bool:
    return isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError)


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
    breaker: CircuitBreaker | None = None,
) -> Any:
    """Send JSON (POST when ``payload`` is given, else GET) and return the decoded answer.

    With ``breaker``, a request that cannot reach the server after its retries counts
    towards it (see :class:`CircuitBreaker`), and an open breaker fails the request at once.
    """
    body = json.dumps(payload).encode("utf-8") if payload is not None else None
    all_headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    attempt = 0
    while True:
        if breaker is not None:
            breaker.check()  # another request found the server gone: do not wait for ours
        request = urllib.request.Request(url, data=body, headers=all_headers, method=method or ("POST" if body is not None else "GET"))
        retry_after: float | None = None
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                raw = response.read()
            if breaker is not None:
                breaker.success()
            try:
                return json.loads(raw)
            except json.JSONDecodeError as err:
                raise HttpError(f"{url}: answer is not JSON ({err})") from err
        except urllib.error.HTTPError as err:
            detail = _error_detail(err)
            if err.code not in RETRY_STATUSES or attempt >= retry.max_retries:
                message = f"{url}: HTTP {err.code}: {detail}"
                unreachable = err.code in UNREACHABLE_STATUSES
                if breaker is not None:
                    if unreachable:
                        breaker.failure(url, f"HTTP {err.code}")
                    else:
                        breaker.success()  # the server answered: the problem is this request's
                raise HttpError(message, err.code, unreachable=unreachable) from None
            retry_after = parse_retry_after(err.headers.get("Retry-After") if err.headers else None)
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
            timed_out = _timed_out(err)
            if attempt >= retry.max_retries or (timed_out and not retry.retry_timeouts):
                if timed_out:
                    reason = (
                        f"no answer within {timeout_s:g} s; if the model needs longer per batch, "
                        "raise it with --model-arg timeout_s=SECONDS"
                    )
                else:
                    reason = str(getattr(err, "reason", None) or err)
                if breaker is not None:
                    breaker.failure(url, reason)
                raise HttpError(f"{url}: {reason} (after {attempt + 1} attempts)", unreachable=True) from None
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
