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


def direct_scores(model, args, samples, tmp_path, metrics):
    """What the calibration computed before it went through the runner: caption and generate
    the samples directly, write the files, score the pairs with the engine (per-sample scores)."""
    from unified_bench.core.seeds import seed_for
    from unified_bench.scoring import Pair, ScoringConfig, score_and_write

    adapter = build_adapter(model, args)
    seeds = [seed_for(0, s.sample_id) for s in samples]
    captions = adapter.caption([s.image for s in samples], prompt="", seeds=seeds)
    images = adapter.generate(captions, seeds=seeds, size=adapter.capabilities.native_resolution)
    pairs = []
    for sample, image in zip(samples, images):
        ref, recon = tmp_path / "refs" / f"{sample.sample_id}.png", tmp_path / "images" / f"{sample.sample_id}.png"
        ref.parent.mkdir(parents=True, exist_ok=True), recon.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(ref), image.save(recon)
        pairs.append(Pair(sample.sample_id, ref, recon, sample.meta))
    outcome = score_and_write(pairs, ScoringConfig(metrics=list(metrics), progress=False), tmp_path / "scored")
    return outcome.results["similarities_by_model"]


@pytest.mark.slow
def test_calibration_rows_are_runner_runs_with_the_direct_round_trip_scores(tmp_path):
    from unified_bench.runner.eval import EvalConfig, run_eval
    from unified_bench.runner.store import RunStore
    from unified_bench.tracks.shapes.calibration import CALIBRATION_ROWS, calibrate, markdown_table

    metrics = ["shapes-attr", "ssim"]
    rows = calibrate(tmp_path / "cal", split="test", limit=16, size=128, metrics=metrics, log=lambda _: None)
    by_label = {row.label: row for row in rows}
    assert by_label["shapes-oracle-long"].scores["shapes-attr"][0] >= 0.95
    assert by_label["blank"].scores["shapes-attr"][0] == 0.0
    short = by_label["shapes-oracle-short"].scores
    assert short["shapes-attr.shape"][0] > 0.9 > 0.5 > short["shapes-attr.position"][0]
    table = markdown_table(rows)
    assert table.count("\n| ") == 3 and "shapes-oracle-short" in table

    samples = shapes_samples("test", size=128, limit=16)
    for label, model, args in CALIBRATION_ROWS:
        row_dir = tmp_path / "cal" / label
        # the per-sample scores are those of the direct round trip the calibration used to run
        expected = direct_scores(model, args, samples, tmp_path / "direct" / label, metrics)
        results = json.loads((row_dir / "results.json").read_text())
        assert results["similarities_by_model"] == expected, label
        assert by_label[label].n == 16 and by_label[label].errors == 0
        # a normal run directory: run.json, captions.jsonl lines with image and reference
        info = json.loads((row_dir / "run.json").read_text())
        assert info["model"] == model and info["dataset"] == "shapes" and info["limit"] == 16
        state = RunStore(row_dir).read_state()
        assert sorted(state.finished) == [s.sample_id for s in samples]
        line = json.loads((row_dir / "captions.jsonl").read_text().splitlines()[0])
        assert line["image"] == "images/shapes-test-00000.png" and line["reference"] == "refs/shapes-test-00000.png"
        assert line["meta"] == json.loads(json.dumps(dict(samples[0].meta)))  # the scene, for shapes-attr
    lines = (tmp_path / "cal" / "shapes-oracle-long" / "captions.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["caption"].startswith(("One", "Two", "Three", "Four"))

    # resuming a finished row recomputes nothing: no adapter call, the same files
    row_dir = tmp_path / "cal" / "blank"
    before = {p.name: p.stat().st_mtime_ns for p in (row_dir / "images").iterdir()}
    captions = (row_dir / "captions.jsonl").read_bytes()
    scores = results_of(row_dir)
    config = EvalConfig(
        model="blank", data="shapes", data_args={"split": "test", "size": "128"}, limit=16,
        metrics=metrics, out=row_dir, batch_size=64, resume=True, progress=False,
    )
    outcome = run_eval(config)
    assert outcome.finished == 16 and not outcome.errors
    assert json.loads((row_dir / "run.json").read_text())["processed_this_session"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (row_dir / "images").iterdir()} == before
    assert (row_dir / "captions.jsonl").read_bytes() == captions
    assert outcome.score.results["similarities_by_model"] == scores
    # and calibrate(resume=True) gives the same table without running anything again
    again = calibrate(tmp_path / "cal", split="test", limit=16, size=128, metrics=metrics, resume=True, log=lambda _: None)
    assert markdown_table(again) == table
    with pytest.raises(ConfigError, match="resume"):
        calibrate(tmp_path / "cal", split="test", limit=16, size=128, metrics=metrics, log=lambda _: None)


def results_of(run_dir):
    return json.loads((run_dir / "results.json").read_text())["similarities_by_model"]
