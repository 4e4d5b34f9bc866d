"""Shapes oracle: F1 definitions, the bundled network's accuracy, the shapes-attr metric, training."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from unified_bench.tracks.shapes import Scene, ShapeObject, blank_image, render, shapes_samples
from unified_bench.tracks.shapes.compare import compare_scenes, match_objects
from unified_bench.tracks.shapes.oracle import (
    BUNDLED_CHECKPOINT,
    OracleTrainConfig,
    ShapesAttrMetric,
    ShapesOracle,
    evaluate_oracle,
    train_oracle,
)
from unified_bench.core.errors import ConfigError, WeightsNotFoundError
from unified_bench.metrics import PairInput, build_metric

RED_CIRCLE = ShapeObject("circle", "red", "large", "top left")
BLUE_STAR = ShapeObject("star", "blue", "small", "center")
GREEN_SQUARE = ShapeObject("square", "green", "small", "bottom right")
TRUTH = Scene((RED_CIRCLE, BLUE_STAR, GREEN_SQUARE))


# --- compare (pure) -------------------------------------------------------------------------


def test_perfect_prediction_scores_one():
    result = compare_scenes(TRUTH, TRUTH)
    assert result.f1 == 1.0 and result.sub_scores() == dict.fromkeys(("shape", "color", "size", "position", "count"), 1.0)


def test_empty_prediction_scores_zero():
    result = compare_scenes(TRUTH, Scene(()))
    assert result.f1 == 0.0 and set(result.sub_scores().values()) == {0.0}


def test_right_objects_in_wrong_cells_keep_shape_and_colour():
    moved = Scene(
        (
            ShapeObject("circle", "red", "large", "bottom left"),
            ShapeObject("star", "blue", "small", "top right"),
            ShapeObject("square", "green", "small", "center left"),
        )
    )
    result = compare_scenes(TRUTH, moved)
    assert result.f1 == 0.0
    scores = result.sub_scores()
    assert scores["shape"] == scores["color"] == scores["size"] == scores["count"] == 1.0
    assert scores["position"] == 0.0


def test_partial_prediction_counts_and_f1():
    pred = Scene((RED_CIRCLE, ShapeObject("star", "pink", "small", "center")))
    result = compare_scenes(TRUTH, pred)
    assert result.f1 == pytest.approx(2 * 1 / 5)
    assert result.attribute_f1("shape") == pytest.approx(2 * 2 / 5)
    assert result.attribute_f1("color") == pytest.approx(2 * 1 / 5)
    assert result.count_score == pytest.approx(1 - 1 / 3)


def test_matching_prefers_full_agreement_then_cell():
    truth = Scene((ShapeObject("circle", "red", "small", "top left"), ShapeObject("circle", "red", "large", "top right")))
    # sizes swapped: pairing by cell (position right, size wrong) ties with pairing by size;
    # the cell tie-break decides
    pred = Scene((ShapeObject("circle", "red", "large", "top left"), ShapeObject("circle", "red", "small", "top right")))
    pairs = match_objects(truth, pred)
    assert sorted(pairs) == [(0, 0), (1, 1)]
    result = compare_scenes(truth, pred)
    assert result.attribute_f1("position") == 1.0 and result.attribute_f1("size") == 0.0


def test_attribute_precision_ignores_unstated_values():
    pred = Scene((ShapeObject("circle", "red", None, None), ShapeObject("star", "green", None, None)))
    result = compare_scenes(TRUTH, pred)
    assert result.attribute_precision("shape") == 1.0
    assert result.attribute_precision("color") == 0.5
    assert result.attribute_precision("size") is None
    assert result.attribute_precision() == pytest.approx(3 / 4)


# --- the bundled oracle ---------------------------------------------------------------------


def test_bundled_checkpoint_is_small_and_documented():
    assert BUNDLED_CHECKPOINT.stat().st_size < 5_000_000
    with safe_open(str(BUNDLED_CHECKPOINT), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "shapes-oracle-v1" and "train-oracle" in meta["command"]


@pytest.mark.slow
def test_oracle_accuracy_on_held_out_renders():
    oracle = ShapesOracle("bundled")
    accuracy = evaluate_oracle(oracle, "test", n=300, size=64)
    assert min(accuracy.values()) >= 0.97, accuracy
    degraded = evaluate_oracle(oracle, "val", n=150, size=256, degraded=True)
    assert min(degraded.values()) >= 0.95, degraded


def test_missing_or_foreign_checkpoint_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="train-oracle"):
        ShapesOracle(tmp_path / "absent.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "other"})
    with pytest.raises(ConfigError, match="not a Shapes oracle checkpoint"):
        ShapesOracle(tmp_path / "other.safetensors")


# --- the metric -----------------------------------------------------------------------------


def test_metric_is_built_through_the_registry():
    built = build_metric("shapes-attr")
    assert isinstance(built, ShapesAttrMetric)
    assert built.info.checkpoint == "bundled" and len(built.info.revision) == 64
    assert built.needs_meta and built.unit == "f1"


def test_metric_on_perfect_blank_and_moved_pairs(shapes_metric):
    samples = shapes_samples("test", size=128, limit=12)
    perfect = [PairInput(s.sample_id, s.image, s.image, s.meta) for s in samples]
    blank = [PairInput(s.sample_id, s.image, blank_image(128), s.meta) for s in samples]
    scores = shapes_metric.score_pairs(perfect + blank)
    assert all(s.error is None for s in scores)
    assert sum(s.value for s in scores[:12]) / 12 >= 0.97
    assert all(s.value == 0.0 and s.sub_scores["count"] == 0.0 for s in scores[12:])
    # the same objects in other cells: shape and colour survive, position does not
    cells = {"top left": "center left", "center": "bottom center", "bottom right": "top right"}
    moved_scene = Scene(tuple(ShapeObject(o.shape, o.color, o.size, cells[o.position]) for o in TRUTH.objects))
    [moved] = shapes_metric.score_pairs([PairInput("m", render(TRUTH), render(moved_scene), {"scene": TRUTH.to_dict()})])
    assert moved.value == 0.0 and moved.sub_scores["shape"] == moved.sub_scores["color"] == 1.0
    assert moved.sub_scores["position"] == 0.0


def test_metric_without_meta_parses_the_reference(shapes_metric):
    image = render(TRUTH, 256, jitter_seed=3)
    [same, other, bad] = shapes_metric.score_pairs(
        [
            PairInput("a", image, render(TRUTH, 256, jitter_seed=4)),
            PairInput("b", image, blank_image(256), {}),
            PairInput("c", image, image, {"scene": {"objects": [{"shape": "hexagon"}]}}),
        ]
    )
    assert same.value == 1.0 and other.value == 0.0
    assert bad.value is None and "not a Shapes scene" in bad.error


def test_metric_through_the_scoring_engine(tmp_path, shapes_metric):
    from unified_bench.scoring import Pair, ScoringConfig, score_and_write

    pairs = []
    for sample in shapes_samples("test", size=64, limit=6):
        ref = tmp_path / f"{sample.sample_id}.png"
        sample.image.save(ref)
        pairs.append(Pair(sample.sample_id, ref, ref, sample.meta))
    outcome = score_and_write(pairs, ScoringConfig(["shapes-attr"], progress=False, use_cache=False), tmp_path / "out")
    results = outcome.results
    assert results["statistics_by_model"]["shapes-attr"]["average_similarity"] >= 0.95
    assert {"shapes-attr.shape", "shapes-attr.position", "shapes-attr.count"} <= set(results["sub_scores"])
    assert results["units"]["shapes-attr"] == "f1"


# --- training -------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_is_reproducible_and_loadable(tmp_path):
    config = OracleTrainConfig(n_train=192, epochs=1, batch_size=64)
    logs: list[str] = []
    train_oracle(tmp_path / "a.safetensors", config, log=logs.append, val_samples=20)
    train_oracle(tmp_path / "b.safetensors", config, log=lambda _: None, val_samples=20)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("epoch 1/1" in line for line in logs)
    oracle = ShapesOracle(tmp_path / "a.safetensors")
    assert len(oracle.parse([blank_image(64)])) == 1
