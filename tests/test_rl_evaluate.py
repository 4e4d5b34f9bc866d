"""Stage evaluation plumbing: paired improvements between real run directories, the training
curve attached to a run where the leaderboard reads it, and the combined stage curves."""

from __future__ import annotations

import json

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from leaderboard_runs import make_run, write_references  # noqa: E402

from uae_reference.rl.curves import StepLog, combine_logs, plot_curves, read_log  # noqa: E402
from uae_reference.rl.evaluate import EvaluationReport, StageEval, paired_improvement, training_record  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-eval")
    refs = write_references(root / "refs", 40)
    low = make_run(root / "low", refs, model="uae-tiny", run_id="low", metrics=("effnet", "shapes-attr"), quality=0.5, seed=1, dataset="shapes")
    high = make_run(root / "high", refs, model="uae-tiny", run_id="high", metrics=("effnet", "shapes-attr"), quality=0.8, seed=2, dataset="shapes")
    return low, high


def test_paired_improvement_excludes_zero_only_for_a_real_change(runs):
    low, high = runs
    up = paired_improvement(("pre-rl", low), ("g4u", high), "shapes-attr")
    assert up.n == 40 and up.mean == pytest.approx(0.3, abs=0.05)
    assert up.low > 0 and up.excludes_zero
    same = paired_improvement(("a", low), ("b", low), "effnet")
    assert same.mean == 0.0 and not same.excludes_zero
    down = paired_improvement(("g4u", high), ("pre-rl", low), "effnet")
    assert down.high < 0 and down.excludes_zero  # a CI below zero also excludes it: report says "no improvement"


def test_report_markdown_lists_stages_and_changes(runs):
    low, high = runs
    breakdown = {"n": 40, "caption_f1": 0.4171, "caption_attribute_f1": {}, "fully_stated": 38, "render_f1": 0.899}
    stages = [StageEval("pre-rl", "ckpt", str(low), {"effnet": 0.5}, {"effnet": [0.48, 0.52]}, 40, breakdown)]
    report = EvaluationReport(stages, [paired_improvement(("pre-rl", low), ("g4u", high), "effnet")])
    text = report.markdown()
    assert "| pre-rl | 0.4171 | 38 of 40 | 0.8990 |" in text
    assert "| pre-rl | 0.5000 [0.4800, 0.5200] |" in text and "| pre-rl -> g4u | effnet |" in text and "| yes, better |" in text
    assert report.to_dict()["improvements"][0]["excludes_zero"] is True


def _log(path: Path, rewards: list[float], lengths: list[float]) -> Path:
    log = StepLog(path)
    for step, (r, n) in enumerate(zip(rewards, lengths), start=1):
        log.write({"step": step, "reward": r, "caption_length": n, "kl": 0.01 * step, "clip_fraction": 0.0, "attributes_per_object": 2 + step / 10})
    return path


def test_training_curve_reaches_the_leaderboard(tmp_path, monkeypatch):
    """The evaluator's run records its training provenance from the start (through run_eval),
    not patched into results.json afterwards."""
    from runner_helpers import make_images

    from unified_bench.leaderboard.entries import read_curve
    from unified_bench.results import load_results
    from unified_bench.runner.eval import EvalConfig, run_eval

    monkeypatch.setenv("UNIFIED_BENCH_CACHE", str(tmp_path / "cache"))
    g4u = _log(tmp_path / "g4u.csv", [0.6, 0.65, 0.7], [20, 25, 31])
    u4g = _log(tmp_path / "u4g.csv", [0.71, 0.73], [31, 31])
    combined = combine_logs([("g4u", g4u), ("u4g", u4g)], tmp_path / "curves.csv")
    rows = read_log(combined)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    with open(combined, newline="") as handle:
        assert [r["stage"] for r in csv.DictReader(handle)] == ["g4u"] * 3 + ["u4g"] * 2
    assert plot_curves([("g4u", g4u), ("u4g", u4g)], tmp_path / "curves.png").stat().st_size > 0

    high = tmp_path / "run"
    training = training_record(high, checkpoint="runs/uae-tiny-rl/u4g/final", curve_csv=combined)
    images = make_images(tmp_path / "data", 3)
    config = EvalConfig(model="mock", data=str(images), out=high, metrics=["ssim"], model_args={"size": 32}, progress=False, training=training)
    assert run_eval(config).ok
    data = load_results(high)
    expected = {"trainer": "uae_reference.rl", "checkpoint": "runs/uae-tiny-rl/u4g/final", "curve_csv": "train/curve.csv"}
    assert data["run"]["training"] == expected
    assert json.loads((high / "run.json").read_text())["training"] == expected  # in the run directory from the start
    warnings: list[str] = []
    curve = read_curve(data["run"]["training"], Path(high), warnings)
    assert not warnings
    assert curve.reward == (0.6, 0.65, 0.7, 0.71, 0.73) and curve.caption_length[:3] == (20.0, 25.0, 31.0)

    # what the evidence says of the stage travels in the record and is shown with the run
    from unified_bench.leaderboard import build_site

    noted = tmp_path / "noted"
    note = "U4G's gain <does not> hold across 3 training seeds"
    training = training_record(noted, checkpoint="ckpt", curve_csv=None, note=note)
    assert run_eval(EvalConfig(model="mock", data=str(images), out=noted, metrics=["ssim"], model_args={"size": 32},
                               progress=False, training=training)).ok
    assert load_results(noted)["run"]["training"] == {"trainer": "uae_reference.rl", "checkpoint": "ckpt", "note": note}
    build_site([noted], [], tmp_path / "site")
    pages = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "site").rglob("*.html"))
    assert "U4G&#39;s gain &lt;does not&gt; hold across 3 training seeds" in pages and note not in pages


def test_round_trip_breakdown_separates_caption_errors_from_render_errors(tmp_path):
    """Real Shapes renders read by the bundled oracle: a wrong word lowers only the caption half,
    a wrong drawing only the render half, and a caption that leaves attributes unsaid is kept
    out of the render half."""
    import json
    from dataclasses import replace

    from uae_reference.rl.evaluate import round_trip_breakdown
    from unified_bench.tracks.shapes.captions import caption, parse
    from unified_bench.tracks.shapes.compare import compare_scenes
    from unified_bench.tracks.shapes.render import render
    from unified_bench.tracks.shapes.scene import Scene, scene_from_seed

    def recolour(scene: Scene) -> Scene:
        first, *rest = scene.objects
        other = "red" if first.color != "red" else "blue"
        return Scene((replace(first, color=other), *rest))

    truths = [scene_from_seed(i) for i in range(12)]
    samples = []  # (truth, caption text, scene drawn)
    for i, truth in enumerate(truths):
        if i % 3 == 0:  # right caption, faithful drawing
            samples.append((truth, caption(truth, "long"), truth))
        elif i % 3 == 1:  # wrong colour said, drawn as said
            samples.append((truth, caption(recolour(truth), "long"), recolour(truth)))
        else:  # right caption, wrong colour drawn
            samples.append((truth, caption(truth, "long"), recolour(truth)))
    samples.append((truths[0], caption(truths[0], "short"), truths[0]))  # leaves attributes unsaid
    (tmp_path / "images").mkdir()
    lines = []
    for i, (truth, text, drawn) in enumerate(samples):
        render(drawn, 128).save(tmp_path / "images" / f"s{i}.png")
        lines.append(json.dumps({"sample_id": f"s{i}", "caption": text, "seed": i, "image": f"images/s{i}.png",
                                 "reference": f"refs/s{i}.png", "meta": {"scene": truth.to_dict()}}))
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")

    b = round_trip_breakdown(tmp_path)
    assert b["n"] == 13 and b["fully_stated"] == 12
    # caption half: 4 recoloured captions lose exactly one object each (full-match F1 = 2*(k-1)/(2k))
    expected = [1.0 if i % 3 != 1 else (len(t) - 1) / len(t) for i, t in enumerate(truths)]
    short = json.loads(lines[-1])
    expected.append(compare_scenes(truths[0], parse(short["caption"])).f1)
    assert b["caption_f1"] == pytest.approx(sum(expected) / 13, abs=1e-9)
    assert b["caption_attribute_f1"]["position"] == pytest.approx(sum(
        1.0 if i < 12 else compare_scenes(truths[0], parse(short["caption"])).attribute_f1("position") for i in range(13)) / 13)
    # render half (the oracle reads clean renders exactly): only the misdrawn third loses an object
    expected_render = [1.0 if i % 3 != 2 else (len(t) - 1) / len(t) for i, t in enumerate(truths)]
    assert b["render_f1"] == pytest.approx(sum(expected_render) / 12, abs=1e-9)


def test_stage_runs_are_named_by_model_and_stage(tmp_path, monkeypatch):
    """evaluate_stage names its run ("uae-tiny g4u"), so the leaderboard tells stages apart."""
    import uae_reference.adapter as adapter_module
    import unified_bench.runner.eval as runner_eval
    from uae_reference.adapter import BUNDLED_TINY
    from uae_reference.rl.evaluate import evaluate_stage, stage_label

    assert stage_label("pre-rl", BUNDLED_TINY) == "uae-tiny pre-rl"
    assert stage_label("g4u", tmp_path / "no-such-checkpoint") == "uae-reference g4u"

    class Stop(Exception):
        pass

    class Dummy:
        def __init__(self, config):
            pass

    seen = {}

    def fake_run_eval(config, adapter=None):
        seen["name"] = config.name
        raise Stop

    monkeypatch.setattr(adapter_module, "UAEReferenceAdapter", Dummy)
    monkeypatch.setattr(runner_eval, "run_eval", fake_run_eval)
    with pytest.raises(Stop):
        evaluate_stage("u4g", BUNDLED_TINY, tmp_path / "run", limit=2, progress=False)
    assert seen["name"] == "uae-tiny u4g"


# --- the paired bootstrap (scipy.stats.bootstrap, paired) -------------------------------------------

REPO = Path(__file__).resolve().parents[1]
ENTRIES = REPO / "leaderboard" / "entries" / "shapes" / "uae-tiny-rl"


@pytest.mark.parametrize(("before", "after", "metric"), [("pre-rl", "g4u", "shapes-attr"), ("g4u", "u4g", "shapes-attr"), ("g4u", "u4g", "effnet")])
def test_scipy_paired_bootstrap_gives_the_previous_intervals_within_monte_carlo_error(before, after, metric):
    """On the shipped stages' per-sample scores: the scipy interval and the hand-written one it
    replaced (``unified_bench.core.stats.paired_difference_ci``, 1,000 resamples) agree within
    Monte-Carlo error for any seed (the sd of a 2.5% quantile of 1,000 resamples is ~0.09 of
    the standard error), and with many resamples both approach mean -/+ 1.96 SE."""
    import numpy as np

    from uae_reference.rl.evaluate import paired_bootstrap_ci, per_sample_scores
    from unified_bench.core.stats import paired_difference_ci

    a, b = per_sample_scores(ENTRIES / before, metric), per_sample_scores(ENTRIES / after, metric)
    ids = sorted(set(a) & set(b))
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    se = float(np.std(np.subtract(ys, xs)) / np.sqrt(len(ids)))
    old = paired_difference_ci(xs, ys)
    for seed in (0, 1, 2):
        new = paired_bootstrap_ci(xs, ys, seed=seed)
        assert new.n == old.n == 200 and new.estimate == pytest.approx(old.estimate, abs=1e-15)
        assert abs(new.low - old.low) < 0.4 * se and abs(new.high - old.high) < 0.4 * se
    wide = paired_bootstrap_ci(xs, ys, resamples=20_000)
    assert abs(wide.low - (wide.estimate - 1.96 * se)) < 0.2 * se and abs(wide.high - (wide.estimate + 1.96 * se)) < 0.2 * se


def test_paired_bootstrap_edge_cases():
    from uae_reference.rl.evaluate import paired_bootstrap_ci

    assert paired_bootstrap_ci([None, float("nan")], [1.0, 2.0]) is None
    constant = paired_bootstrap_ci([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])
    assert constant.low == pytest.approx(0.1) and constant.high == pytest.approx(0.1) and constant.n == 3
    one = paired_bootstrap_ci([0.1, None], [0.5, 0.7])
    assert one.n == 1 and one.low == one.high == pytest.approx(0.4)
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_ci([0.1], [0.1, 0.2])
    wide = paired_bootstrap_ci([0.0] * 50 + [1.0] * 50, [1.0] * 50 + [0.0] * 50, level=0.99)
    assert wide.low < 0 < wide.high and wide.level == 0.99


@pytest.mark.slow
def test_stages_on_the_text_trip_over_cycles_and_an_extension_computes_only_the_new_cycle(tmp_path):
    """`rl evaluate --trip text --cycles N` on the shipped checkpoints: per-cycle and drop changes
    paired from the runs' own results.json; going from 2 to 3 cycles reruns nothing finished."""
    from uae_reference.rl.evaluate import TEXT_EVAL_METRICS, evaluate_stages

    stages = [("g4u", REPO / "uae_reference/checkpoints/uae-tiny-stages/g4u"), ("u4g", REPO / "uae_reference/checkpoints/uae-tiny")]
    out = tmp_path / "text"
    evaluate_stages(stages, out, limit=4, batch_size=4, progress=False, trip="text", cycles=2)
    cycle2 = {p.name: p.stat().st_mtime_ns for p in (out / "u4g" / "cycles" / "2" / "images").glob("*.png")}
    report = evaluate_stages(stages, out, limit=4, batch_size=4, progress=False, trip="text", cycles=3)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "u4g" / "cycles" / "2" / "images").glob("*.png")} == cycle2
    assert len(cycle2) == 4 and len(list((out / "u4g" / "cycles" / "3" / "images").glob("*.png"))) == 4

    data = json.loads((out / "rl_evaluation.json").read_text())
    assert data["trip"] == "text" and data["cycles"] == 3
    assert [(i["cycle"], i["metric"]) for i in data["cycle_improvements"]] == [
        (at, m) for at in (2, 3, "drop") for m in TEXT_EVAL_METRICS
    ]
    results = {name: json.loads((out / name / "results.json").read_text()) for name in ("g4u", "u4g")}
    for stage in report.stages:
        assert stage.curves == results[stage.name]["cycle_curves"] and set(stage.means) == set(TEXT_EVAL_METRICS)

    def per_sample(name, cycle):
        return results[name]["cycles"][cycle - 1]["similarities_by_model"]["shapes-attr@image"]

    ids = sorted(per_sample("g4u", 1))
    drop = {n: [per_sample(n, 1)[i] - per_sample(n, 3)[i] for i in ids] for n in ("g4u", "u4g")}
    expected = sum(b - a for a, b in zip(drop["g4u"], drop["u4g"])) / len(ids)
    got = next(i for i in report.cycle_improvements if i.cycle == "drop" and i.metric == "shapes-attr@image")
    assert got.n == 4 and got.mean == pytest.approx(expected, abs=1e-12)
    # the compact per-sample files give back every change of the report, to the bit
    from uae_reference.rl.evaluate import cycle_scores_csv, recompute_cycle_improvement

    files = {name: cycle_scores_csv(out / name, tmp_path / "evidence" / f"{name}.csv") for name in ("g4u", "u4g")}
    for change in report.cycle_improvements:
        again = recompute_cycle_improvement(files["g4u"], files["u4g"], change.metric, change.cycle)
        assert (again.estimate, again.low, again.high, again.n) == (change.mean, change.low, change.high, change.n)
    text = report.markdown()
    assert text.startswith("text trip, 3 cycle(s): the next tables are cycle 1")
    assert EvaluationReport.from_dict(report.to_dict()).markdown() == text and "| u4g | shapes-attr | " in text and "drop (lower: slower drift)" in text
    # the default report stays as it was: no trip keys, no curves
    plain = EvaluationReport(report.stages[:1], split="test", limit=4)
    plain.stages[0].curves = None
    assert not {"trip", "cycles", "cycle_improvements"} & set(plain.to_dict()) and "curves" not in plain.to_dict()["stages"][0]
