"""Shapes track data: determinism, rendering, the caption grammar and its parser, splits, export."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from unified_bench.tracks.shapes import (
    COLOR_NAMES,
    COLORS,
    POSITIONS,
    SHAPES,
    SPLIT_SIZES,
    Scene,
    ShapeObject,
    blank_image,
    caption,
    complete_scene,
    export_hf,
    paraphrase,
    parse,
    render,
    shapes_samples,
)
from unified_bench.tracks.shapes.captions import vocabulary
from unified_bench.tracks.shapes.render import BACKGROUND, EXTENT, layout
from unified_bench.tracks.shapes.splits import make_sample, split_of, split_scene
from unified_bench.core.errors import DatasetError

# sha256 of the raw RGB bytes of pinned samples, recorded when the generator was written.
# A change here means every published Shapes number is stale: bump the track's version.
PINNED_IMAGES = {
    ("test", 0, 64): "3f8be71482631e525954303b64763be76435c958ed0cb396b03ede264c53a0fd",
    ("test", 0, 256): "c9f23642e6e616df2b4cb697c1ba62a5d83324178f7f46c23d3246c296b85f19",
    ("test", 7, 64): "40733d45cb7a9b890b24bdc2d3eb3e59156f81e5bbca6548230498c7475c1e43",
    ("val", 3, 256): "cc5368354af5f08c74edc33103c02a6d85bae9cf36eea1aee6218b8950de7b54",
    ("train", 11, 256): "f0235bdc033545f018872b5533be06aed9ab005f40f3e1ab086dfd02f55ae2d6",
}
PINNED_CAPTIONS = {
    ("test", 0): "Four objects: a small yellow triangle in the top right, a large cyan star in the center left, "
    "a small cyan star in the center and a small green square in the bottom left.",
    ("val", 3): "Two objects: a small blue triangle in the center and a small purple circle in the bottom right.",
}
#: sha256 over short, long, paraphrased long and paraphrased short captions of test 0..199
PINNED_CAPTION_DIGEST = "7de5153dca55f318bcc4135cf30655629774701bb3f740091a59a128d02c5ef0"


@pytest.mark.parametrize(("split", "index", "size"), sorted(PINNED_IMAGES))
def test_pinned_images_are_byte_identical(split, index, size):
    sample = make_sample(split, index, size)
    assert hashlib.sha256(sample.image.tobytes()).hexdigest() == PINNED_IMAGES[(split, index, size)]


def test_pinned_captions():
    for (split, index), text in PINNED_CAPTIONS.items():
        assert make_sample(split, index).caption_long == text
    digest = hashlib.sha256()
    for sample in shapes_samples("test", limit=200):
        for text in (sample.caption_short, sample.caption_long, sample.paraphrase("long"), sample.paraphrase("short")):
            digest.update(text.encode())
    assert digest.hexdigest() == PINNED_CAPTION_DIGEST


def test_same_seed_same_bytes_and_different_seeds_differ():
    scene = split_scene("test", 5)
    a, b = render(scene, 96, jitter_seed=42), render(scene, 96, jitter_seed=42)
    assert a.tobytes() == b.tobytes()
    assert render(scene, 96, jitter_seed=43).tobytes() != a.tobytes()


def test_render_sizes_modes_and_antialiasing():
    scene = Scene((ShapeObject("circle", "red", "large", "center"),))
    for size in (64, 256, (200, 120)):
        image = render(scene, size)
        assert image.mode == "RGB"
        assert image.size == ((size, size) if isinstance(size, int) else size)
    pixels = np.asarray(render(scene, 64)).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    # anti-aliased: edge pixels blend the background and the object colour
    assert BACKGROUND in colours and COLORS["red"] in colours and len(colours) > 4
    assert np.asarray(blank_image(32)).reshape(-1, 3).tolist() == [list(BACKGROUND)] * 32 * 32


def test_objects_stay_in_their_cells():
    for index in range(200):
        scene = split_scene("train", index)
        for place in layout(scene, jitter_seed=index, scale=1.2, max_jitter=0.2):
            row, col = divmod(place.obj.cell, 3)
            reach = place.radius * EXTENT[place.obj.shape]
            assert col / 3 < place.cx - reach and place.cx + reach < (col + 1) / 3
            assert row / 3 < place.cy - reach and place.cy + reach < (row + 1) / 3


def test_each_object_is_drawn_in_its_colour_in_its_cell():
    scene = split_scene("test", 3)
    pixels = np.asarray(render(scene, 96, jitter_seed=1))
    for obj in scene.objects:
        row, col = divmod(obj.cell, 3)
        cell = pixels[row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32].reshape(-1, 3)
        assert (cell == COLORS[obj.color]).all(axis=1).sum() > 10


def test_generated_scenes_are_valid_and_cover_every_value():
    seen = {"shape": set(), "color": set(), "size": set(), "position": set(), "count": set()}
    for sample in shapes_samples("val", limit=300):
        sample.scene.validate()
        seen["count"].add(len(sample.scene))
        for obj in sample.scene.objects:
            for name, value in obj.to_dict().items():
                seen[name].add(value)
    assert seen["shape"] == set(SHAPES) and seen["color"] == set(COLOR_NAMES)
    assert seen["position"] == set(POSITIONS) and seen["count"] == {1, 2, 3, 4}


def test_long_caption_parses_back_losslessly_on_the_whole_test_split():
    samples = shapes_samples("test")
    assert len(samples) == SPLIT_SIZES["test"] >= 500
    for sample in samples:
        assert parse(sample.caption_long) == sample.scene, sample.caption_long


def test_paraphrases_parse_back_and_vary():
    all_same = 0
    for index in range(300):
        scene = split_scene("val", index)
        texts = set()
        for seed in range(3):
            text = paraphrase(scene, "long", seed)
            texts.add(text)
            assert parse(text) == scene, text
            short = parse(paraphrase(scene, "short", seed))
            assert sorted((o.shape, o.color) for o in short.objects) == sorted((o.shape, o.color) for o in scene.objects)
            assert all(o.size is None and o.position is None for o in short.objects)
        all_same += len(texts) == 1
    assert all_same < 10  # paraphrases differ by seed


def test_short_caption_names_only_shapes_and_colours():
    scene = split_scene("test", 1)
    text = caption(scene, "short")
    for word in ("small", "large", "left", "right", "top", "bottom", "center"):
        assert word not in text
    parsed = parse(text)
    assert len(parsed) == len(scene)
    assert {o.shape for o in parsed.objects} == {o.shape for o in scene.objects}


def test_parser_is_tolerant_of_free_text():
    parsed = parse("I see two red circles and a big Blue star at the bottom, plus some clouds.")
    assert sorted((o.shape, o.color, o.size, o.position) for o in parsed.objects) == [
        ("circle", "red", None, None),
        ("circle", "red", None, None),
        ("star", "blue", "large", "bottom center"),
    ]
    assert parse("a lovely landscape with mountains") == Scene(())
    assert parse("A small green triangle in the upper-right corner.").objects == (
        ShapeObject("triangle", "green", "small", "top right"),
    )
    assert parse("a square on the left").objects[0].position == "center left"
    assert parse("a square in the middle").objects[0].position == "center"


def test_complete_scene_fills_unknowns_deterministically():
    partial = parse("Three objects: a red circle, a blue square in the top left and a tiny star.")
    full = complete_scene(partial, seed=7)
    full.validate()
    assert full == complete_scene(partial, seed=7)
    assert ShapeObject("square", "blue", full.objects[0].size, "top left") in full.objects
    assert sorted(o.shape for o in full.objects) == ["circle", "square", "star"]
    assert complete_scene(split_scene("test", 0), seed=1) == split_scene("test", 0)  # complete: unchanged


def test_scene_json_round_trip_and_validation():
    scene = split_scene("test", 9)
    assert Scene.from_dict(json.loads(scene.to_json())) == scene == Scene.from_dict(scene.to_json())
    with pytest.raises(ValueError, match="unknown shape"):
        ShapeObject("hexagon", "red", "small", "center")
    with pytest.raises(ValueError, match="one object per grid cell"):
        Scene((ShapeObject("circle", "red", "small", "center"), ShapeObject("star", "red", "large", "center"))).validate()


def test_splits_are_disjoint_and_fixed():
    test = {make_sample("test", i).scene.to_json() for i in range(300)}
    train = {make_sample("train", i).scene.to_json() for i in range(2000)}
    assert not test & train
    assert all(split_of(Scene.from_dict(s)) == "test" for s in test)
    assert make_sample("test", 12).sample_id == "shapes-test-00012"
    with pytest.raises(DatasetError, match="unknown Shapes split"):
        shapes_samples("dev")


def test_vocabulary_covers_every_generated_word():
    words = set(vocabulary())
    for index in range(200):
        scene = split_scene("train", index)
        for text in (caption(scene, "long"), caption(scene, "short"), paraphrase(scene, "long", index), paraphrase(scene, "short", index)):
            assert set(text.lower().replace("-", " ").replace(",", " ").replace(";", " ").replace(":", " ").replace(".", " ").split()) <= words


def test_export_hf_round_trip(tmp_path):
    import datasets

    export_hf(tmp_path / "hf", "test", size=64, limit=4)
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert loaded.column_names == ["sample_id", "image", "caption_short", "caption_long", "scene", "seed"]
    row = loaded[2]
    sample = make_sample("test", 2, 64)
    assert row["sample_id"] == sample.sample_id and row["caption_long"] == sample.caption_long
    assert Scene.from_dict(row["scene"]) == sample.scene
    assert row["image"].convert("RGB").tobytes() == sample.image.tobytes()
