"""Leaderboard site: tracks, pages, comparisons, untrusted entries, determinism."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from pathlib import Path

import pytest
from leaderboard_runs import (
    EXTENDED,
    PAPER,
    PAYLOAD_NAME,
    REPORTED_ENTRIES,
    make_run,
    make_world,
    paper_protocol,
)
from PIL import Image

from unified_bench.cli import main
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import as_executed
from unified_bench.results.record import RunRecord
from unified_bench.leaderboard import build_site, load_entries
from unified_bench.leaderboard.builder import SITE_MARKER
from unified_bench.leaderboard.tracks import check_protocol, check_run, get_track, tracks_for
from unified_bench.leaderboard.views import script_json, slug
from unified_bench.core.stats import paired_difference_ci

REPO = Path(__file__).resolve().parents[1]


def page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert match, "page has no data block"
    return json.loads(match.group(1))


def model_page(site: Path, name: str, run_id: str) -> str:
    return (site / "models" / f"{slug(name, run_id)}.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Run directories written through the real results path, plus the repo's reported entry."""
    return make_world(tmp_path_factory.mktemp("lb"))


# ---- tracks and tables -----------------------------------------------------------------------


def test_runs_land_on_their_tracks(world):
    result, site = world["result"], world["site"]
    assert result.rejections == [] and result.runs == 7 and result.reported == 1
    ub = (site / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    ext = (site / "tracks" / "unified-bench-extended.html").read_text(encoding="utf-8")
    shapes = (site / "tracks" / "shapes.html").read_text(encoding="utf-8")
    for name in ("zeta", "beta", "mu", "delta"):
        assert f">{name}</a>" in ub
    assert ">zeta</a>" in ext and ">beta</a>" not in ext  # only zeta has siglip
    assert ">shapes-a</a>" in shapes and ">zeta</a>" not in shapes and ">shapes-a</a>" not in ub
    for column in (
        "shapes-attr.shape",
        "shapes-attr.color",
        "shapes-attr.size",
        "shapes-attr.position",
        "shapes-attr.count",
    ):
        assert f">{column}</button>" in shapes
    assert ">effnet</button>" in shapes and ">ssim</button>" not in shapes  # ssim: by name only


def test_track_membership_rules():
    assert [t.slug for t in tracks_for({"dataset": {"name": "official"}}, {"clip", "siglip"})] == [
        "unified-bench",
        "unified-bench-extended",
    ]
    assert [t.slug for t in tracks_for({"dataset": {"name": "official"}}, {"siglip"})] == ["unified-bench-extended"]
    assert [t.slug for t in tracks_for({"dataset": {"name": "shapes"}}, {"effnet", "clip"})] == ["shapes"]
    assert tracks_for({"dataset": {"name": "official"}}, {"psnr"}) == []
    assert [t.slug for t in tracks_for({}, {"shapes-attr"})] == ["shapes"]


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr class="row-(?:reproduced|reported)"[^>]*>.*?</tr>', html, re.S)


def test_table_values_cis_and_missing(world):
    site, runs = world["site"], world["runs"]
    ub = (site / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    rows = {re.search(r'data-sort="([^"]*)" class="model"', r).group(1): r for r in _rows(ub)}
    zeta = json.loads((runs / "zeta" / "results.json").read_text())
    score = zeta["unified_score"]
    assert f"{score['value']:.2f}" in rows["zeta"]
    assert f"[{score['ci95']['low']:.2f}, {score['ci95']['high']:.2f}]" in rows["zeta"]
    clip = zeta["statistics_by_model"]["clip"]["average_similarity"] * 100
    assert f"{clip:.2f}" in rows["zeta"]
    # mu ran two of the four paper metrics: no unified score, two missing cells, sorted last
    mu = rows["mu"]
    assert mu.count('class="missing"') == 3
    order = [re.search(r'data-sort="([^"]*)" class="model"', r).group(1) for r in _rows(ub)]
    assert order[0] == "UAE"  # the reported 86.09 leads the synthetic runs
    assert order[-1] == "mu"
    # the failed clip sample of beta is missing, not zero: the mean is over the other five
    beta = json.loads((runs / "beta" / "results.json").read_text())
    values = [v for v in beta["similarities_by_model"]["clip"].values() if v is not None]
    assert len(values) == 5
    assert f"{sum(values) / 5 * 100:.2f}" in rows["beta"]


def test_reported_row_is_distinct_and_cited(world):
    ub = (world["site"] / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    reported = [r for r in _rows(ub) if 'data-kind="reported"' in r]
    assert len(reported) == 1
    row = reported[0]
    assert 'class="row-reported"' in row and "badge-reported" in row
    assert "86.09" in row and 'href="https://arxiv.org/abs/2509.09666"' in row
    assert "arXiv:2509.09666" in row
    assert "run record" not in row  # nothing reproduced, nothing to link
    reproduced = [r for r in _rows(ub) if 'data-kind="reproduced"' in r]
    assert all("run record</a>" in r for r in reproduced)


def test_protocol_flags(world):
    ub = (world["site"] / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    rows = {re.search(r'data-sort="([^"]*)" class="model"', r).group(1): r for r in _rows(ub)}
    assert 'data-protocol="differs"' in rows["beta"] and "differs from track protocol" in rows["beta"]
    assert "caption.temperature: ran 1.0 (protocol: 0.7)" in rows["beta"]
    assert 'data-protocol="match"' in rows["zeta"]
    assert 'data-protocol="unknown"' in rows["UAE"]


def test_check_protocol_cases():
    track = get_track("unified-bench").protocol()
    assert check_protocol(as_executed(paper_protocol()), track).status == "match"
    # the instruction's whitespace may differ between copies; its words may not
    spaced = paper_protocol(caption_prompt=" ".join(paper_protocol()["caption_prompt"].split()))
    assert check_protocol(as_executed(spaced), track).status == "match"
    reworded = check_protocol(as_executed(paper_protocol(caption_prompt="Describe the image.")), track)
    assert reworded.status == "differs" and reworded.differences[0].startswith("caption.prompt: ran Describe the image.")
    steps = check_protocol(as_executed(paper_protocol(**{"generation.num_inference_steps": 28})), track)
    assert steps.differences == ("generation.num_inference_steps: ran 28 (protocol: 40)",)
    assert check_protocol(as_executed(paper_protocol(**{"caption.do_sample": False})), track).status == "differs"
    assert check_protocol(None, track).status == "unknown"
    partial = as_executed(paper_protocol())
    partial["generation"] = None
    unknown = check_protocol(partial, track)
    assert unknown.status == "unknown" and "generation.width" in unknown.unrecorded
    # settings that changed between calls of one run never pass as the protocol
    varied = {**as_executed(paper_protocol()), "varied": ["generation"]}
    assert check_protocol(varied, track).status == "differs"


def record(protocol=None, executed="as requested", dataset="official"):
    protocol = protocol if protocol is not None else paper_protocol()
    run = {"run_id": "r", "created": "", "command": "", "metrics": [], "package_versions": {}, "protocol": protocol}
    if dataset is not None:
        run["dataset"] = {"name": dataset}
    if executed is not None:
        run["protocol_executed"] = as_executed(protocol) if executed == "as requested" else executed
    return RunRecord.from_dict(run)


def test_dataset_is_part_of_the_check():
    ub, shapes = get_track("unified-bench"), get_track("shapes")
    assert check_run(record(), ub).status == "match"
    other = check_run(record(dataset="photos"), ub)
    assert other.status == "differs" and other.differences == ("dataset: photos (track: official)",)
    assert check_run(record(dataset="shapes"), shapes).status == "match"
    assert check_run(record(dataset=None), ub).unrecorded == ("dataset",)


def test_the_check_reads_what_ran_not_what_was_asked():
    ub = get_track("unified-bench")
    # asked for the paper's settings, ran 20 steps at CFG 1.0: the row is flagged
    ran = as_executed(paper_protocol(**{"generation.num_inference_steps": 20, "generation.guidance_scale": 1.0}))
    check = check_run(record(executed=ran), ub)
    assert check.status == "differs"
    assert check.differences == (
        "generation.num_inference_steps: ran 20 (protocol: 40)",
        "generation.guidance_scale: ran 1.0 (protocol: 5.0)",
    )
    # a version-1 record (requested protocol only) cannot show what ran: never "match"
    old = check_run(record(executed=None), ub)
    assert old.status == "unknown" and "record version 1" in old.unrecorded[0]
    # an adapter that reports nothing is unknown too
    assert check_run(record(executed={"caption": None, "generation": None, "varied": []}), ub).status == "unknown"


@pytest.mark.slow
def test_shipped_uae_tiny_rows_show_what_they_ran(tmp_path):
    """The shipped entries record the executed protocol: the uae-tiny rows and model pages
    show every way the tiny model's round trip differs from the paper's."""
    build_site([], [REPO / "leaderboard" / "entries"], tmp_path / "site")
    shapes = (tmp_path / "site" / "tracks" / "shapes.html").read_text(encoding="utf-8")
    rows = [r for r in _rows(shapes) if re.search(r'data-sort="uae-tiny (pre-rl|g4u|u4g)" class="model"', r)]
    assert len(rows) == 3  # pre-rl, g4u, u4g: the trainer names its stage runs
    for row in rows:
        assert 'data-protocol="differs"' in row
        assert "ran: T=0.7, 64 tok, 48x48, 20 steps, CFG 1.0" in row
        for deviation in (
            "caption.prompt: ran Describe the image.",
            "caption.max_new_tokens: ran 64 (protocol: 512)",
            "generation.width: ran 48 (protocol: 1024)",
            "generation.num_inference_steps: ran 20 (protocol: 40)",
            "generation.guidance_scale: ran 1.0 (protocol: 5.0)",
        ):
            assert deviation in row
    pages = list((tmp_path / "site" / "models").glob("*.html"))
    tiny = [p.read_text(encoding="utf-8") for p in pages if p.name.startswith("uae-tiny-")]
    # each stage has its image-trip and its text-trip run (leaderboard/regenerate_entries.sh)
    assert len(tiny) == 6 and all("generation.num_inference_steps: ran 20 (protocol: 40)" in page for page in tiny)


# ---- model, run record and compare pages -----------------------------------------------------


def test_model_page_gallery_extremes_and_plots(world):
    site, runs = world["site"], world["runs"]
    html = model_page(site, "zeta", "run-zeta")
    for sample in world["refs"]:
        assert f"<code>{sample.stem}</code>" in html
    thumbs = re.findall(r'<img src="\.\./(thumbs/[0-9a-f]{2}/[0-9a-f]{64}\.jpg)"', html)
    assert len(set(thumbs)) == 12  # 6 originals + 6 reconstructions, all distinct
    for rel in thumbs:
        with Image.open(site / rel) as image:
            assert image.format == "JPEG" and max(image.size) <= 192
    assert "word word" in html  # captions from captions.jsonl
    assert html.count("<h4>best</h4>") == 5 and html.count("<h4>worst</h4>") == 5
    data = page_data(html)
    scatter = next(p for p in data["plots"] if p["id"] == "plot-caption-length")
    assert {t["name"] for t in scatter["data"]} == set(EXTENDED)
    captions = [json.loads(line) for line in (runs / "zeta" / "captions.jsonl").read_text().splitlines()]
    assert sorted(scatter["data"][0]["x"]) == sorted(len(c["caption"].split()) for c in captions)


def test_best_and_worst_are_the_extremes(world):
    html = model_page(world["site"], "zeta", "run-zeta")
    data = json.loads((world["runs"] / "zeta" / "results.json").read_text())
    clip = data["similarities_by_model"]["clip"]
    best = max(clip, key=clip.get)
    worst = min(clip, key=clip.get)
    section = html.split("<h3>clip</h3>", 1)[1].split("</section>", 1)[0]
    best_part, worst_part = section.split("<h4>worst</h4>")
    assert re.search(rf"<code>{best}</code> · {clip[best] * 100:.2f}", best_part.split("</figure>")[0])
    assert re.search(rf"<code>{worst}</code> · {clip[worst] * 100:.2f}", worst_part.split("</figure>")[0])


def test_shapes_page_attribute_bars_and_training_curves(world):
    html = model_page(world["site"], "shapes-a", "run-shapes-a")
    plots = {p["id"]: p for p in page_data(html)["plots"]}
    bars = plots["plot-attributes"]["data"][0]
    assert bars["x"] == ["color", "count", "position", "shape", "size"]
    assert plots["plot-training-reward"]["data"][0]["y"] == [0.10, 0.25, None, 0.40]  # nan -> gap
    assert plots["plot-training-caption_length"]["data"][0]["x"] == [0, 10, 20, 30]
    embedded = {p["id"]: p for p in page_data(model_page(world["site"], "shapes-b", "run-shapes-b"))["plots"]}
    assert embedded["plot-training-reward"]["data"][0]["y"] == [0.1, None, 0.3]
    assert 'src="../assets/plotly-' in html


def test_run_record_page_has_provenance(world):
    html = (world["site"] / "runs" / f"{slug('zeta', 'run-zeta')}.html").read_text(encoding="utf-8")
    for needle in (
        "run-zeta",
        "2026-01-02T03:04:05+00:00",
        "unified-bench eval --model zeta",
        "0" * 40,
        "test/clip",
        "abc123",
        "global_seed",
        "Package versions",
        "Hardware",
    ):
        assert needle in html, needle
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html  # adapter arguments shown as text


def test_compare_page_matches_paired_bootstrap(world):
    site, runs = world["site"], world["runs"]
    data = page_data((site / "compare" / "unified-bench.html").read_text(encoding="utf-8"))["compare"]
    labels = [r["label"] for r in data["runs"]]
    assert not any(label.startswith("delta") for label in labels)  # other references: not comparable
    index = {label.split(" (")[0]: i for i, label in enumerate(labels)}
    lo, hi = sorted((index["beta"], index["zeta"]))
    diffs = data["pairs"][f"{lo}-{hi}"]
    first, second = sorted(["beta", "zeta"], key=lambda n: index[n])
    a = json.loads((runs / first / "results.json").read_text())["similarities_by_model"]["clip"]
    b = json.loads((runs / second / "results.json").read_text())["similarities_by_model"]["clip"]
    ids = sorted(a)
    expected = paired_difference_ci([a[i] for i in ids], [b[i] for i in ids])
    k = data["metrics"].index("clip")
    assert diffs[k][0] == pytest.approx(expected.estimate * 100)
    assert diffs[k][1:3] == pytest.approx([expected.low * 100, expected.high * 100])
    assert diffs[k][3] == 5  # beta's failed sample is left out of the pairing


def test_index_lists_tracks_and_no_rejections(world):
    html = (world["site"] / "index.html").read_text(encoding="utf-8")
    assert 'href="tracks/shapes.html"' in html and "Rejected entries (0)" in html
    assert (world["site"] / SITE_MARKER).is_file()


# ---- untrusted input -------------------------------------------------------------------------


def test_injection_payloads_are_text_everywhere(world):
    site = world["site"]
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        assert "<script>window.__pwned" not in html, page
        assert "<img src=x" not in html, page
        assert re.search(r"<[^>]*\bon[a-z]+\s*=", html) is None, page  # no event-handler attribute in any tag
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert tag == '<script type="application/json" id="page-data">' or re.fullmatch(
                r'<script src="(\.\./)?assets/[a-z0-9.-]+\.js">', tag
            ), (page, tag)
    model = model_page(site, PAYLOAD_NAME, "run-evil")
    assert "evil &lt;script&gt;window.__pwned=1;" in model
    assert "&lt;img src=x onerror=" in model


def test_script_json_cannot_close_its_element():
    text = str(script_json({"name": "</script><script>alert(1)</script>", "amp": "a&b", "line": "\u2028"}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"


def _valid(tmp_path: Path, refs, name: str = "ok") -> dict:
    run = make_run(tmp_path / "base" / name, refs, model=name, run_id=f"run-{name}", metrics=PAPER, quality=0.7)
    return json.loads((run / "results.json").read_text())


def _mutate_stats(data):
    data["statistics_by_model"]["clip"]["average_similarity"] = 0.99


def _mutate_unified(data):
    data["unified_score"]["value"] = 99.0


def _mutate_valid_pairs(data):
    data["statistics_by_model"]["clip"]["valid_pairs"] = 3


def _mutate_dup_sample(data):
    data["samples"][1]["sample_id"] = data["samples"][0]["sample_id"]


MALFORMED = {
    "wrong type": (
        lambda d: d["similarities_by_model"]["clip"].__setitem__("000", "0.5"),
        "field 'similarities_by_model/clip/000'",
        "is not of type",
    ),
    "wrong type of protocol": (
        lambda d: d["run"].__setitem__("protocol", "paper"),
        "field 'run/protocol'",
        "is not of type",
    ),
    "missing key": (lambda d: d["run"].pop("run_id"), "field 'run'", "'run_id' is a required property"),
    "missing top-level key": (lambda d: d.pop("samples"), "field '(top level)'", "'samples' is a required property"),
    "NaN": (
        lambda d: d["similarities_by_model"]["clip"].__setitem__("000", float("nan")),
        "field 'similarities_by_model/clip/000'",
        "non-finite",
    ),
    "inf": (
        lambda d: d["confidence_intervals"]["clip"].__setitem__("high", float("inf")),
        "field 'confidence_intervals/clip/high'",
        "non-finite",
    ),
    "tampered mean": (_mutate_stats, "field 'statistics_by_model/clip/average_similarity'", "is not the mean"),
    "tampered unified score": (_mutate_unified, "field 'unified_score/value'", "is not the mean"),
    "tampered valid pairs": (_mutate_valid_pairs, "field 'statistics_by_model/clip/valid_pairs'", "finite per-sample"),
    "duplicate sample id": (_mutate_dup_sample, "field 'samples/1/sample_id'", "duplicate sample id"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_results_are_rejected_naming_file_and_field(tmp_path, world, case):
    mutate, field, phrase = MALFORMED[case]
    data = _valid(tmp_path, world["refs"])
    mutate(data)
    entries = tmp_path / "entries"
    entries.mkdir()
    bad = entries / "bad-entry.json"
    bad.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    good = tmp_path / "base" / "ok"
    outcome = load_entries([good], [entries])
    assert [e.run_id for e in outcome.runs] == ["run-ok"]  # the build goes on without the bad one
    assert len(outcome.rejections) == 1
    rejection = outcome.rejections[0]
    assert rejection.source == str(bad)
    assert str(bad) in rejection.message and field in rejection.message and phrase in rejection.message


REPORTED_OK = {
    "entry_version": 1,
    "track": "unified-bench",
    "model": {"name": "some model"},
    "reported": {"citation": "A paper", "url": "https://example.org/paper", "scale": 100, "scores": {"score": 50.0}},
}

REPORTED_BAD = {
    "javascript url": (lambda d: d["reported"].__setitem__("url", "javascript:alert(1)"), "field 'reported/url'"),
    "missing citation": (lambda d: d["reported"].pop("citation"), "'citation' is a required property"),
    "string score": (lambda d: d["reported"]["scores"].__setitem__("score", "50"), "field 'reported/scores/score'"),
    "unknown track": (lambda d: d.__setitem__("track", "imagenet"), "field 'track'"),
    "NaN score": (lambda d: d["reported"]["scores"].__setitem__("clip", float("nan")), "field 'reported/scores/clip'"),
}


@pytest.mark.parametrize("case", sorted(REPORTED_BAD))
def test_malformed_reported_entries_are_rejected(tmp_path, case):
    mutate, field = REPORTED_BAD[case]
    data = json.loads(json.dumps(REPORTED_OK))
    mutate(data)
    (tmp_path / "good.json").write_text(json.dumps(REPORTED_OK), encoding="utf-8")
    (tmp_path / "bad.json").write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    outcome = load_entries([], [tmp_path])
    assert [r.model_name for r in outcome.reported] == ["some model"]
    assert [r.source for r in outcome.rejections] == [str(tmp_path / "bad.json")]
    assert field in outcome.rejections[0].message


def test_not_json_is_rejected(tmp_path):
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    outcome = load_entries([], [tmp_path])
    assert "not valid JSON" in outcome.rejections[0].message and "broken.json" in outcome.rejections[0].message


def test_duplicate_run_ids_appear_once(tmp_path, world):
    data = _valid(tmp_path, world["refs"], name="dup")
    entries = tmp_path / "entries"
    entries.mkdir()
    (entries / "copy.json").write_text(json.dumps(data), encoding="utf-8")
    data["statistics_by_model"]["clip"]["min_similarity"] = 0.0  # same id, different content
    (entries / "conflict.json").write_text(json.dumps(data), encoding="utf-8")
    outcome = load_entries([tmp_path / "base" / "dup"], [entries])
    assert [e.run_id for e in outcome.runs] == ["run-dup"]
    assert outcome.runs[0].source.endswith(str(Path("dup") / "results.json"))  # the run directory wins
    assert any("copy.json: same run as" in n for n in outcome.notices)
    assert [r.source for r in outcome.rejections] == [str(entries / "conflict.json")]
    assert "field 'run/run_id'" in outcome.rejections[0].message


def test_cli_lists_rejections_and_strict_exit(tmp_path, world, capsys):
    data = _valid(tmp_path, world["refs"])
    data["similarities_by_model"]["clip"]["000"] = "high"
    entries = tmp_path / "entries"
    entries.mkdir()
    (entries / "wrong.json").write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "site"
    main(["leaderboard", "--runs", str(tmp_path / "base"), "--entries", str(entries), "--out", str(out)])
    captured = capsys.readouterr()
    assert (
        "rejected" in captured.err and "wrong.json" in captured.err and "similarities_by_model/clip/000" in captured.err
    )
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "Rejected entries (1)" in index and "wrong.json" in index
    with pytest.raises(SystemExit) as exit_:
        main(
            ["leaderboard", "--runs", str(tmp_path / "base"), "--entries", str(entries), "--out", str(out), "--strict"]
        )
    assert exit_.value.code == 1
    assert (out / "index.html").is_file()  # still built


def test_images_are_read_only_from_the_run_directory(tmp_path, world):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(secret)
    run = make_run(tmp_path / "run", world["refs"][:2], model="m", run_id="run-m", metrics=PAPER)
    data = json.loads((run / "results.json").read_text())
    (run / "images" / "000.png").unlink()
    data["samples"][0]["reconstruction"] = str(secret)  # outside the run directory
    data["samples"][1]["reference"] = str(secret)  # hash does not match the recorded one
    (run / "results.json").write_text(json.dumps(data), encoding="utf-8")
    outcome = load_entries([run])
    first, second = outcome.runs[0].samples
    assert first.reconstruction_file is None and first.reference_file is not None
    assert second.reference_file is None and second.reconstruction_file is not None
    bad_curve = {"curve_csv": "../../secret.csv"}
    data["run"]["training"] = bad_curve
    (run / "results.json").write_text(json.dumps(data), encoding="utf-8")
    outcome = load_entries([run])
    assert outcome.runs[0].curve is None and any("curve_csv" in w for w in outcome.runs[0].warnings)


def test_bad_caption_lines_are_warnings(tmp_path, world):
    run = make_run(tmp_path / "run", world["refs"][:2], model="m", run_id="run-m", metrics=PAPER)
    with open(run / "captions.jsonl", "a", encoding="utf-8") as handle:
        handle.write("not json\n[1, 2]\n")
    outcome = load_entries([run])
    assert outcome.rejections == []
    assert [w.split(":")[0] for w in outcome.runs[0].warnings] == ["captions.jsonl line 3", "captions.jsonl line 4"]


def test_refuses_to_replace_a_folder_that_is_not_a_site(tmp_path, world):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="not a leaderboard site"):
        build_site([world["runs"] / "zeta"], [], out)
    assert (out / "thesis.tex").read_text() == "keep me"


# ---- determinism -----------------------------------------------------------------------------


def _digest(site: Path) -> dict[str, str]:
    return {
        str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }


def test_building_twice_is_byte_identical(world, tmp_path):
    first = _digest(world["site"])
    again = tmp_path / "again"
    build_site([world["runs"]], [REPORTED_ENTRIES], again)
    assert _digest(again) == first
    # rebuilding into the same folder replaces it with the same bytes
    build_site([world["runs"]], [REPORTED_ENTRIES], again)
    assert _digest(again) == first
    shutil.rmtree(again)


def test_metric_with_no_valid_sample_is_missing_not_averaged(tmp_path, world):
    run = make_run(
        tmp_path / "runs" / "half",
        world["refs"],
        model="half",
        run_id="run-half",
        metrics=PAPER,
        missing={"dinov3": range(len(world["refs"]))},
    )
    data = json.loads((run / "results.json").read_text())
    assert "dinov3" not in data["statistics_by_model"] and data["unified_score"] is None
    build_site([tmp_path / "runs"], [], tmp_path / "site")
    html = (tmp_path / "site" / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    (row,) = _rows(html)
    cells = re.findall(r"<td data-sort=\"([^\"]*)\"", row)
    # rank, model, provenance, score, clip, dinov2, dinov3, longclip, protocol, samples
    assert cells[0] == ""  # unverified: no rank
    assert cells[3] == "" and cells[6] == ""
    assert all(cells[i] for i in (4, 5, 7))


@pytest.mark.slow
def test_site_from_a_real_eval_run(tmp_path):
    """`unified-bench eval --model mock` on the Shapes set, then `unified-bench leaderboard`."""
    run = tmp_path / "runs" / "mock"
    try:
        main(["eval", "--model", "mock", "--data", "shapes", "--metrics", "shapes-attr,ssim", "--limit", "4",
              "--size", "64", "--out", str(run), "--no-progress"])  # fmt: skip
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "site")])
    data = json.loads((run / "results.json").read_text())
    shapes = (tmp_path / "site" / "tracks" / "shapes.html").read_text(encoding="utf-8")
    (row,) = _rows(shapes)
    f1 = data["statistics_by_model"]["shapes-attr"]["average_similarity"] * 100
    assert f"{f1:.2f}" in row
    # ssim was scored (by name) but is no column of the Shapes track: a blank image wins it
    assert "ssim" in data["statistics_by_model"] and ">ssim</button>" not in shapes
    # what the mock reported running, not what was asked, is checked and shown on the row
    assert "generation.width: ran 64 (protocol: 1024)" in row  # rendered at 64 px: flagged
    assert "generation.num_inference_steps: ran 0 (protocol: 40)" in row
    assert "ran: T=0.0, 0 tok, 64x64, 0 steps, CFG 0.0" in row
    page = model_page(tmp_path / "site", data["run"]["model"]["name"], data["run"]["run_id"])
    assert "generation.width: ran 64 (protocol: 1024)" in page  # the model page lists every deviation
    thumbs = set(re.findall(r'<img src="\.\./(thumbs/[^"]+)"', page))
    assert len(thumbs) == 8  # 4 originals (the runner's refs/) + 4 reconstructions
    captions = [json.loads(line)["caption"] for line in (run / "captions.jsonl").read_text().splitlines()]
    assert all(html.escape(c, quote=False) in page for c in captions)
