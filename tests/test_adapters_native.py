"""Unified models the installed libraries run with their own classes (docs/native-models.md).

Each is built tiny from configs with the real classes, saved in the hub repository's layout,
loaded back through the adapter's ``from_pretrained`` path, run through a two-image round
trip and a real ``unified-bench eval``, and spied on: what the adapter reports as executed
must be what the model was called with.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_adapters_hf import (  # noqa: F401 (fixtures)
    DEVICE,
    DTYPE,
    PROMPT,
    _offline,
    assert_caption_report_matches,
    assert_round_trip,
    image_folder,
    images,
    run_eval_cli,
)
from tiny_hf_models import build_tiny_cosmos3, build_tiny_unidiffuser

from unified_bench.adapters.registry import build_adapter, resolve
from unified_bench.core.errors import ConfigError, WeightsNotFoundError

# --- cosmos3 --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cosmos3_dir(tmp_path_factory) -> Path:
    return build_tiny_cosmos3(tmp_path_factory.mktemp("cosmos3") / "Cosmos3-Tiny")


def cosmos3_args(cosmos3_dir) -> dict:
    return {
        "model": str(cosmos3_dir),
        "guardrail": False,  # cosmos_guardrail is not installed here
        "steps": 2,
        "height": 32,
        "width": 32,
        "max_new_tokens": 6,
        "device": DEVICE,
        "dtype": DTYPE,
    }


@pytest.fixture(scope="module")
def cosmos3(cosmos3_dir):
    adapter = build_adapter("cosmos3", cosmos3_args(cosmos3_dir))
    yield adapter
    adapter.close()


def test_cosmos3_presets_point_at_the_hub_checkpoints():
    for preset, repo in (("cosmos3-nano", "nvidia/Cosmos3-Nano"), ("cosmos3-super", "nvidia/Cosmos3-Super")):
        spec, args = resolve(preset)
        assert spec.name == "cosmos3" and args == {"model": repo}
    from unified_bench.adapters.cosmos3 import Cosmos3Config, render_size

    # NVIDIA's Diffusers text-to-image settings, at the square bin of the 720p tier
    defaults = Cosmos3Config()
    assert (defaults.steps, defaults.guidance_scale, defaults.flow_shift) == (35, 6.0, 10.0)
    assert (defaults.width, defaults.height, defaults.negative_prompt) == (960, 960, "")
    assert defaults.guardrail is True and defaults.trust_remote_code is False
    assert render_size(1024, 1000, 16) == (1024, 1008) and render_size(5, 40, 16) == (16, 48)


@pytest.mark.slow
def test_cosmos3_round_trip(cosmos3, images):
    _, generated = assert_round_trip(cosmos3, images)
    assert [img.size for img in generated] == [(32, 32), (32, 32)]
    assert cosmos3.capabilities.native_resolution == (32, 32)
    assert type(cosmos3.model).__name__ == "Cosmos3OmniForConditionalGeneration"  # the Reasoner only
    assert type(cosmos3.pipe).__name__ == "Cosmos3OmniPipeline"
    assert cosmos3.pipe.safety_checker is None
    # a size off the VAE's grid: rendered at the nearest multiple of 8, then resized
    assert cosmos3.generate(["a red cat"], seeds=[1], size=(50, 41))[0].size == (50, 41)


@pytest.mark.slow
def test_cosmos3_eval_cli(cosmos3_dir, image_folder, tmp_path):
    results = run_eval_cli("cosmos3", [f"{k}={v}" for k, v in cosmos3_args(cosmos3_dir).items()], image_folder, tmp_path / "run")
    executed = results["run"]["protocol_executed"]["generation"]
    assert (executed["width"], executed["height"], executed["num_inference_steps"]) == (32, 32, 2)
    assert executed["extra"]["guardrail"] is False


def spy_cosmos3_pipeline(monkeypatch, pipe) -> list[dict]:
    """Record each pipeline call: its kwargs, the steps the scheduler ran with its flow shift,
    the guidance the pipeline applied, the system prompt it tokenized and the frames' size."""
    calls: list[dict] = []
    original_call, original_tokenize = type(pipe).__call__, type(pipe).tokenize_prompt

    def tokenize_prompt(self, *args, **kwargs):
        calls[-1]["use_system_prompt"] = kwargs["use_system_prompt"] if kwargs["use_system_prompt"] is not None else self.config.default_use_system_prompt
        return original_tokenize(self, *args, **kwargs)

    def call(self, *args, **kwargs):
        calls.append({"kwargs": kwargs})
        output = original_call(self, *args, **kwargs)
        frames = np.asarray(output.video)
        calls[-1].update(
            timesteps=len(self.scheduler.timesteps),
            flow_shift=self.scheduler.config.flow_shift,
            scheduler=type(self.scheduler).__name__,
            guidance_scale=self.guidance_scale,
            frames=frames.shape[0],
            size=(frames.shape[-2], frames.shape[-3]),
        )
        return output

    monkeypatch.setattr(type(pipe), "__call__", call)
    monkeypatch.setattr(type(pipe), "tokenize_prompt", tokenize_prompt)
    return calls


@pytest.mark.slow
def test_cosmos3_reports_what_ran(cosmos3, images, monkeypatch):
    assert_caption_report_matches(cosmos3, cosmos3.model, monkeypatch, images, cosmos3.processor.tokenizer)
    calls = spy_cosmos3_pipeline(monkeypatch, cosmos3.pipe)
    for size in (None, (50, 41)):
        calls.clear()
        out = cosmos3.generate(["a red cat"], seeds=[1], size=size)
        report = cosmos3.generation_settings(size)
        (call,) = calls
        kwargs = call["kwargs"]
        assert call["frames"] == kwargs["num_frames"] == 1  # text-to-image
        assert (report.width, report.height) == (kwargs["width"], kwargs["height"]) == call["size"]
        assert report.num_inference_steps == kwargs["num_inference_steps"] == call["timesteps"] == 2
        assert report.guidance_scale == kwargs["guidance_scale"] == call["guidance_scale"] == 6.0
        assert report.scheduler == call["scheduler"] == "UniPCMultistepScheduler"
        assert report.extra["flow_shift"] == call["flow_shift"] == 10.0  # the cookbook's, not the checkpoint's 3.0
        assert report.extra["negative_prompt"] == kwargs["negative_prompt"] == ""
        assert report.extra["system_prompt"] is call["use_system_prompt"] is True
        assert report.extra["resolution_template"] is kwargs["add_resolution_template"] is False
        assert report.extra["guardrail"] is kwargs["enable_safety_check"] is False
        assert report.dtype == str(cosmos3.pipe.transformer.dtype).replace("torch.", "")
    assert call["size"] == (48, 40) and out[0].size == (50, 41)
    assert (report.extra["output_width"], report.extra["output_height"]) == (50, 41)


def test_cosmos3_guardrail_without_its_package_says_what_to_do(cosmos3_dir):
    pytest.importorskip("diffusers")
    from diffusers.utils import is_cosmos_guardrail_available

    if is_cosmos_guardrail_available():
        pytest.skip("cosmos_guardrail is installed")
    with pytest.raises(ConfigError, match="guardrail=false"):
        build_adapter("cosmos3", {**cosmos3_args(cosmos3_dir), "guardrail": True})


def test_cosmos3_missing_checkpoint_is_weights_not_found(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="--model-arg model="):
        build_adapter("cosmos3", {"model": str(tmp_path / "nope"), "guardrail": False, "device": DEVICE})


def test_cosmos3_prompt_reaches_the_reasoner(cosmos3, images, monkeypatch):
    # the instruction is in the Reasoner's chat turn, with the image's placeholder tokens
    seen = []
    original = cosmos3.processor.__class__.__call__

    def processor_call(self, *args, **kwargs):
        seen.append(kwargs["text"][0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cosmos3.processor.__class__, "__call__", processor_call)
    cosmos3.caption(images[:1], prompt=PROMPT, seeds=[3])
    assert PROMPT in seen[0] and "<|vision_start|><|image_pad|><|vision_end|>" in seen[0]
    assert json.dumps(cosmos3.describe())


# --- unidiffuser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unidiffuser_dir(tmp_path_factory) -> Path:
    return build_tiny_unidiffuser(tmp_path_factory.mktemp("unidiffuser") / "unidiffuser-tiny")


def unidiffuser_args(unidiffuser_dir) -> dict:
    return {"model": str(unidiffuser_dir), "steps": 2, "caption_steps": 2, "device": DEVICE, "dtype": DTYPE}


@pytest.fixture(scope="module")
def unidiffuser(unidiffuser_dir):
    adapter = build_adapter("unidiffuser", unidiffuser_args(unidiffuser_dir))
    yield adapter
    adapter.close()


def test_unidiffuser_preset_and_official_defaults():
    from unified_bench.adapters.registry import declared_args
    from unified_bench.adapters.unidiffuser import UniDiffuserAdapter, UniDiffuserConfig, center_square

    spec, args = resolve("unidiffuser-v1")
    assert spec.name == "unidiffuser" and args == {"model": "thu-ml/unidiffuser-v1"}
    defaults = UniDiffuserConfig()
    assert (defaults.steps, defaults.guidance_scale, defaults.caption_steps, defaults.caption_guidance_scale) == (50, 7.0, 50, 7.0)
    assert defaults.data_type == 1 and defaults.trust_remote_code is False
    # captions are not sampled tokens: the sampling arguments of the other adapters are not offered
    names = {arg.name for arg in declared_args(UniDiffuserAdapter)}
    assert not names & {"max_new_tokens", "temperature", "do_sample"} and "caption_steps" in names
    wide = Image.fromarray(np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3))
    assert np.array_equal(np.asarray(center_square(wide, 4)), np.asarray(wide)[:, 2:6])  # the centre, not squeezed


@pytest.mark.slow
def test_unidiffuser_round_trip(unidiffuser, images):
    _, generated = assert_round_trip(unidiffuser, images)
    assert [img.size for img in generated] == [(32, 32), (32, 32)]
    assert unidiffuser.capabilities.native_resolution == (32, 32)  # from the U-ViT and the VAE
    assert unidiffuser.generate(["a red cat"], seeds=[1], size=(48, 40))[0].size == (48, 40)


@pytest.mark.slow
def test_unidiffuser_eval_cli(unidiffuser_dir, image_folder, tmp_path):
    results = run_eval_cli("unidiffuser", [f"{k}={v}" for k, v in unidiffuser_args(unidiffuser_dir).items()], image_folder, tmp_path / "run")
    executed = results["run"]["protocol_executed"]
    assert executed["caption"]["prompt"] == "" and executed["caption"]["extra"]["decoding"] == "beam search"
    assert (executed["generation"]["width"], executed["generation"]["num_inference_steps"]) == (32, 2)


def spy_unidiffuser(monkeypatch, pipe) -> list[dict]:
    """Record each pipeline call (its mode, kwargs, the steps the scheduler ran, the output's
    size) and the arguments each beam search really ran with, defaults included."""
    calls: list[dict] = []
    original_call, decoder = type(pipe).__call__, pipe.text_decoder
    original_beam = decoder.generate_beam
    signature = inspect.signature(original_beam)

    def call(self, *args, **kwargs):
        calls.append({"kwargs": kwargs, "mode": self.mode, "beams": []})
        output = original_call(self, *args, **kwargs)
        calls[-1]["timesteps"] = len(self.scheduler.timesteps)
        if output.images is not None:
            calls[-1]["size"] = (output.images.shape[-2], output.images.shape[-3])
        return output

    def generate_beam(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls[-1]["beams"].append(dict(bound.arguments))
        return original_beam(*args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", call)
    monkeypatch.setattr(decoder, "generate_beam", generate_beam)
    return calls


@pytest.mark.slow
def test_unidiffuser_reports_what_ran(unidiffuser, images, monkeypatch):
    calls = spy_unidiffuser(monkeypatch, unidiffuser.pipe)
    unidiffuser.caption(images[:1], prompt=PROMPT, seeds=[5])
    report = unidiffuser.caption_settings(PROMPT)
    (call,) = calls
    kwargs, (beam,) = call["kwargs"], call["beams"]
    assert call["mode"] == "img2text" and "prompt" not in kwargs  # the instruction never reaches the model
    assert report.prompt == "" and report.do_sample is False and report.temperature == 0.0
    assert report.max_new_tokens == beam["entry_length"]
    assert report.extra["num_beams"] == beam["beam_size"] and report.extra["beam_temperature"] == beam["temperature"]
    assert report.extra["text_latent_steps"] == kwargs["num_inference_steps"] == call["timesteps"] == 2
    assert report.extra["text_latent_guidance_scale"] == kwargs["guidance_scale"] == 7.0
    assert report.extra["data_type"] == kwargs["data_type"] == 1
    assert kwargs["image"].size == unidiffuser.native_size  # center-cropped and resized

    calls.clear()
    out = unidiffuser.generate(["a red cat"], seeds=[1], size=(48, 40))
    report = unidiffuser.generation_settings((48, 40))
    (call,) = calls
    kwargs = call["kwargs"]
    assert call["mode"] == "text2img"
    assert (report.width, report.height) == (kwargs["width"], kwargs["height"]) == call["size"] == (32, 32)
    assert (report.extra["output_width"], report.extra["output_height"]) == out[0].size == (48, 40)
    assert report.num_inference_steps == kwargs["num_inference_steps"] == call["timesteps"] == 2
    assert report.guidance_scale == kwargs["guidance_scale"] == 7.0
    assert report.scheduler == type(unidiffuser.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert report.extra["prompt_max_tokens"] == unidiffuser.pipe.clip_tokenizer.model_max_length == 8
    assert report.dtype == str(unidiffuser.pipe.unet.dtype).replace("torch.", "")
