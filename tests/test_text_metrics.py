"""Text metrics (clip-text, siglip-text, longclip-text, clip-t2i) and the text modes of the engine.

Parity: each text tower's features equal, to 1e-5, what the checkpoint's own model class gives
(``CLIPModel.get_text_features``, ``SiglipModel.get_text_features``, LongCLIP's ``encode_text``
re-derived on open_clip's modules), computed here one text at a time with the reference
tokenisation. Tiny random-initialised checkpoints load through the real loading paths.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tiny_models
from fake_hub import COMMIT, fake_hub
from unified_bench.core.errors import ConfigError
from unified_bench.metrics import build_metric, parse_metric_list
from unified_bench.metrics.weights import TOKENIZER_FILES, hub_files
from unified_bench.scoring import Pair, ScoringConfig, score_and_write
from unified_bench.scoring.engine import text_problem
from unified_bench.scoring.keys import choose_mode, resolve_metric_key
from unified_bench.tracks.shapes import shapes_samples
from unified_bench.tracks.shapes.captions import caption
from unified_bench.tracks.shapes.scene import Scene, ShapeObject

CONTEXT = tiny_models.TEXT_CONTEXT  # 16 tokens
SHORT = "a photo of the red cat"
#: 29 words: past every tiny tower's 16-token context, within LongCLIP's 248
LONG = (
    "a red cat sitting on a blue chair near the green window with white light and a dog "
    "near the tree by the house under the sky with the sun over water"
)
TEXTS = [SHORT, "the dog near the tree", LONG]


def normalized(features) -> torch.Tensor:
    return F.normalize(getattr(features, "pooler_output", features), p=2, dim=-1)


def assert_parity(ours: torch.Tensor, reference: list[torch.Tensor]) -> None:
    assert ours.shape == (len(reference), reference[0].shape[-1])
    assert torch.allclose(ours, torch.cat(reference), atol=1e-5), (ours - torch.cat(reference)).abs().max()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tiny_models.tiny_clip(tmp_path_factory.mktemp("text") / "clip", tokenizer=True)


@pytest.fixture(scope="module")
def longclip_pt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("longclip")
    return tiny_models.tiny_longclip_pt(root / "longclip-L.pt", spec=tiny_models.LONGCLIP_TEXT_SPEC, long_positions=True)


# --------------------------------------------------------------------------- parity


def test_clip_text_parity(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    with torch.no_grad():  # one text at a time: no padding in the reference
        reference = [normalized(model.get_text_features(**tokenizer(t, truncation=True, max_length=CONTEXT, return_tensors="pt"))) for t in TEXTS]
    metric = build_metric("clip-text", checkpoint=str(clip_dir))
    embedded = metric.embed_texts(TEXTS)
    assert_parity(embedded.vectors, reference)
    assert [t.truncated for t in embedded.tokens] == [False, False, True]
    assert embedded.tokens[2].context == CONTEXT and embedded.tokens[2].tokens > CONTEXT


def test_siglip_text_parity(tmp_path):
    from transformers import AutoTokenizer, SiglipModel

    checkpoint = tiny_models.tiny_siglip(tmp_path / "siglip", tokenizer=True)
    model = SiglipModel.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    with torch.no_grad():  # as SiglipProcessor(padding="max_length"): input ids only, padded to the context
        reference = [
            normalized(model.get_text_features(input_ids=tokenizer(t, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")["input_ids"]))
            for t in TEXTS
        ]
    metric = build_metric("siglip-text", checkpoint=str(checkpoint))
    embedded = metric.embed_texts(TEXTS)
    assert_parity(embedded.vectors, reference)
    assert [t.truncated for t in embedded.tokens] == [False, False, True]
    assert metric.info.preprocessing["padding"] == "max_length"


def longclip_tokenize(texts: list[str], context: int) -> torch.Tensor:
    """LongCLIP's ``tokenize(texts, truncate=True)`` re-derived on OpenAI's BPE."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    sot, eot = bpe.encoder["<start_of_text>"], bpe.encoder["<end_of_text>"]
    out = torch.zeros(len(texts), context, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [sot] + bpe.encode(text) + [eot]
        if len(tokens) > context:
            tokens = tokens[:context]
            tokens[-1] = eot
        out[row, : len(tokens)] = torch.tensor(tokens)
    return out


def longclip_encode_text(pt_file: Path, ids: torch.Tensor) -> torch.Tensor:
    """LongCLIP's ``encode_text``: pos * mask1 + pos_res * mask2 (mask1: the first 20 rows),
    a causal transformer, ln_final, the EOT token (largest id) times text_projection."""
    state = torch.load(pt_file, map_location="cpu", weights_only=True)
    model = tiny_models.LONGCLIP_TEXT_SPEC.build()
    model.load_state_dict({k: v for k, v in state.items() if k != "positional_embedding_res"}, strict=True)
    model.eval()
    context = model.positional_embedding.shape[0]
    mask1 = torch.zeros(context, 1)
    mask1[:20] = 1
    mask2 = 1 - mask1
    with torch.no_grad():
        x = model.token_embedding(ids) + model.positional_embedding * mask1 + state["positional_embedding_res"] * mask2
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ model.text_projection


def test_longclip_text_openai_format_parity(longclip_pt):
    long = " ".join([LONG] * 10)  # ~300 words: past LongCLIP's 248 tokens
    texts = [*TEXTS, long]
    reference = [normalized(longclip_encode_text(longclip_pt, longclip_tokenize([t], 248))) for t in texts]
    metric = build_metric("longclip-text", checkpoint=str(longclip_pt))
    embedded = metric.embed_texts(texts)
    assert_parity(embedded.vectors, reference)
    assert metric.context_length == 248
    assert [t.truncated for t in embedded.tokens] == [False, False, False, True]
    assert metric.info.preprocessing["positions"].startswith("longclip")


def test_longclip_text_hf_format_parity(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    with torch.no_grad():
        reference = [normalized(model.get_text_features(**tokenizer(t, truncation=True, max_length=CONTEXT, return_tensors="pt"))) for t in TEXTS]
    assert_parity(build_metric("longclip-text", checkpoint=str(clip_dir)).embed_texts(TEXTS).vectors, reference)


def test_clip_t2i_is_clip_image_features_against_clip_text_features(clip_dir):
    from transformers import AutoTokenizer, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image = tiny_models.photo("chelsea", 0.1)
    model = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        pixels = CLIPImageProcessorPil.from_pretrained(clip_dir)(images=image, return_tensors="pt")
        image_ref = normalized(model.get_image_features(**pixels))
        text_ref = normalized(model.get_text_features(**AutoTokenizer.from_pretrained(clip_dir)(SHORT, return_tensors="pt")))
    metric = build_metric("clip-t2i", checkpoint=str(clip_dir))
    assert torch.allclose(metric.embed([image]), image_ref, atol=1e-5)
    assert torch.allclose(metric.embed_texts([SHORT]).vectors, text_ref, atol=1e-5)
    assert metric.info.kind == "image-text" and metric.info.preprocessing["text"]["context_length"] == CONTEXT


def test_openai_file_with_a_foreign_vocabulary_is_refused(tmp_path):
    pt = tiny_models.tiny_longclip_pt(tmp_path / "small-vocab.pt")  # a 100-token text tower
    with pytest.raises(ConfigError, match="49408"):
        build_metric("longclip-text", checkpoint=str(pt))


def test_text_metric_on_an_image_only_checkpoint_is_a_clear_error(tmp_path):
    checkpoint = tiny_models.tiny_dinov2(tmp_path / "dinov2")
    with pytest.raises(ConfigError, match="'dinov2' model"):
        build_metric("clip-text", checkpoint=str(checkpoint))


def test_text_towers_fetch_their_tokenizer_and_load_offline(tmp_path, monkeypatch, clip_dir):
    assert set(TOKENIZER_FILES) <= set(hub_files("clip-text")) and "*.pt" in hub_files("longclip-text")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with fake_hub({"tiny-org/clip": clip_dir}) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        build_metric("clip-text", checkpoint="tiny-org/clip")  # online: downloads into the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = build_metric("clip-text", checkpoint="tiny-org/clip")
    assert metric.info.checkpoint == "tiny-org/clip" and metric.info.revision == COMMIT
    assert metric.embed_texts([SHORT]).vectors.shape == (1, 24)


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "trip", "expected"),
    [
        ("clip", "image", ("clip", "image")),
        ("clip", "text", ("clip", "image")),  # image-only: image on every trip
        ("clip-text", "text", ("clip-text", "text")),
        ("clip-text", "image", ("clip-text", "text")),  # its first (only) mode
        ("clip-t2i", "text", ("clip-t2i", "image-text")),  # pure image-text
        ("clip-t2i", "image", ("clip-t2i", "image-text")),
        ("shapes-attr", "image", ("shapes-attr", "image")),  # reads image first: the image trip is unchanged
        ("shapes-attr", "text", ("shapes-attr", "text")),
        ("shapes-attr@image", "text", ("shapes-attr", "image")),  # explicit wins
        ("shapes-attr@text", "image", ("shapes-attr", "text")),
    ],
)
def test_resolve_metric_key(key, trip, expected):
    assert resolve_metric_key(key, trip) == expected


def test_bad_keys_and_trips_are_config_errors():
    with pytest.raises(ConfigError, match="does not read 'text'"):
        resolve_metric_key("clip@text", "text")
    with pytest.raises(ConfigError, match="unknown mode 'audio'"):
        resolve_metric_key("clip@audio", "image")
    with pytest.raises(ConfigError, match="unknown trip"):
        choose_mode(("image",), "video")
    with pytest.raises(ConfigError, match="trip must be one of image, text"):
        ScoringConfig(["clip"], trip="video")
    assert parse_metric_list("clip-text,shapes-attr@image,shapes-attr@text") == ["clip-text", "shapes-attr@image", "shapes-attr@text"]
    with pytest.raises(ConfigError, match="does not read"):
        parse_metric_list("ssim@text")


def test_text_problem_names_what_is_missing():
    pair = Pair("a", None, None, reference_text="a red circle", text="a red circle")
    assert text_problem(pair, candidate=True, reference_text=True) is None
    assert "no text" in text_problem(Pair("a", None, None, text=None), candidate=True, reference_text=False)
    assert "empty caption" in text_problem(Pair("a", None, None, text="  \n"), candidate=True, reference_text=False)
    assert "no reference text" in text_problem(Pair("a", None, None, text="x"), candidate=True, reference_text=True)
    assert text_problem(Pair("a", None, None, text="x"), candidate=True, reference_text=False) is None


# --------------------------------------------------------------------------- shapes-attr text mode


def test_shapes_attr_reads_ground_truth_captions_exactly():
    from unified_bench.tracks.shapes.oracle import ShapesAttrMetric
    from unified_bench.metrics import TextInput

    metric = build_metric("shapes-attr")
    assert isinstance(metric, ShapesAttrMetric) and metric.reads == ("image", "text")
    samples = shapes_samples("test", size=64, limit=5)
    perfect = metric.score_texts([TextInput(s.sample_id, s.caption_long, None, s.meta) for s in samples])
    assert [v.value for v in perfect] == [1.0] * 5
    assert all(set(v.sub_scores.values()) == {1.0} for v in perfect)

    truth = Scene((ShapeObject("circle", "red", "large", "top left"), ShapeObject("star", "blue", "small", "center")))
    wrong_colour = caption(truth).replace("red circle", "green circle")
    meta = {"scene": truth.to_dict()}
    [corrupted, without_meta, nothing] = metric.score_texts(
        [TextInput("c", wrong_colour, None, meta), TextInput("d", wrong_colour, caption(truth)), TextInput("e", wrong_colour)]
    )
    assert corrupted.value == 0.5 and corrupted.sub_scores["color"] == 0.5 and corrupted.sub_scores["shape"] == 1.0
    assert without_meta == corrupted  # no meta: the reference text is parsed instead
    assert nothing.value is None and "no reference text" in nothing.error


# --------------------------------------------------------------------------- the engine


def test_engine_scores_a_mixed_list_of_modes(tmp_path, clip_dir):
    """A text trip over Shapes scenes: the intermediate image (a real file) and a caption per
    sample; clip-text, clip-t2i, shapes-attr on the text and shapes-attr@image on the image."""
    samples = shapes_samples("test", size=64, limit=4)
    pairs = []
    for index, sample in enumerate(samples):
        image = tmp_path / f"{sample.sample_id}.png"
        sample.image.save(image)
        text = [sample.caption_long, LONG, None, "   "][index]  # right, wrong and too long, missing, empty
        pairs.append(Pair(sample.sample_id, None, image, sample.meta, reference_text=sample.caption_long, text=text))
    config = ScoringConfig(
        ["clip-text", "clip-t2i", "shapes-attr", "shapes-attr@image"],
        checkpoints={"clip": str(clip_dir)},  # the text metrics read clip's checkpoint
        trip="text",
        progress=False,
        use_cache=False,
        batch_size=2,
    )
    outcome = score_and_write(pairs, config, tmp_path / "out")
    assert not outcome.failures
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    ids = [s.sample_id for s in samples]
    sims = results["similarities_by_model"]
    assert results["model_types"] == ["clip-text", "clip-t2i", "shapes-attr", "shapes-attr@image"]

    assert sims["clip-text"][ids[0]] == pytest.approx(1.0, abs=1e-6) and sims["clip-text"][ids[1]] < 0.999
    assert sims["shapes-attr"][ids[0]] == 1.0 and sims["shapes-attr"][ids[1]] < 1.0
    assert sims["clip-text"][ids[2]] is None and sims["shapes-attr"][ids[3]] is None
    # the image-reading keys do not need the caption: all four samples score
    assert all(sims["clip-t2i"][i] is not None for i in ids)
    assert all(sims["shapes-attr@image"][i] is not None for i in ids)
    assert results["statistics_by_model"]["shapes-attr"]["valid_pairs"] == 2
    assert results["statistics_by_model"]["clip-t2i"]["valid_pairs"] == 4
    assert {"shapes-attr.color", "shapes-attr@image.color"} <= set(results["sub_scores"])

    errors = {(e["sample_id"], e["metric"]): e["message"] for e in results["errors"]}
    assert "no text" in errors[(ids[2], "clip-text")] and "no text" in errors[(ids[2], "shapes-attr")]
    assert "empty caption" in errors[(ids[3], "clip-text")]
    assert (ids[0], "clip-t2i") not in errors

    # truncation: the long caption's tokens, the context and the verdict, per sample and role
    truncation = results["truncation"]
    assert set(truncation) == {"clip-text", "clip-t2i"}  # the metrics that read texts with a tower
    # a long Shapes caption (~30 tokens) outgrows the tiny 16-token context too: samples 0 and 1
    assert truncation["clip-text"]["truncated_samples"] == 2
    cut = truncation["clip-text"]["samples"][ids[1]]["text"]
    assert cut["truncated"] and cut["context"] == CONTEXT and cut["tokens"] > CONTEXT
    assert truncation["clip-t2i"]["samples"][ids[0]]["reference_text"]["context"] == CONTEXT
    with open(tmp_path / "out" / "scores.csv", newline="") as handle:
        rows = {row["sample_id"]: row for row in csv.DictReader(handle)}
    assert rows[ids[1]]["clip-text.truncated"] == "True"
    assert rows[ids[2]]["clip-text.truncated"] == ""

    modes = {m.get("key", m["name"]): m.get("mode") for m in results["run"]["metrics"]}
    assert modes == {"clip-text": "text", "clip-t2i": "image-text", "shapes-attr": "text", "shapes-attr@image": "image"}
    clip_t2i = next(m for m in results["run"]["metrics"] if m["name"] == "clip-t2i")
    assert clip_t2i["checkpoint"] == str(clip_dir)

    from unified_bench.results.io import read_report

    assert read_report(tmp_path / "out").to_results_json() == results  # truncation round-trips


def test_image_mode_without_an_image_is_a_per_sample_error(tmp_path, clip_dir):
    sample = shapes_samples("test", size=64, limit=1)[0]
    image = tmp_path / "a.png"
    sample.image.save(image)
    pairs = [Pair("a", None, image, sample.meta), Pair("b", image, None, sample.meta)]
    outcome = score_and_write(
        pairs, ScoringConfig(["clip", "shapes-attr"], checkpoints={"clip": str(clip_dir)}, progress=False, use_cache=False), tmp_path / "out"
    )
    errors = {(e.sample_id, e.metric): e.message for e in outcome.report.errors}
    assert "no reference image" in errors[("a", "clip")] and "no reconstruction image" in errors[("b", "clip")]
    assert "no reconstruction image" in errors[("b", "shapes-attr")]
    assert outcome.results["similarities_by_model"]["shapes-attr"]["a"] == pytest.approx(1.0)  # meta stands in for the reference
    assert "truncation" not in outcome.results
