"""Prompt samples: a known-bad sample (Sample.bad) and the invariants of a prompt."""

from __future__ import annotations

import pytest

from unified_bench.core.errors import DatasetError, ImageLoadError
from unified_bench.datasets.base import Sample, encode_reference


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
