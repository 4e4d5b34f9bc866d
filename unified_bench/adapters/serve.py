"""``unified-bench serve``: expose any registered adapter over a small HTTP+JSON protocol.

Models that need their own environment (another torch, another transformers) run in that
environment behind this server; the benchmark talks to them through the ``remote`` adapter.
The protocol (``docs/remote-protocol.md``), version ``unified-bench-remote/1``:

- ``GET /info`` -> ``{"protocol", "model", "capabilities", "describe"}``
- ``POST /caption`` ``{"images": [base64 PNG], "prompt": str, "seeds": [int]}``
  -> ``{"captions": [str]}``
- ``POST /generate`` ``{"prompts": [str], "seeds": [int], "size": [w, h] | null}``
  -> ``{"images": [base64 PNG | null], "errors": [str | null]}``

An adapter exception answers 422 ``{"error": "..."}`` (not retried: it would fail again);
a malformed request 400; an oversized one 413. Calls into the model are serialised.
"""

from __future__ import annotations

import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from unified_bench.adapters.base import Adapter, check_images
from unified_bench.adapters.http import decode_image, encode_png
from unified_bench.adapters.registry import BuiltAdapter

PROTOCOL_VERSION = "unified-bench-remote/1"
MAX_BODY_BYTES = 512 * 1024 * 1024


class _BadRequest(ValueError):
    pass


def make_server(built: BuiltAdapter | Adapter, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server for ``built``; port 0 picks a free port."""
    adapter = built.adapter if isinstance(built, BuiltAdapter) else built
    model_name = built.name if isinstance(built, BuiltAdapter) else adapter.name
    lock = threading.Lock()  # one model, one call at a time

    def info() -> dict[str, Any]:
        caps = vars(adapter.capabilities).copy()
        return {
            "protocol": PROTOCOL_VERSION,
            "model": model_name,
            "capabilities": json.loads(json.dumps(caps, default=list)),
            "describe": json.loads(json.dumps(adapter.describe(), default=str)),
        }

    class Handler(BaseHTTPRequestHandler):
        server_version = "unified-bench-serve/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

        def _send(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise OverflowError(f"request of {length} bytes exceeds {MAX_BODY_BYTES}")
            try:
                data = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as err:
                raise _BadRequest(f"body is not JSON ({err})") from None
            if not isinstance(data, dict):
                raise _BadRequest("body must be a JSON object")
            return data

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path.rstrip("/") in ("/info", ""):
                self._send(HTTPStatus.OK, info())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}; try /info"})

        def do_POST(self) -> None:  # noqa: N802
            route = self.path.rstrip("/")
            if route not in ("/caption", "/generate"):
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
                return
            try:
                data = self._read()
                answer = _caption(adapter, data, lock) if route == "/caption" else _generate(adapter, data, lock)
            except OverflowError as err:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(err)})
            except _BadRequest as err:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except Exception as err:  # the model failed: report it, keep serving
                self._send(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": f"{type(err).__name__}: {err}"})
            else:
                self._send(HTTPStatus.OK, answer)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def _seeds(data: dict[str, Any], count: int) -> list[int]:
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or len(seeds) != count or not all(isinstance(s, int) for s in seeds):
        raise _BadRequest(f"'seeds' must be a list of {count} integers")
    return seeds


def _sample_ids(data: dict[str, Any], count: int) -> list[str] | None:
    ids = data.get("sample_ids")
    if ids is None:  # an older client: the adapter gets none
        return None
    if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, str) for i in ids):
        raise _BadRequest(f"'sample_ids' must be null or a list of {count} strings")
    return ids


def _caption(adapter: Adapter, data: dict[str, Any], lock: threading.Lock) -> dict[str, Any]:
    encoded = data.get("images")
    prompt = data.get("prompt")
    if not isinstance(encoded, list) or not all(isinstance(i, str) for i in encoded):
        raise _BadRequest("'images' must be a list of base64 PNG strings")
    if not isinstance(prompt, str):
        raise _BadRequest("'prompt' must be a string")
    seeds = _seeds(data, len(encoded))
    try:
        images = [decode_image(text).convert("RGB") for text in encoded]
    except Exception as err:
        raise _BadRequest(f"an image does not decode ({err})") from None
    sample_ids = _sample_ids(data, len(encoded))
    with lock:
        captions = adapter.caption(images, prompt=prompt, seeds=seeds, sample_ids=sample_ids)
        settings = adapter.caption_settings(prompt)
    # passed through as given: the client's boundary check judges types and emptiness
    return {
        "captions": json.loads(json.dumps(list(captions) if isinstance(captions, (list, tuple)) else captions, default=repr)),
        "settings": settings.to_dict() if settings else None,
    }


def _generate(adapter: Adapter, data: dict[str, Any], lock: threading.Lock) -> dict[str, Any]:
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise _BadRequest("'prompts' must be a list of strings")
    seeds = _seeds(data, len(prompts))
    size = data.get("size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise _BadRequest("'size' must be null or [width, height]")
    sample_ids = _sample_ids(data, len(prompts))
    with lock:
        images = adapter.generate(prompts, seeds=seeds, size=tuple(size) if size else None, sample_ids=sample_ids)
        settings = adapter.generation_settings(tuple(size) if size else None)
    outcomes = check_images(images, len(prompts))
    return {
        "images": [encode_png(o.value) if o.ok else None for o in outcomes],
        "errors": [o.error for o in outcomes],
        "settings": settings.to_dict() if settings else None,
    }


def serve(built: BuiltAdapter | Adapter, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted; prints the bound address (useful with port 0)."""
    server = make_server(built, host, port)
    bound_host, bound_port = server.server_address[:2]
    name = built.name if isinstance(built, BuiltAdapter) else built.name
    print(f"serving {name} on http://{bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        (built.adapter if isinstance(built, BuiltAdapter) else built).close()
