"""Trips and cycles (issue 17): the text trip's run loop, chained cycles, their run directory,
results, resume, shards and batches. A default run stays today's run, file for file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import trip_datasets
from runner_helpers import essentials, make_images, read_captions, run_cli
from test_runner_kill import finished_lines, start

from unified_bench.adapters.mock import MockAdapter, MockConfig
from unified_bench.core.errors import ConfigError
from unified_bench.core.seeds import seed_for, trip_seed
from unified_bench.results.io import load_results
from unified_bench.results.model import ScoreReport
from unified_bench.runner.eval import EvalConfig, run_eval
from unified_bench.runner.merge import merge_shards
from unified_bench.runner.store import RunStore, cycle_dir
from unified_bench.scoring import Pair, ScoringConfig

OFFICIAL = ("model_types", "similarities_by_model", "statistics_by_model", "summary", "unified_score",
            "extended_score", "confidence_intervals", "sub_scores", "units", "errors")
#: the text trip is scored by the text metrics' engine (Pair.text, ScoringConfig.trip)
TEXT_SCORING = "text" in Pair.__dataclass_fields__ and "trip" in ScoringConfig.__dataclass_fields__
needs_text_scoring = pytest.mark.skipif(not TEXT_SCORING, reason="the scoring engine does not score texts yet")


def config(data, out, **kw) -> EvalConfig:
    base = dict(model="mock", data=str(data), out=out, metrics=["toy-pair", "toy-embed"], model_args={"size": 32},
                seed=4, progress=False, scoring=ScoringConfig(metrics=(), use_cache=False))
    base.update(kw)
    return EvalConfig(**base)


def numbers(out: Path) -> dict:
    """Every score of a run's results.json (no paths, times or ids)."""
    data = json.loads((out / "results.json").read_text())
    return {key: data.get(key) for key in (*OFFICIAL, "trip", "cycles", "cycle_curves")}


def csv_rows(out: Path) -> list[dict]:
    """scores.csv without the path columns."""
    rows = list(csv.DictReader(io.StringIO((out / "scores.csv").read_text())))
    return [{k: v for k, v in row.items() if k not in ("reference", "reconstruction")} for row in rows]


def chain(out: Path, cycles: int, *, scored: bool = True) -> list[dict]:
    """What must not change with batching, sharding or interruption, cycle by cycle."""
    return [essentials(out) if k == 1 and scored else _cycle_files(cycle_dir(out, k)) for k in range(1, cycles + 1)]


def _cycle_files(directory: Path) -> dict:
    captions = {sid: (row["caption"], row["seed"], row.get("prompt")) for sid, row in read_captions(directory).items()}
    images = {p.name: p.read_bytes() for p in sorted((directory / "images").glob("*.png"))}
    return {"captions": captions, "images": images}


# --- the image trip -------------------------------------------------------------------------


def test_default_run_is_todays_and_cycle_one_of_three_is_the_default_run(toys, tmp_path):
    data = make_images(tmp_path / "data", 5)
    plain, three = tmp_path / "plain", tmp_path / "three"
    assert run_eval(config(data, plain)).ok
    outcome = run_eval(config(data, three, cycles=3))
    assert outcome.ok and [o.finished for o in outcome.cycles] == [5, 5, 5]

    # the default run writes what it always wrote: no trip keys anywhere
    results = json.loads((plain / "results.json").read_text())
    assert not {"trip", "cycles", "cycle_curves"} & set(results)
    assert not {"trip", "cycle", "cycles"} & set(json.loads((plain / "run.json").read_text()))
    assert (plain / "scores.csv").read_text().splitlines()[0] == "sample_id,reference,reconstruction,toy-pair,toy-embed,error"
    assert all("prompt" not in row for row in read_captions(plain).values())
    assert not (plain / "cycles").exists()

    # cycle 1 of the three-cycle run is the default run: same bytes, same numbers
    assert (plain / "captions.jsonl").read_bytes() == (three / "captions.jsonl").read_bytes()
    for image in (plain / "images").iterdir():
        assert image.read_bytes() == (three / "images" / image.name).read_bytes()
    plain_numbers, three_numbers = numbers(plain), numbers(three)
    assert {k: plain_numbers[k] for k in OFFICIAL} == {k: three_numbers[k] for k in OFFICIAL}
    assert three_numbers["trip"] == "image" and [c["cycle"] for c in three_numbers["cycles"]] == [1, 2, 3]
    first = three_numbers["cycles"][0]
    assert first["statistics_by_model"] == plain_numbers["statistics_by_model"] and first["vs_previous"] is None
    assert first["similarities_by_model"] == plain_numbers["similarities_by_model"]
    assert all(c["vs_previous"]["statistics_by_model"] for c in three_numbers["cycles"][1:])
    curve = three_numbers["cycle_curves"]["toy-embed"]
    assert curve["by_cycle"][0] == plain_numbers["statistics_by_model"]["toy-embed"]["average_similarity"]
    assert curve["drop"] == pytest.approx(curve["by_cycle"][0] - curve["by_cycle"][2])
    assert curve["vs_previous_by_cycle"][0] is None and None not in curve["vs_previous_by_cycle"][1:]
    rows = csv_rows(three)
    plain_rows = csv_rows(plain)
    assert [{k: r[k] for k in plain_rows[0]} for r in rows if r["cycle"] == "1"] == plain_rows
    assert {(r["trip"], r["cycle"], r["versus"]) for r in rows} == {
        ("image", "1", "original"), ("image", "2", "original"), ("image", "2", "previous"),
        ("image", "3", "original"), ("image", "3", "previous")}
    # the typed report reads the file back to the same file
    assert ScoreReport.from_results_json(load_results(three)).to_results_json()["cycles"] == three_numbers["cycles"]

    # cycle k is a run directory of its own, fed by cycle k-1's reconstructions
    second = read_captions(three / "cycles" / "2")
    assert second["img00"]["reference"] == "../../images/img00.png"
    assert second["img00"]["seed"] == trip_seed(4, "img00", "image", 2) != seed_for(4, "img00")
    assert read_captions(three / "cycles" / "3")["img00"]["reference"] == "../2/images/img00.png"
    info = json.loads((three / "cycles" / "3" / "run.json").read_text())
    assert info["cycle"] == 3 and "trip" not in info and json.loads((three / "run.json").read_text())["cycles"] == 3


def test_extending_a_finished_run_computes_only_the_new_cycle(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    out = tmp_path / "run"
    run_eval(config(data, out, cycles=2))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("images/*.png")}
    outcome = run_eval(config(data, out, cycles=3, resume=True))
    assert outcome.ok and [o.finished for o in outcome.cycles] == [4, 4, 4]
    assert [json.loads((cycle_dir(out, k) / "run.json").read_text())["processed_this_session"] for k in (1, 2, 3)] == [0, 0, 4]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing earlier was rewritten
    whole = tmp_path / "whole"
    run_eval(config(data, whole, cycles=3))
    assert chain(out, 3) == chain(whole, 3) and numbers(out) == numbers(whole)


def test_the_trip_is_the_runs_identity(toys, tmp_path, monkeypatch):
    trip_datasets.register(monkeypatch)
    out = tmp_path / "run"
    run_eval(config("shapes-prompted", out, data_args={"n": "2"}, score=False))  # images and prompts
    with pytest.raises(ConfigError, match="trip differs"):
        run_eval(config("shapes-prompted", out, data_args={"n": "2"}, trip="text", resume=True))


def test_a_failed_sample_is_not_run_in_the_next_cycle(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    out = tmp_path / "run"

    class FailsInCycleTwo(MockAdapter):
        def caption(self, images, *, prompt, seeds, sample_ids=None):
            bad = trip_seed(4, "img01", "image", 2)
            return ["" if seed == bad else c for seed, c in zip(seeds, super().caption(images, prompt=prompt, seeds=seeds))]

    outcome = run_eval(config(data, out, cycles=3), adapter=FailsInCycleTwo(MockConfig(size=32)))
    assert [o.finished for o in outcome.cycles] == [4, 3, 3]
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [("img01", "caption")]
    assert "cycle 2" in outcome.errors[0].message
    third = RunStore(out / "cycles" / "3").read_state().errors["img01"]
    assert third.stage == "previous" and "cycle 2 failed" in third.message
    results = json.loads((out / "results.json").read_text())
    assert [(e["sample_id"], e["stage"]) for e in results["cycles"][2]["errors"]] == [("img01", "previous")]
    assert results["cycles"][1]["similarities_by_model"]["toy-pair"].keys() == {"img00", "img02", "img03"}
    # a resume retries it in cycle 2 (a plain mock answers now), then runs it in cycle 3
    outcome = run_eval(config(data, out, cycles=3, resume=True))
    assert outcome.ok and [o.finished for o in outcome.cycles] == [4, 4, 4]


def test_cycles_with_shards_merge_and_batches_equal_one_process(toys, tmp_path):
    data = make_images(tmp_path / "data", 7)
    single = tmp_path / "single"
    run_eval(config(data, single, cycles=2, batch_size=8))
    batch_one = tmp_path / "b1"
    run_eval(config(data, batch_one, cycles=2, batch_size=1))
    assert chain(batch_one, 2) == chain(single, 2) and numbers(batch_one) == numbers(single)
    from unified_bench.runner.distributed import parse_shard

    shards = [tmp_path / "s0", tmp_path / "s1"]
    for index, shard in enumerate(shards):
        outcome = run_eval(config(data, shard, cycles=2, shard=parse_shard(f"{index}/2"), batch_size=3))
        assert outcome.role == "shard" and len(outcome.cycles) == 2
    merged = tmp_path / "merged"
    merge_shards(shards, merged, config(data, merged))
    assert chain(merged, 2) == chain(single, 2)
    assert numbers(merged) == numbers(single) and csv_rows(merged) == csv_rows(single)
    assert read_captions(merged / "cycles" / "2")["img03"]["reference"] == "../../images/img03.png"
    assert not (merged / "cycles" / "2" / "refs").exists()  # later cycles' inputs are not copied


@pytest.mark.slow
def test_sigkill_in_cycle_two_then_resume_equals_uninterrupted(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    common = ["eval", "--model", "mock", "--data", str(data), "--metrics", "toy-pair,toy-embed", "--cycles", "3",
              "--model-arg", "size=32", "--model-arg", "slow_ms=200", "--seed", "4", "--no-progress", "--no-cache"]
    reference = tmp_path / "reference"  # the same command, uninterrupted, in its own process like the killed one
    run_cli([*common, "--out", str(reference)], tmp_path, timeout=300)
    out = tmp_path / "killed"
    proc = start([*common, "--out", str(out)], tmp_path)
    second = out / "cycles" / "2"
    import os
    import signal
    import time

    deadline = time.monotonic() + 120
    while finished_lines(second) < 2:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "cycle 2 did not start"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # the process this test started, by its id
    proc.wait(timeout=30)
    assert 2 <= finished_lines(second) < 6 and not (out / "results.json").exists()
    run_cli([*common, "--out", str(out), "--resume", "--batch-size", "4"], tmp_path, timeout=300)
    infos = [json.loads((cycle_dir(out, k) / "run.json").read_text()) for k in (1, 2, 3)]
    assert infos[0]["processed_this_session"] == 0 and 0 < infos[1]["processed_this_session"] <= 4
    assert chain(out, 3) == chain(reference, 3)
    assert numbers(out) == numbers(reference) and csv_rows(out) == csv_rows(reference)


# --- the text trip ---------------------------------------------------------------------------


def test_text_trip_runs_prompt_image_caption_and_chains_captions(toys, tmp_path, monkeypatch):
    trip_datasets.register(monkeypatch)
    out = tmp_path / "text"
    outcome = run_eval(config("colour-prompts", out, trip="text", cycles=2, score=False, data_args={"blank": "p2"}))
    assert [o.finished for o in outcome.cycles] == [5, 5]
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [("p2", trip_datasets.BLANK_STAGE)]
    assert "empty or only white space" in outcome.errors[0].message
    first, second = read_captions(out), read_captions(out / "cycles" / "2")
    assert first["p0"]["prompt"].startswith("a calm picture; quadrant colours")
    assert first["p0"]["reference"] == "" and (out / "images" / "p0.png").is_file()  # the drawing
    assert first["p0"]["seed"] == trip_seed(4, "p0", "text", 1) != seed_for(4, "p0")
    assert second["p0"]["prompt"] == first["p0"]["caption"]  # cycle 2 draws cycle 1's caption
    assert second["p0"]["seed"] == trip_seed(4, "p0", "text", 2)
    assert RunStore(out / "cycles" / "2").read_state().errors["p2"].stage == "previous"
    info = json.loads((out / "run.json").read_text())
    assert info["trip"] == "text" and info["cycles"] == 2
    # the mock draws the colours it is told and reads them back (up to its pixel noise)
    assert first["p0"]["caption"].split(";")[1].split()[2] != ""


def test_text_trip_refuses_a_dataset_without_prompts_and_the_image_trip_one_without_images(toys, tmp_path, monkeypatch):
    trip_datasets.register(monkeypatch)
    data = make_images(tmp_path / "data", 2)
    with pytest.raises(ConfigError, match="no prompts"):
        run_eval(config(data, tmp_path / "a", trip="text"))
    with pytest.raises(ConfigError, match="no images.*--trip text"):
        run_eval(config("colour-prompts", tmp_path / "b"))
    for bad in (dict(trip="both"), dict(cycles=0), dict(cycles=2, captions_from=tmp_path)):
        with pytest.raises(ConfigError):
            run_eval(config(data, tmp_path / "c", **bad))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    # one sample without a prompt (or, on the image trip, without an image) fails alone
    outcome = run_eval(config("shapes-prompted", tmp_path / "d", trip="text", score=False,
                              data_args={"n": "3", "no_prompt": "shapes-test-00001"}))
    assert outcome.finished == 2 and [(e.sample_id, e.stage) for e in outcome.errors] == [("shapes-test-00001", "prompt")]
    assert "has no prompt" in outcome.errors[0].message


def test_text_trip_empty_caption_in_cycle_two_is_a_per_sample_error(toys, tmp_path, monkeypatch):
    trip_datasets.register(monkeypatch)

    class EmptyInCycleTwo(MockAdapter):
        def caption(self, images, *, prompt, seeds, sample_ids=None):
            bad = trip_seed(4, "p1", "text", 2)
            return ["" if seed == bad else c for seed, c in zip(seeds, super().caption(images, prompt=prompt, seeds=seeds))]

    out = tmp_path / "run"
    outcome = run_eval(config("colour-prompts", out, trip="text", cycles=3, score=False, batch_size=4),
                       adapter=EmptyInCycleTwo(MockConfig(size=32)))
    assert [o.finished for o in outcome.cycles] == [6, 5, 5]
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [("p1", "caption")]
    assert RunStore(out / "cycles" / "3").read_state().errors["p1"].stage == "previous"


def test_text_trip_resume_redoes_a_later_cycle_whose_prompt_changed(toys, tmp_path, monkeypatch):
    trip_datasets.register(monkeypatch)
    out, whole = tmp_path / "run", tmp_path / "whole"
    run_eval(config("colour-prompts", whole, trip="text", cycles=2, score=False))
    run_eval(config("colour-prompts", out, trip="text", cycles=2, score=False, batch_size=4))
    assert chain(out, 2, scored=False) == chain(whole, 2, scored=False)
    # cycle 1's caption of p3 edited by hand: healed there (regenerated), and cycle 2 follows
    lines = (out / "captions.jsonl").read_text().splitlines()
    edited = [json.dumps({**json.loads(x), "caption": "edited"}) if '"p3"' in x else x for x in lines]
    (out / "captions.jsonl").write_text("\n".join(edited) + "\n")
    outcome = run_eval(config("colour-prompts", out, trip="text", cycles=2, score=False, resume=True))
    assert outcome.healed == ["p3"] and chain(out, 2, scored=False) == chain(whole, 2, scored=False)


@pytest.mark.slow
def test_text_trip_of_the_shapes_oracle_gives_back_its_prompt_every_cycle(toys, tmp_path, monkeypatch):
    """Acceptance 2 (text trip, run loop): the oracle draws the scene its long caption states
    and describes it again, cycle after cycle."""
    trip_datasets.register(monkeypatch)
    out = tmp_path / "text"
    outcome = run_eval(EvalConfig(model="shapes-oracle", data="shapes-prompted", out=out, data_args={"n": "12"},
                                  trip="text", cycles=3, batch_size=12, progress=False, score=TEXT_SCORING))
    assert [o.finished for o in outcome.cycles] == [12, 12, 12]
    for k in (1, 2, 3):
        rows = read_captions(cycle_dir(out, k))
        assert sum(row["caption"] == row["prompt"] for row in rows.values()) >= 11, k
    first = read_captions(out)
    assert first["shapes-test-00000"]["reference"] == "refs/shapes-test-00000.png"  # the scene's render, for @image
    if TEXT_SCORING:
        results = load_results(out)
        assert results["trip"] == "text" and len(results["cycles"]) == 3
        for cycle in results["cycles"]:
            assert cycle["statistics_by_model"]["shapes-attr"]["average_similarity"] >= 0.99


@pytest.mark.slow
def test_image_trip_of_the_shapes_oracle_keeps_every_attribute_over_three_cycles(tmp_path):
    """Acceptance 2 (image trip): every cycle's shapes-attr >= 0.99; cycle 1 is the plain run."""
    common = dict(model="shapes-oracle", data="shapes", data_args={"size": "128"}, limit=12, batch_size=12,
                  metrics=["shapes-attr"], progress=False)
    run_eval(EvalConfig(out=tmp_path / "plain", **common))
    run_eval(EvalConfig(out=tmp_path / "three", cycles=3, **common))
    three = load_results(tmp_path / "three")
    assert three["trip"] == "image" and [c["cycle"] for c in three["cycles"]] == [1, 2, 3]
    for cycle in three["cycles"]:
        assert cycle["statistics_by_model"]["shapes-attr"]["average_similarity"] >= 0.99
    plain = load_results(tmp_path / "plain")
    assert {k: plain[k] for k in OFFICIAL} == {k: three[k] for k in OFFICIAL}


@pytest.mark.slow
def test_acceptance_shapes_text_trip_oracle_and_blank(tmp_path):
    """Acceptance 1: the Shapes text trip, 200 scenes, offline: the long-caption oracle keeps
    every attribute, the blank model none. Needs the Shapes prompts and the text scoring."""
    from unified_bench.datasets.registry import DATASETS

    if "detail" not in (DATASETS["shapes"].options or ()) or not TEXT_SCORING:
        pytest.skip("needs --data shapes --data-arg detail=... and the text scoring engine")
    for model, args, check in (("shapes-oracle", {"detail": "long"}, lambda v: v >= 0.99), ("blank", {}, lambda v: v <= 0.10)):
        out = tmp_path / model
        run_eval(EvalConfig(model=model, model_args=args, data="shapes", data_args={"detail": "long"}, trip="text",
                            limit=200, batch_size=64, out=out, progress=False))
        value = load_results(out)["statistics_by_model"]["shapes-attr"]["average_similarity"]
        assert check(value), (model, value)


def test_cli_flags_dry_run_and_rescoring_a_run_directory(tmp_path):
    data = make_images(tmp_path / "data", 3)
    common = ["--model", "mock", "--data", str(data), "--metrics", "toy-pair", "--model-arg", "size=32", "--no-progress"]
    plan = run_cli(["eval", *common, "--out", str(tmp_path / "plan"), "--cycles", "3", "--dry-run"], tmp_path)
    assert "image, 3 cycle(s)" in plan.stdout and "over 3 cycles" in plan.stdout and not (tmp_path / "plan").exists()
    bad = run_cli(["eval", *common, "--out", str(tmp_path / "bad"), "--trip", "sideways"], tmp_path, check_codes=(2,))
    assert "--trip must be one of image, text" in bad.stderr
    out = tmp_path / "run"
    run_cli(["eval", *common, "--out", str(out), "--cycles", "2"], tmp_path)
    before = numbers(out)
    (out / "results.json").unlink()
    run_cli(["score", str(out)], tmp_path)
    assert numbers(out) == before
    run_cli(["score", str(out), "--metrics", "toy-embed"], tmp_path)
    assert list(numbers(out)["cycles"][1]["similarities_by_model"]) == ["toy-embed"]


def test_schema_holds_trip_cycles_and_curves_together(toys, tmp_path):
    from unified_bench.core.errors import ResultsValidationError
    from unified_bench.results.io import validate_results

    data = make_images(tmp_path / "data", 3)
    run_eval(config(data, tmp_path / "run", cycles=2))
    results = load_results(tmp_path / "run")
    for key in ("cycles", "cycle_curves"):
        with pytest.raises(ResultsValidationError):
            validate_results({k: v for k, v in results.items() if k != key})
    broken = json.loads(json.dumps(results))
    broken["cycles"][1]["vs_previous"]["statistics_by_model"]["toy-pair"].pop("valid_pairs")
    with pytest.raises(ResultsValidationError, match="cycles/1/vs_previous"):
        validate_results(broken)


def test_text_trip_shards_merge_to_the_single_process_run(toys, tmp_path, monkeypatch):
    from unified_bench.runner.distributed import parse_shard

    trip_datasets.register(monkeypatch)
    common = dict(trip="text", cycles=2, score=False, data_args={"n": "5"})
    single = tmp_path / "single"
    run_eval(config("shapes-prompted", single, **common))
    shards = [tmp_path / "s0", tmp_path / "s1"]
    for index, shard in enumerate(shards):
        run_eval(config("shapes-prompted", shard, shard=parse_shard(f"{index}/2"), batch_size=2, **common))
    merged = tmp_path / "merged"
    merge_shards(shards, merged, config("shapes-prompted", merged, score=False))
    assert chain(merged, 2, scored=False) == chain(single, 2, scored=False)
    assert read_captions(merged)["shapes-test-00001"]["reference"] == "refs/shapes-test-00001.png"
    assert json.loads((merged / "run.json").read_text())["trip"] == "text"


@pytest.mark.slow
def test_torchrun_two_processes_run_every_cycle_and_merge_to_one_process(tmp_path, monkeypatch):
    from runner_helpers import torchrun_eval

    data = make_images(tmp_path / "data", 5)
    common = ["--model", "mock", "--data", str(data), "--metrics", "toy-pair,toy-embed", "--model-arg", "size=32",
              "--seed", "5", "--no-progress", "--batch-size", "2", "--cycles", "2"]
    launched = torchrun_eval([*common, "--out", str(tmp_path / "dist")], tmp_path)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    for name in ("shard-00000-of-00002", "shard-00001-of-00002"):  # both ranks ran both cycles
        assert read_captions(tmp_path / "dist" / "shards" / name / "cycles" / "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the ranks: the toy embedding's sums depend on threads
    run_cli(["eval", *common, "--out", str(tmp_path / "single")], tmp_path)
    assert chain(tmp_path / "dist", 2) == chain(tmp_path / "single", 2)
    assert numbers(tmp_path / "dist") == numbers(tmp_path / "single")


def test_compare_pairs_any_cycle_and_the_drop_of_two_runs(toys, tmp_path):
    """``compare --cycle K [--versus previous]`` and ``--drop`` pair two runs' later cycles
    sample by sample; the differences are the ones computed here from results.json."""
    data = make_images(tmp_path / "data", 6)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_eval(config(data, a, cycles=3, seed=4)).ok and run_eval(config(data, b, cycles=3, seed=5)).ok
    ra, rb = load_results(a), load_results(b)

    def block(results, cycle, versus):
        entry = results["cycles"][cycle - 1]
        return (entry if versus == "original" else entry["vs_previous"])["similarities_by_model"]["toy-pair"]

    def compared(*flags):
        out = run_cli(["compare", str(a), str(b), "--format", "json", *flags], tmp_path)
        return {d["metric"]: d for d in json.loads(out.stdout)[0]["differences"]}

    for cycle, versus in ((1, "original"), (2, "original"), (3, "previous")):
        first, second = block(ra, cycle, versus), block(rb, cycle, versus)
        expected = sum(second[s] - first[s] for s in first) / len(first)
        got = compared("--cycle", str(cycle), "--versus", versus)["toy-pair"]
        assert got["n"] == 6 and got["difference"] == pytest.approx(expected, abs=1e-12)
    assert compared()["toy-pair"]["difference"] == compared("--cycle", "1")["toy-pair"]["difference"]
    drops = [{s: block(r, 1, "original")[s] - block(r, 3, "original")[s] for s in block(r, 1, "original")} for r in (ra, rb)]
    got = compared("--drop")["toy-pair"]
    assert got["difference"] == pytest.approx(sum(drops[1][s] - drops[0][s] for s in drops[0]) / 6, abs=1e-12)
    assert got["a"] == pytest.approx(ra["cycle_curves"]["toy-pair"]["drop"], abs=1e-12)
    # a cycle the runs do not have, and cycle 1 against a previous cycle, are clear errors
    missing = run_cli(["compare", str(a), str(b), "--cycle", "4"], tmp_path, check_codes=(2, 1))
    assert "the run has no cycle 4 (it has 3)" in missing.stderr
    first = run_cli(["compare", str(a), str(b), "--versus", "previous"], tmp_path, check_codes=(2, 1))
    assert "cycle 1 has no previous cycle" in first.stderr
