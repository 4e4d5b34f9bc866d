"""The published record under leaderboard/entries: every reported entry against the schema and
against itself.

Each entry is read twice: by jsonschema directly (the schema file as shipped) and by the
leaderboard's own loader (which also checks that the printed digits, the numbers and the quoted
row agree). The transcription checks then hold the rows to what a printed table implies: the
keys are the track's, what is not printed is listed as not reported, and an Overall that is not
the mean of its row's four backbone scores is named as a discrepancy, never silently kept or
fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from unified_bench.core.errors import ResultsValidationError
from unified_bench.leaderboard.entries import entry_schema, load_entries, parse_reported
from unified_bench.leaderboard.tracks import get_track

REPO = Path(__file__).resolve().parents[1]
ENTRIES = REPO / "leaderboard" / "entries"
REPORTED = sorted(p for p in ENTRIES.glob("*.json") if "reported" in json.loads(p.read_text(encoding="utf-8")))
#: the four backbones the paper averages into its Overall
PAPER = ("clip", "dinov2", "dinov3", "longclip")
#: entries transcribed from a table: they say which row of which table, as printed
TRANSCRIBED = [p for p in REPORTED if "printed" in json.loads(p.read_text(encoding="utf-8"))["reported"]]


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_record_is_shipped():
    assert len(REPORTED) >= 19 and len(TRANSCRIBED) == len(REPORTED) - 1  # the first (86.09) entry predates 'printed'
    outcome = load_entries([], [ENTRIES])
    assert outcome.rejections == []
    assert {r.source for r in outcome.reported} == {str(p) for p in REPORTED}
    assert len({r.entry_id for r in outcome.reported}) == len(REPORTED)


@pytest.mark.parametrize("path", REPORTED, ids=lambda p: p.stem)
def test_every_reported_entry_matches_the_schema(path):
    raw = _load(path)
    jsonschema.Draft202012Validator(entry_schema()).validate(raw)
    entry = parse_reported(raw, source=str(path), default_id=path.stem)
    track = get_track(entry.track)
    allowed = {"score"} | {col.key for col in track.columns}
    assert set(entry.scores) <= allowed, f"{path.name}: keys outside the track: {set(entry.scores) - allowed}"


@pytest.mark.parametrize("path", TRANSCRIBED, ids=lambda p: p.stem)
def test_transcribed_rows_say_what_they_are(path):
    raw = _load(path)
    entry = parse_reported(raw, source=str(path), default_id=path.stem)
    assert path.name == f"reported-{entry.entry_id.removeprefix('reported:')}.json"
    for name in ("version", "table", "section", "row", "quote", "samples", "read_from"):
        assert getattr(entry, name), f"{path.name}: {name} missing"
    assert entry.quote.startswith(entry.row)
    assert {"images", "caption_prompt", "generation", "seeds", "scoring"} <= set(entry.stated_protocol)
    # absent stays absent, and says so: every track column is either printed or not reported
    track = get_track(entry.track)
    wanted = {"score"} | {col.key for col in track.columns if not col.sub_score}
    assert set(entry.scores) | set(entry.not_reported) == wanted
    # the digits as printed: "90.50" keeps its zero
    assert all(text == entry.shown(key) for key, text in entry.printed.items())


@pytest.mark.parametrize("path", TRANSCRIBED, ids=lambda p: p.stem)
def test_an_overall_that_is_not_its_rows_mean_is_named(path):
    """A transcription check: where a row prints all four backbones and the Overall, the Overall is
    their mean to the printed precision, or the entry lists the discrepancy (and then it is real)."""
    entry = parse_reported(_load(path), source=str(path), default_id=path.stem)
    if not set(PAPER) | {"score"} <= set(entry.scores):
        assert entry.discrepancies == []
        return
    mean = sum(entry.scores[m] for m in PAPER) / len(PAPER)
    off = abs(mean - entry.scores["score"]) > 0.005 + 1e-9
    assert off == bool(entry.discrepancies), (path.name, mean, entry.scores["score"])
    if off:
        assert entry.printed["score"] in entry.discrepancies[0]


def test_the_checks_can_fail():
    raw = _load(ENTRIES / "reported-uae-v5-table2-uae.json")

    def rejected(mutate) -> str:
        data = json.loads(json.dumps(raw))
        mutate(data["reported"])
        with pytest.raises(ResultsValidationError) as err:
            parse_reported(data, source="x.json", default_id="x")
        return str(err.value)

    assert "is not the printed '90.50'" in rejected(lambda r: r["scores"].__setitem__("clip", 90.51))
    assert "does not appear in the quoted row" in rejected(lambda r: r.__setitem__("quote", "UAE 90.5 94.35 81.98 77.54 86.09"))
    assert "are not the keys of 'scores'" in rejected(lambda r: r["printed"].pop("clip"))
    assert "also have scores" in rejected(lambda r: r.__setitem__("not_reported", {"clip": "not printed"}))
    assert "field 'reported/printed/clip'" in rejected(lambda r: r["printed"].__setitem__("clip", "90,50"))
