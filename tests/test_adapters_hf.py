"""The Hugging Face adapters (pair, janus-pro, emu3, uae) on tiny random-initialised models.

Every model is built from a config, saved with ``save_pretrained`` and loaded back through
the adapter's real ``from_pretrained`` path; no network. Each adapter runs a two-image round
trip, and the same seeds must give the same captions and images whether a sample is alone
or in a batch of two.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_hf_models import (
    UAE_LORA_RANK,
    build_fake_uae_release,
    build_tiny_emu3,
    build_tiny_janus,
    build_tiny_qwen25vl,
    build_tiny_sd3_pipeline,
)

from unified_bench.adapters.base import check_captions, check_images
from unified_bench.adapters.hf_common import (
    hf_loading,
    images_from_array,
    make_generator,
    resolve_device,
    resolve_dtype,
    seeded,
)
from unified_bench.adapters.registry import build_adapter
from unified_bench.core.errors import ConfigError, GatedCheckpointError, WeightsNotFoundError

PROMPT = "describe the image"
SEEDS = [11, 22]
#: The suite runs on CPU; set UB_TEST_DEVICE=cuda (and UB_TEST_DTYPE) to run it on a GPU.
DEVICE = os.environ.get("UB_TEST_DEVICE", "cpu")
DTYPE = os.environ.get("UB_TEST_DTYPE", "auto")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Two different photos-like images of different sizes."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (56, 32, 3), dtype=np.uint8)).convert("L").convert("RGB"),
    ]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, images) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index, image in enumerate(images):
        image.save(folder / f"photo{index}.png")
    return folder


def assert_round_trip(adapter, images) -> tuple[list[str], list[Image.Image]]:
    """Two-image round trip: types, counts, checks, and batch-size invariance (2 vs 1)."""
    captions = adapter.caption(images, prompt=PROMPT, seeds=SEEDS)
    assert all(outcome.ok for outcome in check_captions(captions, 2)), captions
    assert adapter.caption(images[1:], prompt=PROMPT, seeds=SEEDS[1:]) == captions[1:]
    assert adapter.caption(images, prompt=PROMPT, seeds=SEEDS) == captions  # repeatable

    generated = adapter.generate(captions, seeds=SEEDS, size=None)
    assert all(outcome.ok for outcome in check_images(generated, 2))
    alone = adapter.generate(captions[1:], seeds=SEEDS[1:], size=None)
    assert np.array_equal(np.asarray(alone[0]), np.asarray(generated[1]))
    # The seed matters: another seed renders the same prompt differently.
    other = adapter.generate(captions[:1], seeds=[SEEDS[0] + 1], size=None)
    assert not np.array_equal(np.asarray(other[0]), np.asarray(generated[0]))
    described = adapter.describe()
    json.dumps(described)  # the run record must serialise
    return captions, generated


def run_eval_cli(model: str, model_args: list[str], data: Path, out: Path) -> dict:
    """``unified-bench eval`` in-process; returns results.json."""
    from unified_bench.cli import main
    from unified_bench.results import validate_results

    argv = ["eval", "--model", model, "--data", str(data), "--metrics", "ssim", "--out", str(out), "--no-progress"]
    for arg in model_args:
        argv += ["--model-arg", arg]
    try:
        main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"eval exited {exit_.code}"
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    assert sorted(s["sample_id"] for s in results["samples"]) == ["photo0", "photo1"]
    assert not results["errors"]
    lines = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines() if line.strip()]
    assert sorted(line["sample_id"] for line in lines) == ["photo0", "photo1"]
    return results


# --- hf_common ---------------------------------------------------------------------------------------


def test_images_from_array_turns_nan_into_a_flagged_sample():
    good = np.linspace(0, 1, 4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
    bad = good.copy()
    bad[1, 2, 0] = np.nan
    inf = good.copy()
    inf[0, 0, 1] = np.inf
    out = images_from_array(np.stack([good, bad, inf]))
    assert out[0].mode == "RGB" and np.asarray(out[0])[-1, -1, -1] == 255 and np.asarray(out[0])[0, 0, 0] == 0
    outcomes = check_images(out, 3)
    assert outcomes[0].ok
    assert [o.error for o in outcomes[1:]] == ["generated image contains NaN or inf"] * 2
    # [-1, 1] outputs (VQ decoders) map to the full range too.
    signed = images_from_array(torch.full((1, 2, 2, 3), -1.0), value_range=(-1.0, 1.0))
    assert np.asarray(signed[0]).max() == 0


def test_hf_loading_maps_failures_to_actionable_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="hf download org/model.*HF_HUB_OFFLINE|HF_HUB_OFFLINE.*hf download"):
        with hf_loading("captioner", "org/model", arg="captioner"):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    with pytest.raises(GatedCheckpointError, match="licence"):
        with hf_loading("metric", "org/gated", arg="model"):
            raise OSError("You are trying to access a gated repo.")
    with pytest.raises(WeightsNotFoundError, match="does not exist.*--model-arg generator"):
        with hf_loading("generator", str(tmp_path / "missing" / "dir"), arg="generator"):
            pass
    with pytest.raises(ValueError, match="unrelated"):  # a real bug is not disguised as missing weights
        with hf_loading("generator", "org/model", arg="generator"):
            raise ValueError("unrelated")


def test_device_dtype_and_seeding():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError):
        resolve_dtype("int3", torch.device("cpu"))
    with pytest.raises(ConfigError):
        resolve_device("not-a-device")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(3)
    with seeded(7):
        assert torch.equal(torch.rand(3), first)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    assert torch.equal(torch.rand(2, generator=make_generator(5)), torch.rand(2, generator=make_generator(5)))


# --- pair ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    return build_tiny_qwen25vl(root / "qwen"), build_tiny_sd3_pipeline(root / "sd3")


def pair_args(pair_dirs) -> dict:
    captioner, generator = pair_dirs
    return dict(captioner=str(captioner), generator=str(generator), max_new_tokens=6, steps=2, height=32, width=32, device=DEVICE, dtype=DTYPE)


@pytest.fixture(scope="module")
def pair(pair_dirs):
    adapter = build_adapter("pair", pair_args(pair_dirs))
    yield adapter
    adapter.close()


@pytest.mark.slow
def test_pair_round_trip(pair, images):
    captions, generated = assert_round_trip(pair, images)
    assert [img.size for img in generated] == [(32, 32), (32, 32)]
    assert pair.capabilities.native_resolution == (32, 32)  # what the runner renders at
    described = pair.describe()
    assert described["generator_pipeline"] == "StableDiffusion3Pipeline"
    assert described["caption_sampling"]["temperature"] == 0.7
    # Batched generation keeps one generator per sample: the same initial noise, so the same
    # image on CPU; GPU batched kernels may change the last bits (why gen_batch_size is 1).
    pair.gen_batch_size = 2
    try:
        batched = pair.generate(captions, seeds=SEEDS, size=(32, 32))
    finally:
        pair.gen_batch_size = 1
    diffs = [np.abs(np.asarray(b, int) - np.asarray(g, int)).max() for b, g in zip(batched, generated)]
    print("batched vs one-at-a-time, max pixel difference:", diffs)
    assert max(diffs) == 0 if DEVICE == "cpu" else max(diffs) <= 16


@pytest.mark.slow
def test_pair_nan_output_is_a_per_sample_error(pair):
    weight = pair.pipe.transformer.proj_out.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    try:
        out = pair.generate(["a red cat"], seeds=[1], size=None)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert check_images(out, 1)[0].error == "generated image contains NaN or inf"


def test_pair_missing_checkpoint_is_weights_not_found(tmp_path, pair_dirs):
    from unified_bench.adapters.pair import PairAdapter

    with pytest.raises(WeightsNotFoundError, match="captioner"):
        PairAdapter(captioner=str(tmp_path / "nope"), generator=str(pair_dirs[1]), device=DEVICE)
    with pytest.raises(WeightsNotFoundError, match="--model-arg generator="):
        PairAdapter(captioner=str(pair_dirs[0]), generator="org/not-downloaded", device=DEVICE)


@pytest.mark.slow
def test_pair_eval_cli(pair_dirs, image_folder, tmp_path):
    args = [f"{k}={v}" for k, v in pair_args(pair_dirs).items()]
    results = run_eval_cli("pair", args, image_folder, tmp_path / "run")
    assert results["similarities_by_model"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    described = run["adapter"]["describe"]  # describe() reaches the run record
    assert described["captioner"] == str(pair_dirs[0]) and described["generation"]["steps"] == 2
    assert run["protocol"]["generation"]["width"] == 32  # the adapter's configured size, not 1024


# --- janus-pro ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory) -> Path:
    return build_tiny_janus(tmp_path_factory.mktemp("janus") / "janus")


def janus_args(janus_dir) -> dict:
    return {"model": str(janus_dir), "max_new_tokens": 6, "device": DEVICE, "dtype": DTYPE}


@pytest.mark.slow
def test_janus_round_trip(janus_dir, images):
    adapter = build_adapter("janus-pro", janus_args(janus_dir))
    try:
        _, generated = assert_round_trip(adapter, images)
        assert adapter.capabilities.native_resolution == (32, 32)  # from the VQ decoder config
        assert [img.size for img in generated] == [(32, 32), (32, 32)]
        resized = adapter.generate(["a red cat"], seeds=[1], size=(48, 40))
        assert resized[0].size == (48, 40)
        assert adapter.describe()["generation"]["guidance_scale"] == 5.0
    finally:
        adapter.close()


@pytest.mark.slow
def test_janus_eval_cli(janus_dir, image_folder, tmp_path):
    run_eval_cli("janus-pro", [f"{k}={v}" for k, v in janus_args(janus_dir).items()], image_folder, tmp_path / "run")


def test_janus_presets_point_at_the_hub_checkpoints():
    from unified_bench.adapters.registry import resolve

    for preset, repo in (("janus-pro-1b", "deepseek-community/Janus-Pro-1B"), ("janus-pro-7b", "deepseek-community/Janus-Pro-7B")):
        spec, args = resolve(preset)
        assert spec.name == "janus-pro" and args["model"] == repo


# --- emu3 ---------------------------------------------------------------------------------------------------


def test_emu3_image_grammar():
    from unified_bench.adapters.emu3 import allowed_next_tokens, image_token_budget

    height, width, visual = 2, 3, [100, 101]
    ids = dict(eol=1, eof=2, eoi=3, eos=4, pad=0)
    sequence = [
        allowed_next_tokens(offset, height=height, width=width, visual=visual, **ids)
        for offset in range(1, image_token_budget(height, width) + 2)
    ]
    row = [visual, visual, visual, [1]]
    assert sequence == row + row + [[2], [3], [4], [0]]


@pytest.fixture(scope="module")
def emu3_dir(tmp_path_factory) -> Path:
    return build_tiny_emu3(tmp_path_factory.mktemp("emu3") / "emu3")


def emu3_args(emu3_dir) -> dict:
    return {
        "model": str(emu3_dir),
        "gen_model": str(emu3_dir),
        "max_new_tokens": 6,
        "image_area": 32 * 32,
        "device": DEVICE,
        "dtype": DTYPE,
    }


@pytest.mark.slow
def test_emu3_round_trip(emu3_dir, images):
    adapter = build_adapter("emu3", emu3_args(emu3_dir))
    try:
        assert adapter.gen_model is adapter.model  # one checkpoint for both: loaded once
        _, generated = assert_round_trip(adapter, images)
        assert [img.size for img in generated] == [(32, 32), (32, 32)]
        wide = adapter.generate(["a red cat"], seeds=[1], size=(48, 32))  # 6x4 token grid
        assert wide[0].size == (48, 32)
    finally:
        adapter.close()


@pytest.mark.slow
def test_emu3_eval_cli(emu3_dir, image_folder, tmp_path):
    run_eval_cli("emu3", [f"{k}={v}" for k, v in emu3_args(emu3_dir).items()], image_folder, tmp_path / "run")


# --- uae -----------------------------------------------------------------------------------------------------


def test_uae_checkpoint_keys_in_both_layouts():
    from unified_bench.adapters.uae import canonical_llm_name, merge_lora, qwen_smart_resize, split_llm_state

    assert canonical_llm_name("model.base_model.model.layers.0.mlp.up_proj.base_layer.weight") == (
        "model.language_model.layers.0.mlp.up_proj.weight"
    )
    assert canonical_llm_name("visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"
    assert canonical_llm_name("model.language_model.norm.weight") == "model.language_model.norm.weight"
    assert canonical_llm_name("model.base_model.model.embed_tokens.weight") == "model.language_model.embed_tokens.weight"
    assert canonical_llm_name("lm_head.weight") == "lm_head.weight"
    a, b = torch.ones(2, 3), torch.ones(4, 2)
    split = split_llm_state(
        {
            "model.base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight": a,
            "model.base_model.model.layers.0.self_attn.q_proj.lora_B.default.weight": b,
            "base_model.model.model.language_model.layers.0.self_attn.k_proj.lora_A.weight": a,  # a PEFT adapter file
            "projector.0.weight": torch.zeros(1),
            "lm_head.weight": torch.zeros(1),
        }
    )
    assert split.lora_modules == ["model.language_model.layers.0.self_attn.q_proj"]
    assert set(split.lora_a) == {
        "model.language_model.layers.0.self_attn.q_proj",
        "model.language_model.layers.0.self_attn.k_proj",
    }
    assert list(split.projector) == ["0.weight"] and list(split.weights) == ["lm_head.weight"]
    merged = merge_lora(torch.zeros(4, 3, dtype=torch.bfloat16), a, b, 2.0)
    assert merged.dtype == torch.bfloat16 and torch.equal(merged.float(), torch.full((4, 3), 4.0))
    # qwen_vl_utils.smart_resize: multiples of 28 within [4*28*28, 16384*28*28] pixels.
    assert qwen_smart_resize(40, 48) == (56, 84)
    assert qwen_smart_resize(1000, 1500) == (1008, 1512)
    assert qwen_smart_resize(20, 20) == (56, 56)


@pytest.fixture(scope="module")
def uae_release(tmp_path_factory) -> tuple[Path, Path]:
    return build_fake_uae_release(tmp_path_factory.mktemp("uae"))


def uae_args(release) -> dict:
    root, sd3 = release
    return {
        "model": str(root),
        "sd3": str(sd3),
        "max_new_tokens": 6,
        "steps": 2,
        "height": 32,
        "width": 32,
        "device": DEVICE,
        "dtype": DTYPE,
    }


@pytest.fixture(scope="module")
def uae(uae_release):
    adapter = build_adapter("uae", uae_args(uae_release))
    yield adapter
    adapter.close()


@pytest.mark.slow
def test_uae_round_trip(uae, images):
    _, generated = assert_round_trip(uae, images)
    assert [img.size for img in generated] == [(32, 32), (32, 32)]
    negative, positive = uae.prompt_embeds("a red cat on a chair")
    assert negative.shape == positive.shape and negative.shape[-1] == 64  # padded together, projected to D


@pytest.mark.slow
def test_uae_loads_lora_projector_and_dit_lora_by_key(uae, uae_release):
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    root, _ = uae_release
    ckpt = root / "Checkpoints"
    shards = {}
    for path in sorted((ckpt / "llm_lora").glob("*.safetensors")):
        shards.update(load_file(str(path)))
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt / "llm").state_dict()
    prefix = "model.base_model.model.layers.0.self_attn.q_proj"
    expected = base["model.language_model.layers.0.self_attn.q_proj.weight"] + (64 / UAE_LORA_RANK) * (
        shards[f"{prefix}.lora_B.default.weight"] @ shards[f"{prefix}.lora_A.default.weight"]
    )
    loaded = dict(uae.llm.named_parameters())["model.language_model.layers.0.self_attn.q_proj.weight"].float().cpu()
    tolerance = 1e-6 if uae.dtype == torch.float32 else 2e-2  # bf16 keeps ~3 significant digits
    assert torch.allclose(loaded, expected, atol=tolerance, rtol=tolerance)
    assert not torch.allclose(loaded, base["model.language_model.layers.0.self_attn.q_proj.weight"], atol=1e-4)
    assert torch.equal(uae.projector.layers[2].bias.cpu(), shards["projector.2.bias"].to(uae.dtype))
    report = uae.describe()["load"]["llm_lora"]
    assert report["lora_modules_merged"] == 7 and report["unmatched_keys"] == 0 and report["lora_scale"] == 2.0
    assert isinstance(uae.pipe.transformer, PeftModel)
    adapter_state = load_file(str(ckpt / "dit_lora" / "adapter_model.safetensors"))
    key = next(k for k in adapter_state if "lora_B" in k)
    live = dict(uae.pipe.transformer.named_parameters())
    live_key = next(k for k in live if k.replace(".default", "") == key)
    assert torch.allclose(live[live_key].detach().cpu().float(), adapter_state[key].float(), atol=tolerance)


@pytest.mark.slow
def test_uae_projector_in_llm_folder_and_pooled_file(uae, uae_release, tmp_path, images):
    root, sd3 = uae_release
    moved = tmp_path / "release"
    shutil.copytree(root / "Checkpoints", moved / "Checkpoints")
    projector = {}
    for path in sorted((moved / "Checkpoints" / "llm_lora").glob("*.safetensors")):
        state = load_file(str(path))
        projector.update({k: v for k, v in state.items() if k.startswith("projector.")})
        save_file({k: v for k, v in state.items() if not k.startswith("projector.")}, str(path), metadata={"format": "pt"})
    save_file(projector, str(moved / "Checkpoints" / "llm" / "projector.safetensors"), metadata={"format": "pt"})
    pooled = tmp_path / "pooled.safetensors"
    save_file({"pooled_prompt_embeds": uae.pooled.cpu().contiguous()}, str(pooled))

    other = build_adapter("uae", {**uae_args((moved, sd3)), "pooled_embeds": str(pooled)})
    try:
        assert other.describe()["load"]["projector"]["source"] == "llm"
        assert torch.equal(other.pooled, uae.pooled)
        seeds = [5]
        assert np.array_equal(
            np.asarray(other.generate(["a red cat"], seeds=seeds, size=None)[0]),
            np.asarray(uae.generate(["a red cat"], seeds=seeds, size=None)[0]),
        )
    finally:
        other.close()


def test_uae_release_problems_are_clear(tmp_path):
    from unified_bench.adapters.uae import find_release

    with pytest.raises(WeightsNotFoundError, match="'llm' folder"):
        find_release(tmp_path)
    for name in ("llm", "llm_lora", "dit", "dit_lora"):
        (tmp_path / "Checkpoints" / name).mkdir(parents=True)
    paths = find_release(tmp_path)
    assert paths.llm == tmp_path / "Checkpoints" / "llm" and paths.llm_processor is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert find_release(tmp_path, dit=str(elsewhere)).dit == elsewhere  # explicit folders win


@pytest.mark.slow
def test_uae_llm_lora_without_lora_keys_is_an_error(uae_release, tmp_path):
    root, sd3 = uae_release
    broken = tmp_path / "release"
    shutil.copytree(root / "Checkpoints", broken / "Checkpoints")
    for path in sorted((broken / "Checkpoints" / "llm_lora").glob("*.safetensors")):
        state = load_file(str(path))
        save_file({k: v for k, v in state.items() if "lora_" not in k}, str(path), metadata={"format": "pt"})
    with pytest.raises(WeightsNotFoundError, match="no LoRA weights"):
        build_adapter("uae", uae_args((broken, sd3)))


@pytest.mark.slow
def test_uae_eval_cli(uae_release, image_folder, tmp_path):
    args = [f"{k}={v}" for k, v in uae_args(uae_release).items()]
    run_eval_cli("uae", args, image_folder, tmp_path / "run")


# --- executed settings: what the adapter reports is what reached the model -------------------------------
#
# Each test spies on the model (its ``generate``, and the GenerationConfig and logits processors
# transformers builds inside it) or on the pipeline's ``__call__`` while the adapter runs, then
# compares the adapter's caption_settings/generation_settings with what was recorded. The
# checkpoint's generation_config gets repetition_penalty and top_k, which ``generate`` merges
# into every call: the report must show them although the adapter never passes them.

REPETITION_PENALTY, TOP_K = 1.3, 7


def spy_generate(monkeypatch, model) -> list[dict]:
    """Record each ``model.generate`` call: kwargs, output, and the effective GenerationConfig
    and logits processors transformers built for it."""
    calls: list[dict] = []
    original_generate, original_processors = model.generate, model._get_logits_processor

    def generate(*args, **kwargs):
        call = {"kwargs": kwargs, "processors": []}
        calls.append(call)
        call["output"] = original_generate(*args, **kwargs)
        return call["output"]

    def get_logits_processor(generation_config, *args, **kwargs):
        processors = original_processors(generation_config, *args, **kwargs)
        calls[-1]["config"] = copy.deepcopy(generation_config)
        calls[-1]["processors"] = list(processors)
        return processors

    monkeypatch.setattr(model, "generate", generate)
    monkeypatch.setattr(model, "_get_logits_processor", get_logits_processor)
    return calls


def spy_decode(monkeypatch, model) -> list[tuple[int, ...]]:
    """Record the shape of every decoded image tensor (what the VQ decoder really rendered)."""
    shapes: list[tuple[int, ...]] = []
    original = model.decode_image_tokens

    def decode(*args, **kwargs):
        out = original(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(model, "decode_image_tokens", decode)
    return shapes


def spy_pipeline(monkeypatch, pipe) -> list[dict]:
    """Record each pipeline call: its kwargs, the timesteps the scheduler ran, the guidance the
    pipeline applied and the output's size."""
    calls: list[dict] = []
    original = type(pipe).__call__

    def call(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls.append(
            {
                "kwargs": kwargs,
                "timesteps": len(self.scheduler.timesteps),
                "guidance_scale": self.guidance_scale,
                "size": (output.images.shape[-2], output.images.shape[-3]),
            }
        )
        return output

    monkeypatch.setattr(type(pipe), "__call__", call)
    return calls


def processor(call: dict, name: str):
    found = [p for p in call["processors"] if type(p).__name__ == name]
    assert len(found) == 1, f"{name} not in {[type(p).__name__ for p in call['processors']]}"
    return found[0]


def with_checkpoint_sampling(monkeypatch, model) -> None:
    """Settings the checkpoint's generation_config.json could carry (restored afterwards)."""
    monkeypatch.setattr(model.generation_config, "repetition_penalty", REPETITION_PENALTY)
    monkeypatch.setattr(model.generation_config, "top_k", TOP_K)


def assert_caption_report_matches(adapter, model, monkeypatch, images, tokenizer) -> None:
    with_checkpoint_sampling(monkeypatch, model)
    calls = spy_generate(monkeypatch, model)
    adapter.caption(images[:1], prompt=PROMPT, seeds=SEEDS[:1])
    report = adapter.caption_settings(PROMPT)
    (call,) = calls
    config, kwargs = call["config"], call["kwargs"]
    assert report.max_new_tokens == kwargs["max_new_tokens"] == config.max_new_tokens
    assert report.do_sample is kwargs["do_sample"] is config.do_sample is True
    assert report.temperature == kwargs["temperature"] == config.temperature
    assert processor(call, "TemperatureLogitsWarper").temperature == report.temperature
    # merged in from the checkpoint's generation_config, never passed by the adapter
    assert "repetition_penalty" not in kwargs and "top_k" not in kwargs
    assert report.extra["repetition_penalty"] == config.repetition_penalty == REPETITION_PENALTY
    assert processor(call, "RepetitionPenaltyLogitsProcessor").penalty == REPETITION_PENALTY
    assert report.extra["top_k"] == config.top_k == processor(call, "TopKLogitsWarper").top_k == TOP_K
    assert report.extra == {key: getattr(config, key) for key in report.extra}
    # the instruction that reached the model
    assert report.prompt == PROMPT and PROMPT in tokenizer.decode(kwargs["input_ids"][0])


def test_effective_generation_config_merges_checkpoint_and_call():
    from transformers import GenerationConfig

    from unified_bench.adapters.hf_common import effective_generation_config, executed_caption

    checkpoint = GenerationConfig(repetition_penalty=1.3, top_p=0.9, temperature=1.5, no_repeat_ngram_size=3)
    config = effective_generation_config(checkpoint, {"max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "generation_mode": "text"})
    assert checkpoint.temperature == 1.5  # a copy: the model's own config is untouched
    report = executed_caption("p", config)
    assert (report.do_sample, report.temperature, report.max_new_tokens) == (True, 0.7, 8)
    assert report.extra == {"repetition_penalty": 1.3, "top_p": 0.9, "no_repeat_ngram_size": 3}
    # greedy: transformers applies no temperature and no top-p/top-k, but still the penalties
    greedy = executed_caption("p", effective_generation_config(checkpoint, {"max_new_tokens": 8, "do_sample": False}))
    assert (greedy.do_sample, greedy.temperature) == (False, 0.0)
    assert greedy.extra == {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "decoding": "greedy"}


@pytest.mark.slow
def test_pair_reports_what_ran(pair, images, monkeypatch):
    assert_caption_report_matches(pair, pair.model, monkeypatch, images, pair.processor.tokenizer)
    calls = spy_pipeline(monkeypatch, pair.pipe)
    for size in (None, (48, 32)):
        calls.clear()
        out = pair.generate(["a red cat"], seeds=[1], size=size)
        report = pair.generation_settings(size)
        (call,) = calls
        kwargs = call["kwargs"]
        assert (report.width, report.height) == (kwargs["width"], kwargs["height"]) == call["size"] == out[0].size
        assert report.num_inference_steps == kwargs["num_inference_steps"] == call["timesteps"] == 2
        assert report.guidance_scale == kwargs["guidance_scale"] == call["guidance_scale"] == 5.0
        assert report.scheduler == type(pair.pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert report.dtype == str(pair.pipe.transformer.dtype).replace("torch.", "")
    assert (report.width, report.height) == (48, 32)


@pytest.mark.slow
def test_uae_reports_what_ran(uae, images, monkeypatch):
    assert_caption_report_matches(uae, uae.llm, monkeypatch, images, uae.processor.tokenizer)
    calls = spy_pipeline(monkeypatch, uae.pipe)
    uae.generate(["a red cat"], seeds=[1], size=None)
    report = uae.generation_settings(None)
    (call,) = calls
    kwargs = call["kwargs"]
    assert (report.width, report.height) == (kwargs["width"], kwargs["height"]) == call["size"] == (32, 32)
    assert report.num_inference_steps == kwargs["num_inference_steps"] == call["timesteps"] == 2
    assert report.guidance_scale == kwargs["guidance_scale"] == call["guidance_scale"] == 5.0
    assert report.scheduler == type(uae.pipe.scheduler).__name__
    assert report.dtype == str(uae.pipe.dtype).replace("torch.", "")


@pytest.fixture(scope="module")
def janus(janus_dir):
    adapter = build_adapter("janus-pro", janus_args(janus_dir))
    yield adapter
    adapter.close()


@pytest.mark.slow
def test_janus_reports_what_ran(janus, images, monkeypatch):
    assert_caption_report_matches(janus, janus.model, monkeypatch, images, janus.processor.tokenizer)
    monkeypatch.setattr(janus, "image_temperature", 0.9)
    calls = spy_generate(monkeypatch, janus.model)
    decoded = spy_decode(monkeypatch, janus.model)
    out = janus.generate(["a red cat"], seeds=[1], size=(48, 40))
    report = janus.generation_settings((48, 40))
    (call,) = calls
    config, kwargs = call["config"], call["kwargs"]
    assert (report.width, report.height) == (decoded[0][2], decoded[0][1]) == (32, 32)  # rendered [1, H, W, 3]
    assert (report.extra["output_width"], report.extra["output_height"]) == out[0].size == (48, 40)
    assert report.num_inference_steps == call["output"].shape[1] == report.extra["image_tokens"]
    assert report.guidance_scale == kwargs["guidance_scale"] == processor(call, "ClassifierFreeGuidanceLogitsProcessor").guidance_scale
    assert report.extra["image_temperature"] == kwargs["temperature"] == processor(call, "TemperatureLogitsWarper").temperature == 0.9
    assert report.extra["repetition_penalty"] == processor(call, "RepetitionPenaltyLogitsProcessor").penalty == REPETITION_PENALTY
    assert report.extra["top_k"] == config.top_k == processor(call, "TopKLogitsWarper").top_k == TOP_K
    assert report.dtype == str(janus.model.dtype).replace("torch.", "")


@pytest.fixture(scope="module")
def emu3(emu3_dir):
    adapter = build_adapter("emu3", emu3_args(emu3_dir))
    yield adapter
    adapter.close()


@pytest.mark.slow
def test_emu3_reports_what_ran(emu3, images, monkeypatch):
    assert_caption_report_matches(emu3, emu3.model, monkeypatch, images, emu3.processor.tokenizer)
    calls = spy_generate(monkeypatch, emu3.gen_model)
    decoded = spy_decode(monkeypatch, emu3.gen_model)
    out = emu3.generate(["a red cat"], seeds=[1], size=(48, 32))
    report = emu3.generation_settings((48, 32))
    (call,) = calls
    config, kwargs = call["config"], call["kwargs"]
    assert (report.width, report.height) == (decoded[0][3], decoded[0][2]) == out[0].size == (48, 32)  # [1, 3, H, W]
    new_tokens = call["output"].sequences.shape[1] - kwargs["input_ids"].shape[1]
    assert report.num_inference_steps == kwargs["max_new_tokens"] == new_tokens
    assert report.guidance_scale == kwargs["guidance_scale"] == processor(call, "UnbatchedClassifierFreeGuidanceLogitsProcessor").guidance_scale
    # top_k is the adapter's (it overrides the checkpoint's); the penalty comes from the checkpoint
    assert report.extra["top_k"] == kwargs["top_k"] == config.top_k == processor(call, "TopKLogitsWarper").top_k
    assert report.extra["repetition_penalty"] == processor(call, "RepetitionPenaltyLogitsProcessor").penalty == REPETITION_PENALTY
    assert report.extra["image_temperature"] == config.temperature
    assert "output_width" not in report.extra  # 48x32 is a whole token grid: no resize


@pytest.mark.slow
def test_run_eval_records_the_adapters_report(janus, image_folder, tmp_path, monkeypatch):
    from unified_bench.runner.eval import EvalConfig, run_eval

    with_checkpoint_sampling(monkeypatch, janus.model)
    out = tmp_path / "run"
    config = EvalConfig(model="janus-pro", data=str(image_folder), out=out, metrics=["ssim"], size=(48, 40), progress=False)
    outcome = run_eval(config, adapter=janus)
    assert outcome.finished == 2 and not outcome.errors
    run = json.loads((out / "results.json").read_text())["run"]
    executed = run["protocol_executed"]
    assert executed == {
        "caption": janus.caption_settings(run["protocol"]["caption_prompt"]).to_dict(),
        "generation": janus.generation_settings((48, 40)).to_dict(),
        "varied": [],
    }
    assert executed["caption"]["extra"] == {"repetition_penalty": REPETITION_PENALTY, "top_k": TOP_K}
    assert executed["generation"]["extra"]["output_width"] == 48
    assert Image.open(out / "images" / "photo0.png").size == (48, 40)


# --- presets for published rows ---------------------------------------------------------------------------


def _published_row_presets() -> list[str]:
    from unified_bench.adapters.registry import PRESETS

    return sorted(p.name for p in PRESETS.values() if p.targets and p.adapter in ("pair", "janus-pro", "emu3", "uae"))


def _tiny_overrides(adapter: str, request) -> dict:
    """The suite's tiny checkpoints in place of a preset's hub ids (the way a user passes a local path)."""
    if adapter == "pair":
        return pair_args(request.getfixturevalue("pair_dirs"))
    if adapter == "janus-pro":
        return janus_args(request.getfixturevalue("janus_dir"))
    if adapter == "emu3":
        return emu3_args(request.getfixturevalue("emu3_dir"))
    return uae_args(request.getfixturevalue("uae_release"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", _published_row_presets())
def test_presets_for_published_rows_run_on_tiny_checkpoints(preset, request, images):
    """Every preset that targets a published row resolves to its adapter, keeps its own values
    for whatever the override does not name, and round-trips on the tiny checkpoints."""
    from unified_bench.adapters.registry import build, resolve

    spec, preset_args = resolve(preset)
    overrides = _tiny_overrides(spec.name, request)
    built = build(preset, overrides)
    try:
        assert built.spec.name == spec.name
        for key, value in preset_args.items():
            assert built.args[key] == overrides.get(key, value)
        assert_round_trip(built.adapter, images)
    finally:
        built.adapter.close()


@pytest.mark.slow
def test_a_published_row_preset_is_one_eval_command(janus_dir, image_folder, tmp_path):
    """`unified-bench eval --model janus-pro-7b` (with a local path for the weights): the run records the
    preset's name, which is how the leaderboard finds the published rows it targets."""
    results = run_eval_cli("janus-pro-7b", [f"{k}={v}" for k, v in janus_args(janus_dir).items()], image_folder, tmp_path / "run")
    assert results["run"]["model"]["name"] == "janus-pro-7b"
    assert results["run"]["model"]["adapter"]["name"] == "janus-pro"
