"""Built-in adapters the runner owns: mock, precomputed, openai (fake API on loopback),
remote (a real `unified-bench serve` subprocess on loopback)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image
from runner_helpers import LAUNCHER, cli_env, essentials, make_images, read_captions

from unified_bench.adapters.http import HttpError, RetryPolicy, parse_retry_after, request_json
from unified_bench.adapters.mock import MockAdapter, MockConfig
from unified_bench.adapters.registry import build_adapter
from unified_bench.core.errors import ConfigError
from unified_bench.runner.eval import EvalConfig, run_eval


def evaluate(data, out, model="mock", **args):
    return run_eval(EvalConfig(model=model, data=str(data), out=out, metrics=["toy-pair"], model_args=args, progress=False))


def test_mock_is_deterministic_per_sample_and_seed():
    adapter = MockAdapter(MockConfig(size=32))
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (40, 30), (20, 30, 230))]
    together = adapter.caption(images, prompt="p", seeds=[1, 2])
    alone = [adapter.caption([im], prompt="p", seeds=[s])[0] for im, s in zip(images, [1, 2])]
    assert together == alone and "mostly red" in together[0] and "mostly blue" in together[1]
    assert adapter.caption(images[:1], prompt="p", seeds=[3]) != together[:1]  # the seed is used
    a = adapter.generate(together, seeds=[1, 2], size=None)
    b = adapter.generate(together[::-1], seeds=[2, 1], size=(16, 8))
    assert a[0].size == (32, 32) and b[0].size == (16, 8)
    assert a[0].tobytes() == adapter.generate(together[:1], seeds=[1], size=None)[0].tobytes()
    assert a[0].getpixel((4, 4))[0] > 150  # the caption's colour comes back


def test_precomputed_replays_a_run(toys, tmp_path):
    data = make_images(tmp_path / "data", 2)
    first = tmp_path / "first"
    evaluate(data, first, size=32)
    second = tmp_path / "second"
    assert evaluate(data, second, model="precomputed", path=str(first)).ok
    assert essentials(second) == essentials(first)
    with pytest.raises(ConfigError, match="captions.jsonl not found"):
        build_adapter("precomputed", {"path": str(tmp_path)})
    more = make_images(tmp_path / "more", 3)  # img02: a sample the first run never saw
    missing = evaluate(more, tmp_path / "third", model="precomputed", path=str(first))
    assert [(e.sample_id, e.stage) for e in missing.errors] == [("img02", "caption")]
    assert "no precomputed caption for sample img02" in missing.errors[0].message


# --- HTTP client ---------------------------------------------------------------------------


def test_retry_after_and_backoff():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    policy = RetryPolicy(max_retries=5, backoff_s=1.0, max_backoff_s=10.0)
    assert policy.delay(0, None, rand=lambda: 0.5) == 1.0 and policy.delay(3, None, rand=lambda: 0.5) == 8.0
    assert policy.delay(6, None, rand=lambda: 0.99) < 15.0  # capped, then jittered
    assert policy.delay(0, 99.0) == 10.0 and policy.delay(0, 0.0) == 0.0


# Each images model's rules as OpenAI's API reference states them, written out here apart from
# the adapter's table: the fake server refuses a request the real API would refuse.
SERVER_IMAGE_RULES = {
    "dall-e-2": {"params": {"model", "prompt", "n", "size", "response_format", "quality", "user"},
                 "size": {"256x256", "512x512", "1024x1024"}, "quality": {"standard"}},
    "dall-e-3": {"params": {"model", "prompt", "n", "size", "response_format", "quality", "style", "user"},
                 "size": {"1024x1024", "1792x1024", "1024x1792"}, "quality": {"standard", "hd"}, "style": {"vivid", "natural"}},
    "gpt-image-1": {"params": {"model", "prompt", "n", "size", "quality", "background", "moderation", "output_format",
                               "output_compression", "user"},
                    "size": {"1024x1024", "1536x1024", "1024x1536", "auto"}, "quality": {"low", "medium", "high", "auto"}},
}


def image_request_refusal(payload: dict) -> str | None:
    rules = SERVER_IMAGE_RULES.get(payload.get("model"))
    if rules is None:  # a model the fake does not know (a vLLM-style server): anything goes
        return None
    for key, value in payload.items():
        if key not in rules["params"]:
            return f"Unknown parameter: '{key}'."
        if key in ("size", "quality", "style") and value not in rules[key]:
            return f"Invalid value: '{value}'. Supported values for {key} are: {sorted(rules[key])}."
    return None


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers like the OpenAI API; the first call of each endpoint is rate-limited."""

    calls: list = []
    lock = threading.Lock()
    fail_first = {"/v1/chat/completions": 429, "/v1/images/generations": 503}
    sleep_s = 0.0

    def log_message(self, *args):
        pass

    def _json(self, status, data, headers=()):
        body = json.dumps(data).encode()
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:  # requests arrive concurrently (the adapter keeps several in flight)
            type(self).calls.append((self.path, self.headers.get("Authorization"), payload))
            number = sum(1 for c in self.calls if c[0] == self.path)
        time.sleep(self.sleep_s)
        if self.headers.get("Authorization") != "Bearer sk-test":
            self._json(401, {"error": {"message": "bad key"}})
            return
        if self.path in self.fail_first and number == 1:
            self._json(self.fail_first[self.path], {"error": {"message": "slow down"}}, [("Retry-After", "0")])
            return
        if self.path == "/v1/chat/completions":
            url = payload["messages"][0]["content"][1]["image_url"]["url"]
            image = Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))
            self._json(200, {"choices": [{"message": {"content": f"a {image.size[0]}x{image.size[1]} photo, seed {payload['seed']}"}}]})
        elif self.path == "/v1/images/generations":
            refusal = image_request_refusal(payload)
            if refusal:
                self._json(400, {"error": {"message": refusal}})
                return
            width, height = map(int, payload["size"].split("x"))
            buffer = io.BytesIO()
            Image.new("RGB", (width, height), (len(payload["prompt"]) % 256, 0, 0)).save(buffer, format="PNG")
            self._json(200, {"data": [{"b64_json": base64.b64encode(buffer.getvalue()).decode()}]})
        else:
            self._json(404, {"error": "no"})


@pytest.fixture
def fake_openai():
    FakeOpenAI.calls = []
    FakeOpenAI.sleep_s = 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_round_trip_with_retries(toys, tmp_path, monkeypatch, fake_openai):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    data = make_images(tmp_path / "data", 2, size=24)
    out = tmp_path / "run"
    outcome = evaluate(data, out, model="openai", base_url=fake_openai, backoff_s=0.01)
    assert outcome.ok, outcome.errors
    captions = read_captions(out)
    assert captions["img00"]["caption"] == f"a 24x24 photo, seed {captions['img00']['seed']}"
    assert Image.open(out / "images" / "img00.png").size == (1024, 1024)  # the API's native size
    paths = [c[0] for c in FakeOpenAI.calls]
    assert paths.count("/v1/chat/completions") == 3 and paths.count("/v1/images/generations") == 3  # one retry each
    chat = next(c[2] for c in FakeOpenAI.calls if c[0] == "/v1/chat/completions")
    assert chat["temperature"] == 0.7 and chat["max_tokens"] == 512 and chat["model"] == "gpt-4o"
    assert chat["messages"][0]["content"][0]["text"].startswith("You are an expert vision-language model.")
    images_call = next(c[2] for c in FakeOpenAI.calls if c[0] == "/v1/images/generations")
    assert "response_format" not in images_call and images_call["size"] == "1024x1024"  # gpt-image-1 takes none
    # The executed protocol is what the requests carried; what the API does not say is None.
    executed = json.loads((out / "results.json").read_text())["run"]["protocol_executed"]
    assert executed["caption"] == {
        "prompt": chat["messages"][0]["content"][0]["text"],
        "do_sample": None,
        "temperature": chat["temperature"],
        "max_new_tokens": chat["max_tokens"],
        "extra": {"model": chat["model"], "seed_sent": "seed" in chat},
    }
    width, height = map(int, images_call["size"].split("x"))
    assert executed["generation"] == {
        "width": width, "height": height, "num_inference_steps": None, "guidance_scale": None,
        "scheduler": None, "dtype": None, "extra": {"model": images_call["model"]},
    }


@pytest.mark.parametrize(
    ("image_model", "args", "sent"),
    [
        ("gpt-image-1", {"quality": "high"}, {"quality": "high"}),
        ("dall-e-2", {}, {"response_format": "b64_json"}),
        ("dall-e-3", {"quality": "hd", "style": "natural"}, {"response_format": "b64_json", "quality": "hd", "style": "natural"}),
        ("served-by-vllm", {"quality": "anything"}, {"response_format": "b64_json", "quality": "anything"}),
    ],
)
def test_openai_image_models_get_what_they_accept(monkeypatch, fake_openai, image_model, args, sent):
    """Each images model gets only the parameters it accepts; the fake refuses the rest as the API does."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    FakeOpenAI.fail_first = {}
    try:
        adapter = build_adapter("openai", {"base_url": fake_openai, "image_model": image_model, "backoff_s": "0.01", **args})
        [image] = adapter.generate(["a red square"], seeds=[1], size=(1024, 1024))
        assert image.size == (1024, 1024)
        [(_, _, payload)] = FakeOpenAI.calls
        assert payload == {"model": image_model, "prompt": "a red square", "n": 1, "size": "1024x1024", **sent}
        assert adapter.generation_settings((1024, 1024)).extra == {"model": image_model, **sent}
    finally:
        FakeOpenAI.fail_first = {"/v1/chat/completions": 429, "/v1/images/generations": 503}


def test_openai_image_model_refusals(monkeypatch, fake_openai):
    """A parameter the model does not take fails when the adapter is built, naming what it takes;
    a size it does not generate fails that sample without a request. The fake server's rules are
    the API's: what the adapter would have sent before is refused there."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    base = {"base_url": fake_openai, "backoff_s": "0.01", "max_retries": "0"}
    with pytest.raises(ConfigError, match="gpt-image-1 takes no response_format"):
        build_adapter("openai", {**base, "image_model": "gpt-image-1", "response_format": "b64_json"})
    with pytest.raises(ConfigError, match="dall-e-3 takes one of standard, hd, not quality='high'"):
        build_adapter("openai", {**base, "image_model": "dall-e-3", "quality": "high"})
    with pytest.raises(ConfigError, match="dall-e-2 takes no style"):
        build_adapter("openai", {**base, "image_model": "dall-e-2", "style": "vivid"})
    with pytest.raises(ConfigError, match="reads images from b64_json"):
        build_adapter("openai", {**base, "response_format": "url"})
    adapter = build_adapter("openai", {**base, "image_model": "gpt-image-1"})
    with pytest.raises(ValueError, match="gpt-image-1 generates only 1024x1024, 1536x1024, 1024x1536, not 512x512"):
        adapter.generate(["p"], seeds=[1], size=(512, 512))
    assert FakeOpenAI.calls == []
    # the server side of the same rules: yesterday's request (response_format to gpt-image-1) is refused
    FakeOpenAI.fail_first = {}
    try:
        with pytest.raises(HttpError, match="Unknown parameter: 'response_format'"):
            request_json(fake_openai + "/images/generations",
                         {"model": "gpt-image-1", "prompt": "p", "n": 1, "size": "1024x1024", "response_format": "b64_json"},
                         headers={"Authorization": "Bearer sk-test"}, retry=RetryPolicy(0, 0.01, 0.01))
    finally:
        FakeOpenAI.fail_first = {"/v1/chat/completions": 429, "/v1/images/generations": 503}


def test_openai_errors(monkeypatch, fake_openai):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$OPENAI_API_KEY, which is not set"):
        build_adapter("openai")
    monkeypatch.setenv("MY_KEY", "sk-wrong")
    adapter = build_adapter("openai", {"base_url": fake_openai, "api_key_env": "MY_KEY", "backoff_s": "0.01"})
    with pytest.raises(HttpError, match="HTTP 401: bad key"):
        adapter.caption([Image.new("RGB", (8, 8))], prompt="p", seeds=[1])
    assert len(FakeOpenAI.calls) == 1  # a 4xx other than 429 is not retried
    FakeOpenAI.sleep_s = 1.0
    with pytest.raises(HttpError, match="after 2 attempts"):
        request_json(fake_openai + "/chat/completions", {}, timeout_s=0.2, retry=RetryPolicy(1, 0.01, 0.01))


def test_openai_retries_give_up(fake_openai):
    FakeOpenAI.fail_first = {"/v1/chat/completions": 503}
    try:
        # the fake fails only the first call; with no retries allowed that is final
        with pytest.raises(HttpError, match="HTTP 503: slow down"):
            request_json(fake_openai + "/chat/completions", {}, headers={"Authorization": "Bearer sk-test"},
                         retry=RetryPolicy(0, 0.01, 0.01))
        assert len(FakeOpenAI.calls) == 1
    finally:
        FakeOpenAI.fail_first = {"/v1/chat/completions": 429, "/v1/images/generations": 503}


# --- remote + serve ----------------------------------------------------------------------


@pytest.fixture
def served_mock(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "serve", "--model", "mock", "--port", "0",
         "--model-arg", "size=32", "--model-arg", "fail_caption_ids=img01", "--model-arg", "max_batch_size=4"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(tmp_path),
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"serving mock on (http://127\.0\.0\.1:\d+)", line)
        assert match, f"server did not start: {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_remote_round_trip_equals_local(toys, tmp_path, served_mock):
    data = make_images(tmp_path / "data", 3)
    local = tmp_path / "local"
    evaluate(data, local, size=32, fail_caption_ids=("img01",))
    remote = tmp_path / "remote"
    outcome = run_eval(EvalConfig(model="remote", data=str(data), out=remote, metrics=["toy-pair"],
                                  model_args={"url": served_mock, "max_retries": 0}, progress=False, batch_size=8))
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [("img01", "caption")]
    assert "mock caption failure" in outcome.errors[0].message
    assert essentials(remote) == essentials(local)
    info = json.loads((remote / "run.json").read_text())
    assert info["adapter"]["describe"]["served_model"] == "mock"
    assert info["adapter"]["capabilities"]["max_batch_size"] == 4
    # malformed requests are refused with 400, not crashes
    with pytest.raises(HttpError, match="HTTP 400.*seeds"):
        request_json(served_mock + "/generate", {"prompts": ["a"], "seeds": []}, retry=RetryPolicy(0))
    with pytest.raises(ConfigError, match="no model server at"):
        build_adapter("remote", {"url": "http://127.0.0.1:9", "max_retries": "0"})


def test_gpt_4o_image_preset_targets_its_row_and_runs_against_the_fake_api(monkeypatch, fake_openai):
    """The preset for Table 2's GPT-4o-Image row is the openai adapter with gpt-4o and gpt-image-1;
    pointed at the loopback fake it captions and draws with those model ids."""
    from unified_bench.adapters.registry import PRESETS

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert [t.entry for t in PRESETS["gpt-4o-image"].targets] == ["reported:uae-v5-table2-gpt-4o-image"]
    adapter = build_adapter("gpt-4o-image", {"base_url": fake_openai, "backoff_s": "0.01"})
    image = Image.new("RGB", (24, 24), (10, 200, 30))
    (caption,) = adapter.caption([image], prompt="describe", seeds=[3])
    (drawn,) = adapter.generate([caption], seeds=[3], size=(1024, 1024))
    assert caption == "a 24x24 photo, seed 3" and drawn.size == (1024, 1024)
    sent = {path: payload["model"] for path, _, payload in FakeOpenAI.calls}
    assert sent == {"/v1/chat/completions": "gpt-4o", "/v1/images/generations": "gpt-image-1"}
