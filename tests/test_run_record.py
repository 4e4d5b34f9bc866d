"""The typed run record: every shipped record round-trips, old records load, and what the
record says ran is what the adapter ran (the executed protocol, call by call)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from runner_helpers import make_images

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.errors import ResultsValidationError
from unified_bench.core.protocol import PAPER_PROTOCOL, ExecutedCaption, ExecutedGeneration, ExecutedProtocol
from unified_bench.results import load_results
from unified_bench.results.record import RECORD_VERSION, RunInfo, RunRecord
from unified_bench.runner.eval import EvalConfig, run_eval

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHIPPED_RESULTS = sorted((REPO / "leaderboard" / "entries").rglob("results.json"))
SHIPPED_RUN_JSON = sorted((REPO / "leaderboard" / "entries").rglob("run.json"))


def test_there_are_shipped_records_to_check():
    assert len(SHIPPED_RESULTS) >= 6 and len(SHIPPED_RUN_JSON) >= 6


@pytest.mark.parametrize("path", SHIPPED_RESULTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_results_record_round_trips(path):
    run = json.loads(path.read_text())["run"]
    record = RunRecord.from_dict(run)
    assert record.to_dict() == run  # lossless: nothing dropped, nothing invented
    assert RunRecord.from_dict(record.to_dict()) == record


@pytest.mark.parametrize("path", SHIPPED_RUN_JSON, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_run_json_round_trips(path):
    info = json.loads(path.read_text())
    record = RunInfo.from_dict(info)
    assert record.to_dict() == info
    assert RunInfo.from_dict(record.to_dict()) == record


def test_a_version_1_record_loads_and_says_it_cannot_show_what_ran():
    """Written before executed settings were recorded (the shipped entries of 2026-11)."""
    old = json.loads((DATA / "run_record_v1.json").read_text())
    record = RunRecord.from_dict(old)
    assert record.version == 1 and record.executed() is None
    assert record.to_dict() == old  # no record_version key invented on the way back
    assert record.model is not None and record.model.adapter is not None and record.model.adapter.name == "blank"
    assert record.metric("effnet") is not None and record.metric("effnet").revision.startswith("sha256:")
    info = RunInfo.from_dict(json.loads((DATA / "run_json_v1.json").read_text()))
    assert info.executed_protocol() == ExecutedProtocol()  # nothing reported
    assert info.identity()["model"] == "blank"


def test_unknown_keys_survive_and_malformed_parts_are_named():
    run = {"run_id": "x", "created": "", "command": "", "metrics": [], "package_versions": {}, "future_field": [1, 2]}
    run["model"] = {"name": "m", "args": {}, "adapter": {"name": "a", "colour": "blue"}}
    record = RunRecord.from_dict(run)
    assert record.extra == {"future_field": [1, 2]} and record.model.adapter.extra == {"colour": "blue"}
    assert record.to_dict() == run
    with pytest.raises(ResultsValidationError, match=r"run\.model\.adapter: expected an object, got str"):
        RunRecord.from_dict({**run, "model": {"name": "m", "adapter": "synthetic"}})
    with pytest.raises(ResultsValidationError, match=r"run\.metrics\[0\]: expected an object"):
        RunRecord.from_dict({**run, "metrics": ["clip"]})


class _Drifting(Adapter):
    """Keeps a log of the settings each call really used and reports them like a real adapter
    (the settings of its last call); its step count grows after every generate call, as an
    adapter with a warm-up schedule might."""

    name = "drifting"
    capabilities = Capabilities(max_batch_size=2, native_resolution=(16, 16))
    growth = 1

    def __init__(self) -> None:
        self.steps = 4
        self.last: ExecutedGeneration | None = None
        self.used: list[tuple[str, object]] = []

    def caption(self, images, *, prompt, seeds, sample_ids=None):
        self.used.append(("caption", ExecutedCaption(prompt=prompt, do_sample=False, temperature=0.0, max_new_tokens=8)))
        return [f"red {sid}" for sid in sample_ids]

    def generate(self, prompts, *, seeds, size, sample_ids=None):
        self.last = ExecutedGeneration(width=size[0], height=size[1], num_inference_steps=self.steps, guidance_scale=1.0)
        self.used.append(("generation", self.last))
        self.steps += self.growth
        return [Image.new("RGB", size, (200, 40, 40)) for _ in prompts]

    def caption_settings(self, prompt):
        return ExecutedCaption(prompt=prompt, do_sample=False, temperature=0.0, max_new_tokens=8)

    def generation_settings(self, size):
        return self.last


class _Steady(_Drifting):
    name = "steady"
    growth = 0


def _eval(tmp_path, adapter, n=4):
    data = make_images(tmp_path / "data", n)
    out = tmp_path / adapter.name
    config = EvalConfig(model=adapter.name, data=str(data), out=out, metrics=["toy-pair"], batch_size=2, progress=False)
    assert run_eval(config, adapter=adapter).ok
    return load_results(out)["run"], json.loads((out / "run.json").read_text())


def test_the_record_states_what_the_adapter_ran(toys, tmp_path):
    adapter = _Steady()
    run, info = _eval(tmp_path, adapter)
    assert all(s == adapter.used[0][1] for stage, s in adapter.used if stage == "caption")
    assert [s.num_inference_steps for stage, s in adapter.used if stage == "generation"] == [4, 4]
    assert adapter.used[0][1].prompt == PAPER_PROTOCOL.caption_prompt
    executed = RunRecord.from_dict(run).executed()
    assert executed == ExecutedProtocol(adapter.used[0][1], adapter.used[1][1])
    assert run["protocol_executed"] == info["executed"] and run["record_version"] == RECORD_VERSION
    # the requested protocol is kept beside it, unchanged
    assert run["protocol"]["generation"]["num_inference_steps"] == 40


def test_settings_that_change_between_calls_are_recorded_as_varied(toys, tmp_path):
    adapter = _Drifting()
    run, _ = _eval(tmp_path, adapter)
    steps = [s.num_inference_steps for stage, s in adapter.used if stage == "generation"]
    assert steps == [4, 5]  # two batches of two, one more step the second time
    executed = RunRecord.from_dict(run).executed()
    assert executed.varied == ("generation",) and executed.generation.num_inference_steps == 4


@pytest.mark.parametrize("path", SHIPPED_RESULTS, ids=lambda p: str(p.relative_to(REPO)))
def test_score_report_reads_back_the_results_it_wrote(path):
    from unified_bench.results import read_report

    data = load_results(path)
    report = read_report(path)
    assert report.to_results_json() == data  # statistics, CIs and composites recomputed equal
    assert report.record == RunRecord.from_dict(data["run"])


class _BadReports(_Steady):
    """Third-party reports gone wrong: one raises, one has a string where a size goes."""

    name = "bad-reports"

    def caption_settings(self, prompt):
        raise RuntimeError("no idea")

    def generation_settings(self, size):
        return ExecutedGeneration(width="1024", height=1024)


def test_a_broken_settings_report_is_not_reported_and_never_fails_the_run(toys, tmp_path, capsys):
    run, info = _eval(tmp_path, _BadReports())  # the run and its scoring succeed
    assert run["protocol_executed"] == {"caption": None, "generation": None, "varied": []}
    assert info["executed"] == run["protocol_executed"]
    from unified_bench.leaderboard.tracks import check_run, get_track

    check = check_run(RunRecord.from_dict(run), get_track("unified-bench"))
    assert check.status != "match" and any("not reported" in u for u in check.unrecorded)
    err = capsys.readouterr().err
    assert "caption settings report raised RuntimeError: no idea" in err
    assert "generation settings report width is '1024', expected int" in err
