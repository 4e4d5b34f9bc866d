"""``compose``: an OpenAI-compatible captioner (a fake server on loopback) feeds a local generator."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from runner_helpers import make_images, read_captions
from test_adapters_core import FakeOpenAI, fake_openai  # noqa: F401  (the fixture)

from unified_bench.adapters.registry import build_adapter, parse_model_args, prepare
from unified_bench.core.errors import ConfigError
from unified_bench.results import load_results
from unified_bench.runner.eval import EvalConfig, run_eval


def test_openai_captioner_feeds_a_local_generator(toys, tmp_path, monkeypatch, fake_openai):  # noqa: F811
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(FakeOpenAI, "fail_first", {})  # no rate limiting here
    data = make_images(tmp_path / "data", 3, size=24)
    out = tmp_path / "run"
    # as the command line gives them: strings, the *_args as JSON objects
    args = parse_model_args(
        [
            "captioner=openai",
            f'captioner_args={{"base_url": "{fake_openai}", "caption_model": "served-vlm", "temperature": 0.2}}',
            "generator=mock",
            'generator_args={"size": 40, "noise": 0}',
        ]
    )
    outcome = run_eval(
        EvalConfig(model="compose", data=str(data), out=out, model_args=args, metrics=["toy-pair"], progress=False, batch_size=2)
    )
    assert outcome.ok, outcome.errors
    # captions from the server, and only captions: the images API was never called
    paths = [c[0] for c in FakeOpenAI.calls]
    assert paths == ["/v1/chat/completions"] * 3
    captions = read_captions(out)
    assert captions["img01"]["caption"] == f"a 24x24 photo, seed {captions['img01']['seed']}"
    # images from the local generator, at its native size (the API would have given 1024)
    assert Image.open(out / "images" / "img01.png").size == (40, 40)
    run = load_results(out)["run"]
    assert run["model"]["args"]["captioner"] == "openai" and run["model"]["args"]["generator_args"] == {"size": 40, "noise": 0}
    describe = run["model"]["adapter"]["describe"]
    assert describe["kind"] == "compose"
    assert describe["captioner"]["name"] == "openai" and describe["captioner"]["args"]["caption_model"] == "served-vlm"
    assert describe["generator"]["name"] == "mock" and describe["generator"]["describe"]["kind"] == "mock"
    executed = run["protocol_executed"]
    assert executed["caption"]["temperature"] == 0.2 and executed["caption"]["extra"]["model"] == "served-vlm"
    assert executed["generation"]["width"] == 40 and executed["generation"]["num_inference_steps"] == 0

    # and another generator regenerates from these captions without asking the server again
    FakeOpenAI.calls = []
    again = tmp_path / "again"
    outcome = run_eval(
        EvalConfig(
            model="mock", data=str(data), out=again, model_args={"size": 32}, metrics=["toy-pair"],
            progress=False, captions_from=out,
        )
    )
    assert outcome.ok and FakeOpenAI.calls == []
    assert {s: r["caption"] for s, r in read_captions(again).items()} == {s: r["caption"] for s, r in captions.items()}
    record = json.loads((again / "results.json").read_text())["run"]
    assert record["protocol_executed"]["caption"] == executed["caption"]
    assert record["captions_from"]["run"] == str(out.resolve())


def test_compose_halves_are_checked_by_their_own_adapters():
    with pytest.raises(ConfigError, match="needs --model-arg"):
        prepare("compose", {"captioner": "mock"})
    with pytest.raises(ConfigError, match="compose generator: .*no argument nonsense"):
        build_adapter("compose", {"captioner": "mock", "generator": "mock", "generator_args": '{"nonsense": 1}'})
    with pytest.raises(ConfigError, match="JSON"):
        build_adapter("compose", {"captioner": "mock", "generator": "mock", "captioner_args": "[1]"})
    adapter = build_adapter("compose", {"captioner": "mock", "generator": "mock", "generator_args": '{"size": 16, "max_batch_size": 2}'})
    assert adapter.capabilities.native_resolution == (16, 16) and adapter.capabilities.max_batch_size == 2
    adapter.close()
