"""``eval --captions-from RUN_DIR``: regenerate from an earlier run's captions, never calling a captioner."""

from __future__ import annotations

import pytest
from runner_helpers import make_images, read_captions

from unified_bench.core.errors import ConfigError
from unified_bench.results import load_results
from unified_bench.runner.eval import EvalConfig, run_eval
from unified_bench.runner.store import RunStore

IDS = ("img00", "img01", "img02", "img03")


def config(data, out, **kw) -> EvalConfig:
    base = dict(model="mock", data=str(data), out=out, metrics=["toy-pair"], model_args={"size": 32}, progress=False)
    base.update(kw)
    return EvalConfig(**base)


def test_captions_come_from_the_earlier_run_and_the_captioner_is_never_called(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    source = tmp_path / "source"
    assert run_eval(config(data, source, seed=1)).ok
    source_run = load_results(source)["run"]
    # every caption() call of this generator raises: a run that called it would fail every sample
    args = {"size": 32, "noise": 0.0, "fail_caption_ids": IDS}
    out = tmp_path / "regen"
    outcome = run_eval(config(data, out, seed=1, model_args=args, captions_from=source, batch_size=3))
    assert outcome.ok and outcome.finished == 4
    assert {s: r["caption"] for s, r in read_captions(out).items()} == {
        s: r["caption"] for s, r in read_captions(source).items()
    }
    run = load_results(out)["run"]  # validates against the schema
    came = run["captions_from"]
    assert came["run"] == str(source.resolve()) and came["run_id"] == source_run["run_id"]
    assert len(came["captions_sha256"]) == 64
    # what produced the captions: the source run's executed caption settings
    assert run["protocol_executed"]["caption"] == source_run["protocol_executed"]["caption"]
    assert run["model"]["args"]["noise"] == 0.0  # the generator is this run's adapter
    assert RunStore(out).read_run_info().captions_from == came
    # a run made without --captions-from records no such key
    assert "captions_from" not in source_run
    assert "captions_from" not in (source / "run.json").read_text()


def test_a_sample_missing_from_the_source_run_fails_alone_naming_the_run(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    source = tmp_path / "source"
    assert run_eval(config(data, source, limit=2)).ok  # img00, img01 only
    out = tmp_path / "regen"
    outcome = run_eval(config(data, out, captions_from=source))
    assert outcome.finished == 2
    errors = {e.sample_id: e for e in outcome.errors}
    assert sorted(errors) == ["img02", "img03"]
    assert errors["img02"].stage == "caption" and str(source.resolve()) in errors["img02"].message


def test_a_caption_of_another_reference_is_not_reused(toys, tmp_path):
    source = tmp_path / "source"
    assert run_eval(config(make_images(tmp_path / "a", 2, seed=0), source)).ok
    out = tmp_path / "regen"
    outcome = run_eval(config(make_images(tmp_path / "b", 2, seed=5), out, captions_from=source))
    assert outcome.finished == 0
    assert all(e.stage == "caption" and "reference differs" in e.message for e in outcome.errors)


def test_captions_from_is_part_of_the_runs_identity_on_resume(toys, tmp_path):
    data = make_images(tmp_path / "data", 3)
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_eval(config(data, first)).ok
    assert run_eval(config(data, second, model_args={"size": 32, "noise": 1.0})).ok
    out = tmp_path / "regen"
    assert run_eval(config(data, out, captions_from=first, limit=2)).ok
    with pytest.raises(ConfigError, match="captions_from"):
        run_eval(config(data, out, captions_from=second, resume=True))
    with pytest.raises(ConfigError, match="captions_from"):
        run_eval(config(data, out, resume=True))
    outcome = run_eval(config(data, out, captions_from=first, resume=True))
    assert outcome.ok and outcome.finished == 3


def test_captions_from_needs_a_run_directory(toys, tmp_path):
    data = make_images(tmp_path / "data", 1)
    with pytest.raises(ConfigError, match="not a run directory"):
        run_eval(config(data, tmp_path / "regen", captions_from=tmp_path / "data"))
