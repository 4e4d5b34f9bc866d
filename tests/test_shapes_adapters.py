"""Shapes calibration adapters: caption -> generate -> shapes-attr round trips, and the table."""

from __future__ import annotations

import json

import pytest

from unified_bench.adapters.base import check_captions, check_images
from unified_bench.adapters.registry import build_adapter
from unified_bench.tracks.shapes.adapters import BlankAdapter, BlankConfig, ShapesOracleAdapter, ShapesOracleConfig
from unified_bench.tracks.shapes import shapes_samples
from unified_bench.core.errors import ConfigError
from unified_bench.metrics import PairInput

N = 40


@pytest.fixture(scope="module")
def samples():
    return shapes_samples("test", size=256, limit=N)


def round_trip(adapter, samples, metric):
    """Caption and regenerate ``samples`` directly through the adapter contract; score them."""
    seeds = [1000 + s.index for s in samples]
    captions = check_captions(adapter.caption([s.image for s in samples], prompt="describe", seeds=seeds), len(samples))
    assert all(c.ok for c in captions)
    images = check_images(adapter.generate([c.value for c in captions], seeds=seeds, size=(256, 256)), len(samples))
    assert all(i.ok for i in images)
    scores = metric.score_pairs([PairInput(s.sample_id, s.image, i.value, s.meta) for s, i in zip(samples, images)])
    mean = lambda key: sum(s.value if key is None else s.sub_scores[key] for s in scores) / len(scores)  # noqa: E731
    return [c.value for c in captions], {key or "f1": mean(key) for key in (None, "shape", "color", "size", "position", "count")}


def test_oracle_long_round_trip_is_near_perfect(samples, shapes_metric):
    captions, scores = round_trip(ShapesOracleAdapter(ShapesOracleConfig(detail="long")), samples, shapes_metric)
    assert sum(c == s.caption_long for c, s in zip(captions, samples)) >= N - 1
    assert scores["f1"] >= 0.97, scores


def test_oracle_short_loses_size_and_position(samples, shapes_metric):
    captions, scores = round_trip(ShapesOracleAdapter(ShapesOracleConfig(detail="short")), samples, shapes_metric)
    assert sum(c == s.caption_short for c, s in zip(captions, samples)) >= N - 1
    assert scores["shape"] >= 0.97 and scores["color"] >= 0.97 and scores["count"] >= 0.97, scores
    assert scores["position"] < 0.4 and scores["size"] < 0.8 and scores["f1"] < 0.3, scores


def test_blank_is_the_floor(samples, shapes_metric):
    captions, scores = round_trip(BlankAdapter(), samples, shapes_metric)
    assert set(captions) == {"An image."}
    assert scores == dict.fromkeys(scores, 0.0)


def test_generation_is_deterministic_and_sized(samples):
    adapter = ShapesOracleAdapter(ShapesOracleConfig(detail="short"))
    text = samples[0].caption_short
    a, b, c = adapter.generate([text, text, text], seeds=[5, 5, 6], size=(96, 64))
    assert a.size == (96, 64) and a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    [empty] = adapter.generate(["a photo of a cat"], seeds=[0], size=None)
    assert empty.size == (256, 256) and len(empty.getcolors()) == 1  # nothing parsed: blank


def test_adapters_build_through_the_registry():
    oracle = build_adapter("shapes-oracle", {"detail": "short"})
    assert isinstance(oracle, ShapesOracleAdapter) and oracle.config.detail == "short"
    assert oracle.describe()["detail"] == "short" and len(oracle.describe()["oracle_sha256"]) == 64
    blank = build_adapter("blank")
    assert isinstance(blank, BlankAdapter) and blank.capabilities.native_resolution == (256, 256)
    with pytest.raises(ConfigError):
        build_adapter("shapes-oracle", {"detail": "medium"})
    with pytest.raises(ConfigError, match="detail"):
        ShapesOracleAdapter(ShapesOracleConfig(detail="medium"))
    assert BlankAdapter(BlankConfig(caption="x")).caption([None], prompt="", seeds=[0]) == ["x"]


@pytest.mark.slow
def test_calibration_table_via_the_scoring_engine(tmp_path):
    from unified_bench.tracks.shapes.calibration import calibrate, markdown_table

    rows = calibrate(tmp_path, split="test", limit=16, size=128, metrics=["shapes-attr"], log=lambda _: None)
    by_label = {row.label: row for row in rows}
    assert by_label["shapes-oracle-long"].scores["shapes-attr"][0] >= 0.95
    assert by_label["blank"].scores["shapes-attr"][0] == 0.0
    short = by_label["shapes-oracle-short"].scores
    assert short["shapes-attr.shape"][0] > 0.9 > 0.5 > short["shapes-attr.position"][0]
    table = markdown_table(rows)
    assert table.count("\n| ") == 3 and "shapes-oracle-short" in table
    results = json.loads((tmp_path / "blank" / "results.json").read_text())
    assert len(results["samples"]) == 16
    lines = (tmp_path / "shapes-oracle-long" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 16 and json.loads(lines[0])["caption"].startswith(("One", "Two", "Three", "Four"))
