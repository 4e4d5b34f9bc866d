"""A model server that goes away: the HTTP adapters' circuit breaker stops the run after K
requests in a row cannot reach it (not one failure per remaining sample), the finished work
is kept, and ``--resume`` against the restarted server (with other transport settings)
completes it. A real ``unified-bench serve`` on loopback, in-process or as a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.progress import Progress
from runner_helpers import LAUNCHER, cli_env, essentials, make_images, run_cli

from unified_bench.adapters.http import CircuitBreaker, HttpError, RetryPolicy, request_json
from unified_bench.adapters.mock import MockAdapter, MockConfig
from unified_bench.adapters.serve import make_server
from unified_bench.core.errors import ServerUnreachableError
from unified_bench.core.progress import CallColumn
from unified_bench.runner.eval import EvalConfig, run_eval


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket closes


class Slow(BaseHTTPRequestHandler):
    """Answers 404 at once, or sleeps past any short timeout on /slow."""

    calls = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/slow":
            time.sleep(1.0)
        body = b'{"error": "no"}'
        try:
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up


@pytest.fixture
def slow_server():
    Slow.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_breaker_opens_after_k_requests_in_a_row_fail_to_connect(slow_server):
    dead = f"http://127.0.0.1:{closed_port()}/caption"
    breaker = CircuitBreaker(3)
    retry = RetryPolicy(1, 0.001, 0.001)
    for _ in range(2):
        with pytest.raises(HttpError, match="after 2 attempts") as failed:
            request_json(dead, {}, retry=retry, breaker=breaker)
        assert failed.value.unreachable
    with pytest.raises(ServerUnreachableError, match=r"3 requests in a row could not reach http://127\.0\.0\.1:\d+ "):
        request_json(dead, {}, retry=retry, breaker=breaker)
    with pytest.raises(ServerUnreachableError):  # open: fails at once, without a request
        request_json(slow_server + "/fast", {}, breaker=breaker)
    assert Slow.calls == 0

    # an answer from the server, even an error, resets the count: the problem is the request's
    breaker = CircuitBreaker(2)
    with pytest.raises(HttpError):
        request_json(dead, {}, retry=RetryPolicy(0), breaker=breaker)
    with pytest.raises(HttpError, match="HTTP 404") as answered:
        request_json(slow_server + "/fast", {}, retry=RetryPolicy(0), breaker=breaker)
    assert not answered.value.unreachable and breaker.failures == 0


def test_a_timeout_names_the_flag_and_is_not_retried_when_told(slow_server):
    breaker = CircuitBreaker(5)
    with pytest.raises(HttpError, match=r"no answer within 0\.2 s.*--model-arg timeout_s=SECONDS") as timed_out:
        request_json(slow_server + "/slow", {}, timeout_s=0.2, retry=RetryPolicy(3, 0.01, 0.01, retry_timeouts=False),
                     breaker=breaker)
    assert timed_out.value.unreachable and breaker.failures == 1
    assert Slow.calls == 1  # the remote adapter's policy: a busy or hung server gets no copy


def serve_in_process(adapter, dying: dict | None = None):
    """The real ``serve`` server in a thread; with ``dying``, a gateway in front of it answers
    502 (and counts) once ``dying["generated"]`` reaches ``dying["dead_after"]``."""
    server = make_server(adapter)
    if dying is not None:
        handler = server.RequestHandlerClass

        class Gateway(handler):
            def do_POST(self):  # noqa: N802 - stdlib name
                if dying["generated"] >= dying["dead_after"]:
                    dying["refused"] += 1
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    self._send(502, {"error": "upstream is gone"})
                    return
                if self.path.startswith("/generate"):
                    dying["generated"] += 1
                super().do_POST()

        server.RequestHandlerClass = Gateway
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_dead_server_stops_the_run_after_k_failures_and_resume_completes_it(toys, tmp_path):
    data = make_images(tmp_path / "data", 12)
    local = tmp_path / "local"
    run_eval(EvalConfig(model="mock", data=str(data), out=local, metrics=["toy-pair"], model_args={"size": 32}, progress=False))
    dying = {"generated": 0, "dead_after": 4, "refused": 0}
    server, url = serve_in_process(MockAdapter(MockConfig(size=32)), dying)
    try:
        out = tmp_path / "remote"
        first = EvalConfig(model="remote", data=str(data), out=out, metrics=["toy-pair"], progress=False,
                           model_args={"url": url, "max_retries": 0})
        outcome = run_eval(first)
        # K=5 requests (each one attempt) after the server died, not one per remaining sample
        assert dying["refused"] == 5
        assert outcome.finished == 4 and outcome.errors == [] and not outcome.ok
        assert "5 requests in a row could not reach" in outcome.stopped
        assert outcome.stopped.endswith("Restart the server, then run the same command with --resume")
        assert not (out / "errors.jsonl").read_text()  # the unreached samples are not their fault
        runner = json.loads((out / "results.json").read_text())["run"]["runner"]
        assert runner["incomplete"] is True and runner["not_run"] == 8 and runner["finished"] == 4

        dying["dead_after"] = 10**9  # the server is back
        resumed = run_eval(EvalConfig(model="remote", data=str(data), out=out, metrics=["toy-pair"], progress=False,
                                      resume=True, model_args={"url": url, "max_retries": 2, "timeout_s": 30.0}))
        assert resumed.ok and resumed.finished == 12
        assert "incomplete" not in json.loads((out / "results.json").read_text())["run"]["runner"]
        info = json.loads((out / "run.json").read_text())
        assert info["model_args"] == {}
        assert [i["transport"] for i in info["invocations"]] == [
            {"url": url, "max_retries": 0}, {"url": url, "max_retries": 2, "timeout_s": 30.0}
        ]
        assert "stopped" in info["invocations"][0] and "stopped" not in info["invocations"][1]
        assert essentials(out) == essentials(local)
    finally:
        server.shutdown()
        server.server_close()


def test_model_errors_stay_with_their_samples_and_never_open_the_breaker(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    failing = ("img00", "img01", "img02", "img03")
    server, url = serve_in_process(MockAdapter(MockConfig(size=32, fail_caption_ids=failing)))
    try:
        outcome = run_eval(EvalConfig(model="remote", data=str(data), out=tmp_path / "run", metrics=["toy-pair"],
                                      progress=False, model_args={"url": url, "max_consecutive_failures": 2}))
    finally:
        server.shutdown()
        server.server_close()
    assert outcome.stopped is None and outcome.finished == 2
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [(sid, "caption") for sid in failing]
    assert all("mock caption failure" in e.message for e in outcome.errors)


def test_a_different_served_model_is_refused_on_resume(toys, tmp_path):
    data = make_images(tmp_path / "data", 3)
    out = tmp_path / "run"
    server, url = serve_in_process(MockAdapter(MockConfig(size=32)))
    try:
        run_eval(EvalConfig(model="remote", data=str(data), out=out, metrics=["toy-pair"], progress=False,
                            model_args={"url": url}, limit=2))
    finally:
        server.shutdown()
        server.server_close()
    server, url = serve_in_process(MockAdapter(MockConfig(size=32, noise=3.0)))  # moved, and another model
    try:
        with pytest.raises(Exception, match="cannot resume, the adapter now reports another source of outputs"):
            run_eval(EvalConfig(model="remote", data=str(data), out=out, metrics=["toy-pair"], progress=False,
                                model_args={"url": url}, resume=True))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_killed_serve_process_exit_1_then_resume_with_other_settings_equals_local(toys, tmp_path):
    data = make_images(tmp_path / "data", 10)
    local = tmp_path / "local"
    run_eval(EvalConfig(model="mock", data=str(data), out=local, metrics=["toy-pair"], model_args={"size": 32}, progress=False))

    def serve(open_for: int) -> tuple[subprocess.Popen, str]:
        """The gated mock (tests/gated_adapter.py) served: it waits, mid-run, after
        ``open_for`` generate calls, so the kill lands while the run is under way."""
        proc = subprocess.Popen([sys.executable, str(LAUNCHER), "serve", "--model", "gated_adapter:GatedMock",
                                 "--port", "0", "--model-arg", "size=32", "--model-arg", f"open_for={open_for}",
                                 "--model-arg", f"gate={tmp_path / 'never'}"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(tmp_path))
        match = re.search(r"serving gated_adapter:GatedMock on (http://127\.0\.0\.1:\d+)", proc.stdout.readline())
        assert match, "server did not start"
        return proc, match.group(1)

    out = tmp_path / "run"
    common = ["eval", "--model", "remote", "--data", str(data), "--metrics", "toy-pair", "--out", str(out), "--no-progress"]
    server, url = serve(open_for=3)
    try:
        run = subprocess.Popen([sys.executable, str(LAUNCHER), *common, "--model-arg", f"url={url}",
                                "--model-arg", "backoff_s=0.05"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path))
        deadline = time.monotonic() + 120
        while not (out / "captions.jsonl").exists() or (out / "captions.jsonl").read_text().count("\n") < 3:
            assert run.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.02)
    finally:
        os.kill(server.pid, signal.SIGKILL)  # the server this test started, by its id
        server.wait(timeout=30)
    assert run.wait(timeout=300) == 1
    stderr = run.stderr.read()
    # stopped by the breaker: the samples left were neither tried one by one nor made errors
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: 5 requests in a row could not reach") and last.endswith("--resume"), stderr
    assert (out / "captions.jsonl").read_text().count("\n") == 3 and not (out / "errors.jsonl").read_text()
    runner = json.loads((out / "results.json").read_text())["run"]["runner"]
    assert runner["incomplete"] is True and runner["not_run"] == 7

    server, url = serve(open_for=100)  # restarted, on another port
    try:
        run_cli([*common, "--resume", "--model-arg", f"url={url}", "--model-arg", "max_retries=1",
                 "--model-arg", "timeout_s=120", "--model-arg", "backoff_s=0.5"], tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert essentials(out) == essentials(local)


def test_progress_shows_the_call_in_flight_and_its_running_time():
    progress = Progress(CallColumn())
    task = progress.add_task("round trip", total=3)
    column = CallColumn()
    assert column.render(progress.tasks[task]).plain == ""
    progress.update(task, call="generate", call_started=time.monotonic() - 3725)
    assert column.render(progress.tasks[task]).plain == "generate 1:02:05"


def test_openai_adapter_shares_one_breaker_over_its_requests():
    from PIL import Image

    from unified_bench.adapters.registry import build_adapter

    adapter = build_adapter("openai", {"base_url": f"http://127.0.0.1:{closed_port()}/v1", "api_key_env": "",
                                       "max_retries": "0", "max_consecutive_failures": "2", "concurrency": "1"})
    with pytest.raises(HttpError) as first:  # one request failed: still this batch's problem
        adapter.caption([Image.new("RGB", (8, 8))], prompt="p", seeds=[1])
    assert first.value.unreachable
    with pytest.raises(ServerUnreachableError, match="2 requests in a row"):
        adapter.caption([Image.new("RGB", (8, 8))] * 3, prompt="p", seeds=[1, 2, 3])
