"""``unified-bench compare``: paired differences between real runs, checked against an
independent computation from the two results.json files."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from runner_helpers import make_images

from unified_bench.cli import main
from unified_bench.leaderboard.comparison import compare_reports
from unified_bench.results import read_report
from unified_bench.runner.eval import EvalConfig, run_eval

METRICS = ["toy-pair", "toy-embed"]


def _run(data, out, *, noise: float, limit: int | None = None, **kw):
    config = EvalConfig(
        model="mock", data=str(data), out=out, metrics=METRICS, model_args={"size": 32, "noise": noise},
        limit=limit, progress=False, **kw,
    )
    assert run_eval(config).ok
    return out


@pytest.fixture
def two_runs(toys, tmp_path):
    data = make_images(tmp_path / "data", 5)
    a = _run(data, tmp_path / "a", noise=2.0, limit=4)  # img00..img03
    b = _run(data, tmp_path / "b", noise=40.0)  # img00..img04
    return a, b


def _independent(a_dir, b_dir, metric):
    """From the files alone: the pairs with equal id and reference hash, their mean difference,
    the bootstrap CI (seed 0, 1000 resamples, percentile) and the exact sign-flip p-value."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a_dir, b_dir))
    sha_a = {s["sample_id"]: s["reference_sha256"] for s in ra["samples"]}
    sha_b = {s["sample_id"]: s["reference_sha256"] for s in rb["samples"]}
    ids = [i for i in sha_a if sha_b.get(i) == sha_a[i]]
    d = np.array([rb["similarities_by_model"][metric][i] - ra["similarities_by_model"][metric][i] for i in ids])
    idx = np.random.default_rng(0).integers(0, d.size, size=(1000, d.size))
    low, high = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    flips = [abs((np.array(s) * d).mean()) for s in itertools.product([-1, 1], repeat=d.size)]
    exact_p = float(np.mean([f >= abs(d.mean()) - 1e-12 for f in flips]))
    return ids, float(d.mean()), float(low), float(high), exact_p


def test_compare_matches_an_independent_computation(two_runs):
    a_dir, b_dir = two_runs
    comparison = compare_reports(read_report(a_dir), read_report(b_dir / "results.json"))
    assert comparison.shared == 4
    by_metric = {d.metric: d for d in comparison.differences}
    assert set(by_metric) == set(METRICS)  # no composite: the paper metrics did not run
    for metric in METRICS:
        ids, mean, low, high, exact_p = _independent(a_dir, b_dir, metric)
        diff = by_metric[metric]
        assert diff.n == len(ids) == 4
        assert (diff.mean, diff.low, diff.high) == pytest.approx((mean, low, high), abs=1e-12)
        assert abs(diff.p_value - exact_p) < 0.05  # Monte Carlo (1000 sign flips) against exact
        assert diff.b_mean - diff.a_mean == pytest.approx(mean)
    # more noise scores lower on the pixel metric, and a one-sample difference in the sets is said
    assert by_metric["toy-pair"].mean < 0
    assert comparison.warnings == ["samples: 1 only in B; compared on the 4 shared"]


def test_compare_warns_on_protocol_and_weights(two_runs, tmp_path):
    a_dir, b_dir = two_runs
    data = json.loads((b_dir / "results.json").read_text())
    data["run"]["protocol_executed"]["generation"]["num_inference_steps"] = 7
    data["run"]["metrics"][0]["checkpoint"] = "other/weights"
    data["run"]["dataset"]["name"] = "elsewhere"
    (b_dir / "results.json").write_text(json.dumps(data))
    warnings = compare_reports(read_report(a_dir), read_report(b_dir)).warnings
    assert "protocol: generation.num_inference_steps A 0, B 7" in warnings
    assert any(w.startswith("metric weights: toy-pair A ") and "'other/weights'" in w for w in warnings)
    assert any(w.startswith("dataset: A ") and "'elsewhere'" in w for w in warnings)


def test_compare_cli_formats(two_runs, capsys):
    a_dir, b_dir = two_runs
    main(["compare", str(a_dir), str(b_dir), str(a_dir), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert [c["shared_samples"] for c in out] == [4, 4]
    self_compare = {d["metric"]: d for d in out[1]["differences"]}
    assert self_compare["toy-pair"]["difference"] == 0 and self_compare["toy-pair"]["p_value"] == 1.0
    main(["compare", str(a_dir), str(b_dir), "--format", "csv"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "run_a,run_b,metric,n,a,b,difference,ci_low,ci_high,p_value,mde,required_n"
    assert len(lines) == 3 and lines[1].split(",")[2] == "toy-pair"
    assert "samples: 1 only in B" in captured.err
    main(["compare", str(a_dir), str(b_dir)])
    md = capsys.readouterr().out.strip().splitlines()
    assert md[0].startswith("| run_a") and set(md[1]) <= set("|-: ") and len(md) == 4


def test_compare_usage_errors_are_one_line(two_runs, capsys):
    a_dir, _ = two_runs
    for args, fragment in (
        ([str(a_dir)], "at least two runs"),
        ([str(a_dir), str(a_dir / "nope")], "cannot read"),
        ([str(a_dir), str(a_dir), "--format", "tex"], "Invalid value for '--format'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0]


def test_composite_difference_matches_an_independent_computation(tmp_path):
    from leaderboard_runs import PAPER, make_run, write_references

    refs = write_references(tmp_path / "refs", 8)
    a_dir = make_run(tmp_path / "a", refs, model="alpha", run_id="ra", quality=0.6, seed=1, missing={"clip": [2]})
    b_dir = make_run(tmp_path / "b", refs, model="beta", run_id="rb", quality=0.7, seed=2)
    comparison = compare_reports(read_report(a_dir), read_report(b_dir))
    diff = {d.metric: d for d in comparison.differences}["unified_score"]
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a_dir, b_dir))
    ids = [s["sample_id"] for s in ra["samples"]]
    a = np.array([[np.nan if ra["similarities_by_model"][m][i] is None else ra["similarities_by_model"][m][i] for i in ids] for m in PAPER])
    b = np.array([[rb["similarities_by_model"][m][i] for i in ids] for m in PAPER])
    estimate = 100 * (np.nanmean(b, axis=1).mean() - np.nanmean(a, axis=1).mean())
    idx = np.random.default_rng(0).integers(0, len(ids), size=(1000, len(ids)))
    draws = 100 * (np.nanmean(b[:, idx], axis=-1).mean(axis=0) - np.nanmean(a[:, idx], axis=-1).mean(axis=0))
    low, high = np.quantile(draws, [0.025, 0.975])
    assert diff.n == 8 and (diff.mean, diff.low, diff.high) == pytest.approx((estimate, low, high), abs=1e-9)
    # the composite of each run over the shared samples is the unified score results.json reports
    assert (diff.a_mean, diff.b_mean) == pytest.approx((ra["unified_score"]["value"], rb["unified_score"]["value"]))
    assert 0 <= diff.p_value <= 1 and diff.mean > 0
    assert {d.metric: d.n for d in comparison.differences}["clip"] == 7  # the failed sample is left out
    assert comparison.warnings == []


# --- resolution: MDE and required n beside each difference ------------------------------------


def test_compare_reports_mde_and_required_n_from_the_per_sample_differences(tmp_path):
    """Each metric's and the composite's MDE and required n, against the per-sample differences
    taken from the two results.json files (the power functions are checked in test_power.py)."""
    from leaderboard_runs import PAPER, make_run, write_references

    from unified_bench.core.stats import minimum_detectable_effect, required_samples

    refs = write_references(tmp_path / "refs", 12)
    a_dir = make_run(tmp_path / "a", refs, model="alpha", run_id="ra", quality=0.6, seed=1)
    b_dir = make_run(tmp_path / "b", refs, model="beta", run_id="rb", quality=0.63, seed=2)
    comparison = compare_reports(read_report(a_dir), read_report(b_dir), power=0.9, alpha=0.1)
    by_metric = {d.metric: d for d in comparison.differences}
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a_dir, b_dir))
    ids = [s["sample_id"] for s in ra["samples"]]
    a = np.array([[ra["similarities_by_model"][m][i] for i in ids] for m in PAPER])
    b = np.array([[rb["similarities_by_model"][m][i] for i in ids] for m in PAPER])
    for name, d in [*zip(PAPER, b - a), ("unified_score", 100 * (b.mean(axis=0) - a.mean(axis=0)))]:
        res = by_metric[name].resolution
        assert res.n == 12 and res.sd == pytest.approx(d.std(ddof=1)) and res.note is None
        assert res.mde == pytest.approx(minimum_detectable_effect(12, power=0.9, alpha=0.1) * d.std(ddof=1))
        assert res.required_n == required_samples(d.mean() / d.std(ddof=1), power=0.9, alpha=0.1)
    row = {d["metric"]: d for d in comparison.to_dict()["differences"]}["unified_score"]
    assert row["mde"] == by_metric["unified_score"].resolution.mde and row["required_n"] >= 2
    assert comparison.to_dict()["power"] == 0.9 and comparison.notes == []


def test_compare_bad_input_says_so_in_one_line_and_never_prints_nan(tmp_path, capsys):
    """One shared sample, a zero-variance difference, a metric missing from one run."""
    from leaderboard_runs import make_run, write_references

    refs = write_references(tmp_path / "refs", 6)
    a_dir = make_run(tmp_path / "a", refs, model="alpha", run_id="ra", quality=0.6, seed=1)
    one = make_run(tmp_path / "one", refs[:1], model="one", run_id="r1", quality=0.7, seed=3)
    short = make_run(tmp_path / "short", refs, model="short", run_id="rs", metrics=("clip", "dinov2"), quality=0.7, seed=4)
    copy = tmp_path / "copy"
    copy.mkdir()
    data = json.loads((a_dir / "results.json").read_text())
    data["run"].update(run_id="rcopy", name="copy")
    (copy / "results.json").write_text(json.dumps(data))  # the same scores: every difference is 0

    main(["compare", str(a_dir), str(one), str(copy), str(short)])
    captured = capsys.readouterr()
    assert "nan" not in captured.out.lower() and "nan" not in captured.err.lower()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert "note (one vs alpha): clip: fewer than 2 shared samples (n=1): no power computation" in err
    assert "note (one vs alpha): unified_score: fewer than 2 shared samples (n=1): no power computation" in err
    assert "note (copy vs alpha): clip: zero variance: every sample differs by exactly 0; no power computation applies" in err
    assert "warning (short vs alpha): metrics: not compared, scored in one run only: A dinov3, longclip" in err
    assert "warning (short vs alpha): composite: unified_score not compared: B lacks dinov3, longclip" in err
    main(["compare", str(a_dir), str(one), str(copy), str(short), "--format", "json"])
    out = json.loads(capsys.readouterr().out)  # parsed: valid JSON, no NaN
    assert {d["metric"]: d["note"] for d in out[0]["differences"]}["clip"].startswith("fewer than 2 shared samples")
    assert all(d["mde"] is None and d["required_n"] is None for d in out[1]["differences"])
    assert [d["metric"] for d in out[2]["differences"]] == ["clip", "dinov2"]
    main(["compare", str(a_dir), str(one), "--format", "csv"])
    assert "nan" not in capsys.readouterr().out.lower()
    for bad in (["--power", "0.01"], ["--alpha", "1.5"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", str(a_dir), str(one), *bad])
        assert exit_info.value.code == 2
        assert "--power/--alpha" in capsys.readouterr().err


SHIPPED = "leaderboard/entries/shapes/uae-tiny-rl"


def test_compare_of_the_shipped_shapes_stages_prints_the_resolution(monkeypatch, capsys):
    """Acceptance 3: g4u against u4g, every metric with its difference, CI, p-value, MDE and
    required n; docs/statistics.md quotes this output as it is."""
    from runner_helpers import REPO

    monkeypatch.chdir(REPO)
    main(["compare", f"{SHIPPED}/g4u", f"{SHIPPED}/u4g"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["run_a", "run_b", "metric", "n", "a", "b", "difference", "ci_low", "ci_high", "p_value", "mde", "required_n"]
    rows = {cells[2]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert set(rows) == {"shapes-attr", "effnet", "ssim"}
    for cells in rows.values():
        assert cells[3] == "200" and all(cells[i] for i in range(4, 12)), cells
        assert float(cells[10]) > 0 and int(cells[11]) >= 2
    assert captured.err == ""
    docs = (REPO / "docs" / "statistics.md").read_text(encoding="utf-8")
    for line in lines:
        assert line in docs, f"docs/statistics.md does not quote: {line}"
