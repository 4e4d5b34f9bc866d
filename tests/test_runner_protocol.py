"""The paper protocol as data, and the pure seed/shard functions."""

from __future__ import annotations

import random

import pytest

from unified_bench.core.protocol import OFFICIAL_CAPTION_PROMPT, PAPER_PROTOCOL
from unified_bench.core.seeds import seed_for, shard_of


def test_official_prompt_is_verbatim_with_its_whitespace():
    # demo.py's triple-quoted string: two spaces before each newline and a trailing space
    lines = OFFICIAL_CAPTION_PROMPT.split("\n")
    assert lines[0] == "You are an expert vision-language model.  "
    assert lines[1].startswith("Your task is: Given an input image, generate a **textual description**")
    assert lines[1].endswith('transcribe it inside double quotes "".  ')
    assert lines[2] == "Now, carefully analyze the input image and output the full description. "
    assert len(lines) == 3


def test_paper_settings():
    p = PAPER_PROTOCOL
    assert (p.caption.do_sample, p.caption.temperature, p.caption.max_new_tokens) == (True, 0.7, 512)
    assert (p.generation.width, p.generation.height) == (1024, 1024)
    assert (p.generation.num_inference_steps, p.generation.guidance_scale) == (40, 5.0)
    assert "demo.py" in p.source and "2509.09666" in p.source
    record = p.to_dict()
    assert record["caption_prompt"] == OFFICIAL_CAPTION_PROMPT
    resized = p.with_size((256, 256)).to_dict()
    assert resized["generation"]["width"] == 256 and resized["caption_prompt"] == OFFICIAL_CAPTION_PROMPT
    assert p.with_size(None) is p


def test_seed_is_a_pure_function_of_global_seed_and_id():
    ids = [f"img{i}" for i in range(50)]
    first = {sid: seed_for(7, sid) for sid in ids}
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    # order of computation / batch position / subset has no influence
    assert {sid: seed_for(7, sid) for sid in shuffled} == first
    assert {sid: seed_for(7, sid) for sid in shuffled[:5]} == {sid: first[sid] for sid in shuffled[:5]}
    assert all(0 <= s < 2**31 for s in first.values())
    assert len(set(first.values())) == len(ids)  # distinct samples get distinct seeds
    assert seed_for(8, "img0") != seed_for(7, "img0")
    # pinned value: a change of the derivation would silently change every published run
    assert seed_for(0, "0") == 960439038


def test_shard_of_partitions_stably():
    ids = [f"s{i}" for i in range(300)]
    for count in (1, 2, 3, 8):
        owners = [shard_of(sid, count, ids) for sid in ids]
        assert set(owners) == set(range(count))  # every shard gets work at this size
        assert owners == [shard_of(sid, count, ids[::-1]) for sid in ids]  # whatever the listing order
    # the deal is of the whole list (so shard sizes stay even): ids outside it have no owner
    with pytest.raises(KeyError):
        shard_of("s300", 4, ids)
