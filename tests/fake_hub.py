"""A Hugging Face hub on loopback: just the endpoints ``snapshot_download`` uses.

Serves folders as model repositories at one fixed commit, and answers for gated and
missing repositories the way huggingface.co does (status code + ``X-Error-Code``), so the
real huggingface_hub client code runs end to end with no network.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _handler(repos: Mapping[str, Path], gated: frozenset[str]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, payload, head: bool = False) -> None:
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, head)

        def _route(self, head: bool) -> None:
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            api = parts[:2] == ["api", "models"]
            repo = "/".join(parts[2:4] if api else parts[0:2])
            if repo in gated:
                self._send(403, b"gated", {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"}, head)
                return
            if repo not in repos:
                self._send(404, b"missing", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, head)
                return
            root = repos[repo]
            files = sorted(p for p in root.iterdir() if p.is_file())
            if api and len(parts) >= 5 and parts[4] == "revision":
                self._json({"id": repo, "sha": COMMIT, "siblings": [{"rfilename": p.name} for p in files]}, head)
            elif api and len(parts) >= 5 and parts[4] == "tree":
                tree = [
                    {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                    for p in files
                ]
                self._json(tree, head)
            elif not api and len(parts) >= 5 and parts[2] == "resolve":
                target = root / "/".join(parts[4:])
                if not target.is_file():
                    self._send(404, b"no entry", {"X-Error-Code": "EntryNotFound"}, head)
                    return
                body = target.read_bytes()
                etag = hashlib.sha256(body).hexdigest()
                self._send(200, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}, head)
            else:
                self._send(404, b"unknown route", head=head)

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

    return Handler


@contextmanager
def fake_hub(repos: Mapping[str, Path], gated: frozenset[str] = frozenset()) -> Iterator[str]:
    """Serve ``repos`` (repo id -> folder) on 127.0.0.1; yields the endpoint URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(dict(repos), gated))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
