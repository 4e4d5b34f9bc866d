"""``--name``: the display label is stored in the run record and shown by the leaderboard."""

from __future__ import annotations

import json

import pytest
from runner_helpers import make_images

from unified_bench.cli import main
from unified_bench.leaderboard.entries import model_name
from unified_bench.results import load_results, read_report
from unified_bench.results.record import RunRecord


def test_eval_name_reaches_record_and_leaderboard(toys, tmp_path, capsys):
    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    main(["eval", "--model", "mock", "--model-arg", "size=32", "--data", str(data), "--out", str(out),
          "--metrics", "toy-pair", "--no-progress", "--name", "mock, noisy variant"])
    results = load_results(out)  # validates against the schema
    assert results["run"]["name"] == "mock, noisy variant"
    assert results["run"]["model"]["name"] == "mock"
    assert json.loads((out / "run.json").read_text())["name"] == "mock, noisy variant"
    assert read_report(out).record.name == "mock, noisy variant"
    assert model_name(results["run"]) == "mock, noisy variant"

    from unified_bench.leaderboard import build_site

    site = tmp_path / "site"
    build_site([out], [], site, log=lambda msg: None)
    board = "".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    assert "mock, noisy variant" in board

    # a resumed run keeps its name when --name is not given again
    main(["eval", "--model", "mock", "--model-arg", "size=32", "--data", str(data), "--out", str(out),
          "--metrics", "toy-pair", "--no-progress", "--resume"])
    assert load_results(out)["run"]["name"] == "mock, noisy variant"


def test_unnamed_and_old_records_show_the_model(toys, tmp_path):
    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    main(["eval", "--model", "mock", "--model-arg", "size=32", "--data", str(data), "--out", str(out),
          "--metrics", "toy-pair", "--no-progress"])
    run = load_results(out)["run"]
    assert "name" not in run and "name" not in json.loads((out / "run.json").read_text())
    assert model_name(run) == "mock"
    record = RunRecord.from_dict(run)
    assert record.name is None and record.to_dict() == run  # reading an old record stays lossless


def test_score_name(tmp_path):
    refs = make_images(tmp_path / "refs", 2)
    out = tmp_path / "scored"
    main(["score", "--images", str(refs), "--refs", str(refs), "--out", str(out), "--metrics", "ssim", "--name", "copies"])
    assert load_results(out)["run"]["name"] == "copies"


def test_blank_name_is_a_one_line_error(tmp_path, capsys):
    refs = make_images(tmp_path / "refs", 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--images", str(refs), "--refs", str(refs), "--out", str(tmp_path / "o"), "--metrics", "ssim", "--name", " "])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--name" in err[0]
