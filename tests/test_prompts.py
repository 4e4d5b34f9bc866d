"""Prompt datasets of the text trip: prompt files (.txt, .jsonl), their bad lines, the bundled
set (size, categories, pinned hash, lengths, card), and the Shapes prompts (the oracle
captioner's caption; the image trip unchanged). Every file here is a real file on disk."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from unified_bench.core.errors import DatasetError, ImageLoadError
from unified_bench.datasets.base import EvalDataset, Sample, encode_reference
from unified_bench.datasets.prompts import (
    BUNDLED_FILE,
    CATEGORIES,
    PROMPT_DEFAULT_METRICS,
    clip_tokens,
    load_bundled_prompts,
    load_prompt_file,
    render_card,
)
from unified_bench.datasets.registry import REGISTRY, load_eval_dataset

REPO = Path(__file__).resolve().parents[1]
#: SHA-256 of unified_bench/datasets/unified-prompts-v1.jsonl. A change here is a new version of
#: the set: published text-trip numbers no longer compare. Ship it as a new file instead.
BUNDLED_SHA256 = "302b562a32a58434272863cba19e25cc0af4b673604811603c815aa8025843a5"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def by_id(dataset: EvalDataset) -> dict[str, Sample]:
    return {s.sample_id: s for s in dataset.samples}


# --- .txt -------------------------------------------------------------------------------------


def test_txt_one_prompt_a_line_with_ids_from_line_numbers(tmp_path):
    # a byte-order mark, CRLF line ends and no final newline are all read as plain lines
    path = write(tmp_path, "mine.txt", b"\xef\xbb\xbfa red cube\r\n  two cats, asleep  \nA sign that says \"HI\"")
    dataset = load_eval_dataset(f"prompts:{path}")
    assert [(s.sample_id, s.prompt) for s in dataset.samples] == [
        ("p0001", "a red cube"), ("p0002", "  two cats, asleep  "), ("p0003", 'A sign that says "HI"'),
    ]
    assert all(s.problem is None and s.image is None and s.reference is None and s.meta is None for s in dataset.samples)
    assert dataset.name == "prompts:mine.txt"
    assert dataset.default_metrics == PROMPT_DEFAULT_METRICS == ("clip-text", "longclip-text", "siglip-text", "clip-t2i")
    assert dataset.source == {"kind": "prompts", "format": "txt", "path": str(path.resolve()),
                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_txt_ids_are_stable_and_sort_in_line_order(tmp_path):
    lines = [f"prompt number {i}" for i in range(1, 10_001)]
    dataset = load_prompt_file(write(tmp_path, "many.txt", "\n".join(lines) + "\n"))
    ids = [s.sample_id for s in dataset.samples]
    assert ids[:2] == ["p00001", "p00002"] and ids[-1] == "p10000"  # one width for the whole file
    assert [s.prompt for s in dataset.samples] == lines
    assert [s.sample_id for s in dataset.limited(3).samples] == ["p00001", "p00002", "p00003"]


def test_txt_bad_lines_are_per_sample_problems_in_their_place(tmp_path):
    path = write(tmp_path, "bad.txt", b"a cat\n\n   \t\ncaf\xe9 au lait\na dog\n")
    dataset = load_prompt_file(path)
    samples = by_id(dataset)
    assert list(samples) == ["p0001", "p0002", "p0003", "p0004", "p0005"]
    assert samples["p0001"].prompt == "a cat" and samples["p0005"].prompt == "a dog"
    assert samples["p0002"].problem == "bad.txt line 2: empty prompt; write the prompt or delete the line"
    assert samples["p0003"].problem == "bad.txt line 3: whitespace-only prompt; write the prompt or delete the line"
    assert samples["p0004"].problem == "bad.txt line 4: not valid UTF-8 (byte 0xe9 at byte 4); save the file as UTF-8"
    assert all(samples[i].prompt is None for i in ("p0002", "p0003", "p0004"))
    # a bad sample keeps its place: --limit and shards see the same ids as for a good file
    assert [s.sample_id for s in dataset.limited(3).samples] == ["p0001", "p0002", "p0003"]


# --- .jsonl -----------------------------------------------------------------------------------


def test_jsonl_ids_made_safe_and_other_keys_kept_as_meta(tmp_path):
    path = write(tmp_path, "set.jsonl", jsonl(
        {"id": "cat/on mat", "prompt": "a cat on a mat", "category": "object", "tags": ["animal"]},
        "",  # blank lines hold no sample
        {"id": 10, "prompt": "ten apples"},
        {"id": "2", "prompt": "two pears", "count": 2},
    ))
    dataset = load_eval_dataset(f"prompts:{path}")
    assert [s.sample_id for s in dataset.samples] == ["2", "10", "cat_on_mat"]  # natural id order
    samples = by_id(dataset)
    assert samples["cat_on_mat"].prompt == "a cat on a mat"
    assert samples["cat_on_mat"].meta == {"category": "object", "tags": ["animal"]}
    assert samples["10"].meta is None and samples["2"].meta == {"count": 2}
    assert dataset.name == "prompts:set.jsonl" and dataset.source["format"] == "jsonl"


def test_jsonl_bad_prompts_are_per_sample_problems(tmp_path):
    raw = jsonl(
        {"id": "ok", "prompt": "a red cube"},
        {"id": "empty", "prompt": ""},
        {"id": "blank", "prompt": " \n\t", "category": "object"},
        {"id": "missing", "text": "a cat"},
        {"id": "number", "prompt": 42},
        {"id": "null", "prompt": None},
        {"id": "long", "prompt": "word " * 400},  # longer than any text tower: not a problem here
    ).encode() + b'{"id": "latin1", "prompt": "caf\xe9"}\n'
    samples = by_id(load_prompt_file(write(tmp_path, "p.jsonl", raw)))
    assert samples["ok"].problem is None and samples["long"].problem is None
    assert samples["empty"].problem == "p.jsonl line 2: empty prompt; write the prompt or delete the line"
    assert samples["blank"].problem == "p.jsonl line 3: whitespace-only prompt; write the prompt or delete the line"
    assert samples["blank"].meta == {"category": "object"}  # a bad sample keeps its meta
    assert samples["missing"].problem == 'p.jsonl line 4: no "prompt" (keys: id, text); give each line a "prompt" string'
    assert samples["number"].problem == 'p.jsonl line 5: "prompt" is a number, not text; write the prompt as a JSON string'
    assert samples["null"].problem == 'p.jsonl line 6: "prompt" is null, not text; write the prompt as a JSON string'
    assert samples["latin1"].problem == "p.jsonl line 8: not valid UTF-8 (byte 0xe9 at byte 32); save the file as UTF-8"
    assert all(samples[i].prompt is None for i in ("empty", "blank", "missing", "number", "null", "latin1"))


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "a", "prompt": "x",}', r"f\.jsonl line 2: not valid JSON \(.+ at column 2[67]\); each line must be one object such as \{\"id\""),
    ('["a", "b"]', r'f\.jsonl line 2: a list where an object with "id" and "prompt" was expected'),
    ('"just text"', r'f\.jsonl line 2: a string where an object'),
    ('{"prompt": "no id"}', r'f\.jsonl line 2: no "id"; every line needs an "id" \(text or an integer\)'),
    ('{"id": null, "prompt": "x"}', r'f\.jsonl line 2: "id" is null; every line needs an "id"'),
    ('{"id": 1.5, "prompt": "x"}', r'f\.jsonl line 2: "id" is a number; every line needs an "id"'),
    ('{"id": true, "prompt": "x"}', r'f\.jsonl line 2: "id" is a boolean; every line needs an "id"'),
    ('{"id": "  ", "prompt": "x"}', r'f\.jsonl line 2: "id" is blank; every line needs an "id"'),
])
def test_jsonl_lines_without_a_usable_id_are_per_sample_problems_under_their_line(tmp_path, line, message):
    path = write(tmp_path, "f.jsonl", jsonl({"id": "fine", "prompt": "a cat"}, line))
    samples = {s.sample_id: s for s in load_prompt_file(path).samples}
    assert set(samples) == {"fine", "line-2"} and samples["fine"].problem is None
    assert samples["line-2"].prompt is None and re.match(message, samples["line-2"].problem)


def test_jsonl_malformed_line_that_is_also_not_utf8_says_both(tmp_path):
    path = write(tmp_path, "f.jsonl", b'{"id": "a", "prompt": "caf\xe9"\n{"id": "b", "prompt": "tea"}\n')
    bad = {s.sample_id: s for s in load_prompt_file(path).samples}["line-1"]
    assert re.match(r"f\.jsonl line 1: not valid JSON .*\(and it is not valid UTF-8 \(byte 0xe9 at byte 27\)\)", bad.problem)


def test_duplicate_ids_keep_the_first_line_and_record_the_others_naming_ids_and_lines(tmp_path):
    path = write(tmp_path, "d.jsonl", jsonl(
        {"id": "cat", "prompt": "a cat"},
        {"id": "a b", "prompt": "one"},
        {"id": "dog", "prompt": "a dog"},
        {"id": "a_b", "prompt": "two"},
        {"id": "cat", "prompt": ""},  # a duplicate even when its prompt is bad
        {"id": "cat-line5", "prompt": "a name the recorded duplicate would take"},
    ))
    samples = {s.sample_id: s for s in load_prompt_file(path).samples}
    assert set(samples) == {"cat", "a_b", "dog", "a_b-line4", "cat-line5", "cat-line5-x"}
    assert samples["a_b"].prompt == "one" and samples["cat"].prompt == "a cat" and samples["cat-line5"].problem is None
    assert samples["a_b-line4"].problem == (
        "d.jsonl line 4: duplicate id 'a_b', first on line 2 ('a b' there, 'a_b' here); two samples cannot share "
        "an output file (images/<id>.png): give each line its own id (ids are compared after unsafe characters "
        "become '_')"
    )
    assert samples["cat-line5-x"].problem.startswith("d.jsonl line 5: duplicate id 'cat', first on line 1; ")


def test_files_with_nothing_to_run_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"empty\.txt: no prompts in the file; --data prompts:PATH takes a \.txt file"):
        load_prompt_file(write(tmp_path, "empty.txt", b""))
    with pytest.raises(DatasetError, match=r"blank\.jsonl: no prompts in the file"):
        load_prompt_file(write(tmp_path, "blank.jsonl", "\n\n"))
    with pytest.raises(DatasetError, match=r"allbad\.txt: no usable prompt \(all 2 are bad\): allbad\.txt line 1: empty prompt"):
        load_prompt_file(write(tmp_path, "allbad.txt", "\n  \n"))
    with pytest.raises(DatasetError, match=r"prompts\.csv: not a prompt file; --data prompts:PATH takes a \.txt file"):
        load_prompt_file(write(tmp_path, "prompts.csv", "a,b\n"))
    with pytest.raises(DatasetError, match=r"nope\.txt: no such file"):
        load_prompt_file(tmp_path / "nope.txt")


def test_data_spec_forms(tmp_path):
    path = write(tmp_path, "mine.txt", "a cat\n")
    with pytest.raises(DatasetError, match=r"a prompt file takes no --data-arg \(got split\)"):
        load_eval_dataset(f"prompts:{path}", {"split": "test"})
    with pytest.raises(DatasetError, match=r"prompts:PATH needs a path"):
        load_eval_dataset("prompts:")
    with pytest.raises(DatasetError, match=rf"a prompt file is read with --data prompts:{re.escape(str(path))}"):
        load_eval_dataset(str(path))
    with pytest.raises(DatasetError, match=r"dataset 'prompts' has no option size"):
        load_eval_dataset("prompts", {"size": "3"})
    spec = REGISTRY.lookup("prompts")
    assert spec is not None and spec.default_metrics == PROMPT_DEFAULT_METRICS


def test_sample_invariants_for_prompts_and_known_bad_samples():
    with pytest.raises(ValueError, match="prompt= must be non-blank text; use Sample.bad"):
        Sample("a", prompt="   ")
    with pytest.raises(ValueError, match="problem= must be a message"):
        Sample.bad("a", " ")
    bad = Sample.bad("a", "line 1: empty prompt", meta={"category": "object"})
    assert bad.prompt is None and bad.image is None and bad.problem == "line 1: empty prompt"
    with pytest.raises(ValueError, match="not a safe file name"):
        Sample.bad("a/b", "x")
    with pytest.raises(DatasetError, match="^line 1: empty prompt$"):
        encode_reference(bad)  # whoever asks a known-bad sample for its image hears why
    with pytest.raises(ImageLoadError, match="sample a: a prompt with no image, for the text trip only"):
        encode_reference(Sample("a", prompt="a cat"))  # the image trip on a prompt set: a clear per-sample error


# --- the bundled set --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> EvalDataset:
    return load_eval_dataset("prompts")


def test_bundled_set_is_pinned_and_records_its_hash(bundled):
    assert hashlib.sha256(BUNDLED_FILE.read_bytes()).hexdigest() == BUNDLED_SHA256
    assert bundled.source == {"kind": "prompts", "name": "unified-prompts-v1", "file": "unified-prompts-v1.jsonl",
                              "sha256": BUNDLED_SHA256, "card": "data_cards/prompts.md"}
    assert bundled.name == "prompts" and bundled.default_metrics == PROMPT_DEFAULT_METRICS
    # shipped in the wheel: package-data must match the file's suffix
    assert '"*.jsonl"' in (REPO / "pyproject.toml").read_text()


def test_bundled_set_size_categories_and_fields(bundled):
    samples = bundled.samples
    assert 100 <= len(samples) <= 200
    assert all(s.problem is None and s.prompt for s in samples)
    per_category: dict[str, int] = {}
    for s in samples:
        category = s.meta["category"]
        per_category[category] = per_category.get(category, 0) + 1
        assert re.fullmatch(rf"\d{{3}}-{category}", s.sample_id), s.sample_id
        assert isinstance(s.meta["tags"], list) and all(isinstance(t, str) for t in s.meta["tags"])
        # every quoted string is declared as text to render, in order, and nothing else is
        assert s.meta.get("text", []) == re.findall(r'"([^"]+)"', s.prompt), s.sample_id
    assert set(per_category) == set(CATEGORIES)
    # numbered in file order, round robin over the categories: --limit 8 takes one of each
    assert [s.sample_id for s in samples] == [json.loads(line)["id"] for line in BUNDLED_FILE.read_text(encoding="utf-8").splitlines()]
    assert {s.meta["category"] for s in bundled.limited(len(CATEGORIES)).samples} == set(CATEGORIES)
    assert all(n >= 15 for n in per_category.values()), per_category
    assert len({s.prompt for s in samples}) == len(samples)


def test_bundled_counts_and_binding_pairs(bundled):
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    samples = by_id(bundled)
    counts = [s for s in samples.values() if s.meta["category"] == "count"]
    assert {s.meta["count"] for s in counts} == {2, 3, 4, 5, 6}
    for s in counts:
        assert words[s.meta["count"]] in s.prompt.lower().split(), s.sample_id
    binding = [s for s in samples.values() if s.meta["category"] == "binding"]
    for s in binding:
        partner = samples[s.meta["pair"]]
        assert partner.meta["pair"] == s.sample_id and partner.prompt != s.prompt
        # the same words, only the two colours trade places
        assert sorted(_words(partner.prompt)) == sorted(_words(s.prompt))
        changed = [(a, b) for a, b in zip(_words(s.prompt), _words(partner.prompt)) if a != b]
        assert len(changed) == 2 and changed[0] == changed[1][::-1], (s.sample_id, changed)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in ("a", "an")]


def test_bundled_long_prompts_exceed_the_clip_context(bundled):
    prompts = [s.prompt for s in bundled.samples]
    # word-count proxy, a lower bound: every whitespace-separated word is at least one BPE
    # token, and the tower adds a start and an end token, so 76 words are over 77 positions
    assert sum(len(p.split()) >= 76 for p in prompts) >= 20
    assert sum(len(p.split()) >= 247 for p in prompts) >= 1  # over LongCLIP's 248 too
    # and counted exactly with CLIP's own byte-pair encoder
    tokens = [clip_tokens(p) for p in prompts]
    assert sum(t > 77 for t in tokens) >= 20 and sum(t > 248 for t in tokens) >= 1
    assert clip_tokens("a photo of a cat") == 7  # <start> a photo of a cat <end>


def test_data_card_is_generated_from_the_set():
    card = (REPO / "data_cards" / "prompts.md").read_text(encoding="utf-8")
    assert card == render_card(), "regenerate: python -m unified_bench.datasets.prompts --card > data_cards/prompts.md"


# --- Shapes: the prompt is the oracle captioner's caption; the image trip is unchanged ----------


@pytest.mark.parametrize("detail", ["long", "short"])
def test_shapes_prompt_is_what_the_oracle_captioner_says(detail):
    from unified_bench.tracks.shapes.adapters import ShapesOracleAdapter, ShapesOracleConfig
    from unified_bench.tracks.shapes.splits import shapes_samples

    dataset = load_eval_dataset("shapes", {"detail": detail}).limited(6)
    truth = shapes_samples("test", limit=6)
    assert [s.prompt for s in dataset.samples] == [t.caption_long if detail == "long" else t.caption_short for t in truth]
    adapter = ShapesOracleAdapter(ShapesOracleConfig(detail=detail))
    images = [s.image() for s in dataset.samples]
    said = adapter.caption(images, prompt="describe", seeds=[0] * len(images))
    assert said == [s.prompt for s in dataset.samples]
    assert dataset.source == {"kind": "shapes", "split": "test", "size": 256, "detail": detail}


def test_shapes_image_trip_is_unchanged_by_the_prompt():
    from unified_bench.leaderboard.tracks import SHAPES_FINGERPRINT, SHAPES_SIZE
    from unified_bench.results.record import dataset_fingerprint

    default = load_eval_dataset("shapes")
    short = load_eval_dataset("shapes", {"detail": "short"})
    assert default.source == {"kind": "shapes", "split": "test", "size": 256}  # as recorded before prompts
    assert default.default_metrics == short.default_metrics == ("shapes-attr", "effnet")
    assert [(s.sample_id, s.meta, s.reference) for s in default.samples] == [(s.sample_id, s.meta, s.reference) for s in short.samples]
    assert default.samples[0].prompt != short.samples[0].prompt
    for dataset in (default, short):  # the pinned fingerprint of the shipped Shapes entries
        hashes = {s.sample_id: hashlib.sha256(encode_reference(s)[0]).hexdigest() for s in dataset.limited(SHAPES_SIZE).samples}
        assert dataset_fingerprint(hashes) == SHAPES_FINGERPRINT
    with pytest.raises(DatasetError, match=r"--data-arg detail must be one of short, long .*got 'medium'"):
        load_eval_dataset("shapes", {"detail": "medium"})
