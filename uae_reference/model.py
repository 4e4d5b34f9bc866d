"""The UAE model: a Qwen2.5-VL encoder, an MLP projector and an SD3 MMDiT decoder.

Read it top to bottom as the round trip it implements::

    image --encoder (Qwen2.5-VL, user turn)--> caption tokens          sample_captions()
    caption --encoder LLM ("generate" turn)--> last hidden states      encode_condition()
    hidden states --projector--> joint-attention tokens + pooled vector
    noise --decoder (SD3Transformer2DModel), Euler steps in sigma--> latents    sample_latents()
    latents --codec (pixels or AutoencoderKL)--> image                 decode_latents()

The same class runs the tiny preset (small configs trained here from scratch) and the paper
preset (Qwen/Qwen2.5-VL-3B-Instruct + stabilityai/stable-diffusion-3.5-large); only the
components handed to the constructor differ.

Two methods exist for reinforcement learning as much as for evaluation:

- :meth:`UAEModel.sample_captions` draws each caption from ``softmax(logits / T)`` with a
  generator of its own (so a caption depends on its image and seed, not on the batch) and
  returns the per-token log-probabilities of the tokens it drew;
  :meth:`UAEModel.caption_logprobs` recomputes them differentiably by teacher forcing. With
  ``exact=True`` (what RL uses) nothing else shapes the distribution: the checkpoint's own
  ``generation_config`` cannot add a repetition penalty or an n-gram ban, and a guard raises
  if ``generate`` would run any logits processor besides the sampler.
- :meth:`UAEModel.sample_latents` is a step-wise sampler whose step function can be replaced
  (the default is the deterministic Euler step of ``FlowMatchEulerDiscreteScheduler``; an SDE
  step with a log-probability plugs in the same way).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from uae_reference.flow import NUM_TRAIN_TIMESTEPS, classifier_free_guidance, euler_step, predicted_clean_sample
from uae_reference.projector import UAEProjector
from unified_bench.core.errors import ConfigError

SETTINGS_FILE = "uae_config.json"


@dataclass
class UAESettings:
    """How a checkpoint captions and generates; saved next to the weights as uae_config.json."""

    #: side of the square images the decoder generates
    image_size: int = 64
    #: side of the square images the encoder reads (0: the processor decides, as Qwen2.5-VL does
    #: for real photos); captioned images are resized to it first
    encoder_image_size: int = 0
    #: "pixel": the decoder denoises RGB in [-1, 1] directly; "vae": AutoencoderKL latents
    latent_space: str = "pixel"
    #: instruction of the captioning turn
    caption_prompt: str = "Describe the image."
    #: chat role of the turn whose hidden states condition the decoder (official release: "generate")
    generate_role: str = "generate"
    #: most caption tokens sampled (official demo: 512)
    max_caption_tokens: int = 64
    #: tokens of the decoder's text input: every "generate" turn is padded (or cut) to this length,
    #: as SD3 pads its T5 input, so an image never depends on the other captions of its batch
    condition_length: int = 80
    #: sampling temperature of captions; 0 means greedy (official demo: 0.7)
    caption_temperature: float = 0.7
    #: Euler steps of the decoder (official demo: 40)
    num_inference_steps: int = 20
    #: what the transformer outputs: "velocity" (SD3, the paper) or "sample" (the clean image x0;
    #: the tiny pixel-space preset, see uae_reference.presets); the sampler always integrates v
    prediction: str = "velocity"
    #: classifier-free guidance scale; 1 disables the unconditional pass (official demo: 5.0)
    guidance_scale: float = 1.0
    #: caption of the unconditional branch of guidance
    negative_caption: str = ""
    #: name of the preset that built the model (informational)
    preset: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UAESettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class CaptionSample:
    """Captions drawn from the encoder, with what RL needs to score and re-score them."""

    texts: list[str]
    #: [B, T] drawn token ids (EOS included; pad after it)
    token_ids: torch.Tensor
    #: [B, T] 1 for real tokens (up to and including EOS), 0 for padding
    mask: torch.Tensor
    #: [B, T] log-probabilities of the drawn tokens under softmax(logits / temperature), from the
    #: raw logits: the distribution the tokens were drawn from when sampled with ``exact=True``
    logprobs: torch.Tensor
    temperature: float


@dataclass
class Condition:
    """The decoder's text input for a batch of captions."""

    tokens: torch.Tensor  # [B, L, joint_attention_dim]
    pooled: torch.Tensor  # [B, pooled_projection_dim]
    mask: torch.Tensor  # [B, L]

    def repeat(self, n: int) -> Condition:
        return Condition(self.tokens.repeat(n, 1, 1), self.pooled.repeat(n, 1), self.mask.repeat(n, 1))


#: A sampler step: (x, v, sigma, sigma_next, generators) -> (x_next, log-probability or None).
StepFn = Callable[[torch.Tensor, torch.Tensor, float, float, Sequence[torch.Generator]], tuple[torch.Tensor, torch.Tensor | None]]


def euler_step_fn(x, v, sigma, sigma_next, generators):  # noqa: ARG001 - StepFn signature
    """The deterministic Euler step (what ``FlowMatchEulerDiscreteScheduler.step`` computes)."""
    return euler_step(x, v, sigma, sigma_next), None


@dataclass
class LatentTrajectory:
    """Result of :meth:`UAEModel.sample_latents`."""

    latents: torch.Tensor  # [B, C, h, w] final sample
    sigmas: list[float]  # the schedule, num_steps + 1 values ending at 0
    steps: list[torch.Tensor] = field(default_factory=list)  # x at each sigma (when kept)
    logprobs: torch.Tensor | None = None  # [B, num_steps] when the step function returns them


def images_to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> float tensor [B, 3, size, size] in [-1, 1] (bicubic resize when needed)."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.uint8))
    return uint8_to_unit(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Area-average when shrinking (close to the Shapes renderer's supersampling), bicubic when growing."""
    if image.size == tuple(size):
        return image
    shrinking = image.width >= size[0] and image.height >= size[1]
    return image.resize(tuple(size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)


def uint8_to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float in [-1, 1]."""
    return pixels.float().div(127.5).sub(1.0)


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    """Float [B, 3, H, W] in [-1, 1] -> RGB PIL images (values clipped)."""
    pixels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy(), "RGB") for p in pixels]


def first_eos_mask(token_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 for tokens up to and including the first EOS of each row, 0 after it."""
    is_eos = token_ids.eq(eos_id).long()
    seen_before = is_eos.cumsum(dim=1) - is_eos  # EOS count strictly before each position
    return seen_before.eq(0).long()


def _forget_call_settings(tokenizer: Any) -> None:
    """Clear what the last tokenizer call left behind before the tokenizer is saved.

    A fast tokenizer keeps the truncation and padding of its last call in its backend (here the
    condition's fixed ``condition_length``); saved, they come back as every later call's default
    ``max_length``, and transformers warns on each padded captioning batch. Each call sets its
    own settings, so a saved tokenizer needs none.
    """
    tokenizer.init_kwargs.pop("max_length", None)  # already loaded from an older checkpoint
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()


class InexactSamplingError(ConfigError):
    """Sampling would draw from a distribution other than ``softmax(logits / T)``."""


#: Generation settings that add a logits processor, each at the value that turns it off. A call
#: that leaves one of them unset (None) gets the checkpoint's ``generation_config`` value in its
#: place (transformers fills every unset field from it), so exact sampling sets them all.
#: The sampling warpers (top-k, top-p, min-p, typical, epsilon, eta) need no entry: they run only
#: with ``do_sample=True``, and the captioner always passes ``do_sample=False`` (its own
#: :class:`_PerRowSampler` draws the token).
NEUTRAL_PROCESSOR_SETTINGS: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": 0,
    "guidance_scale": 1.0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}


class _PerRowSampler:
    """Logits processor that draws row i's next token from softmax(logits / T) with generator i.

    It returns scores that are 0 at the drawn token and -inf elsewhere, so greedy decoding in
    ``generate`` keeps exactly that token; the raw logits come back through ``output_logits``.
    One generator per row makes a caption independent of the batch it was drawn in.
    """

    def __init__(self, generators: Sequence[torch.Generator], temperature: float) -> None:
        self.generators = list(generators)
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1).cpu()
        drawn = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, drawn.to(scores.device), 0.0)
        return forced


class UAEModel(nn.Module):
    """Encoder, projector and decoder of UAE, with the glue between them."""

    def __init__(
        self,
        *,
        encoder: nn.Module,
        processor: Any,
        projector: UAEProjector,
        decoder: nn.Module,
        scheduler: Any,
        settings: UAESettings,
        vae: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder  # transformers Qwen2_5_VLForConditionalGeneration
        self.projector = projector
        self.decoder = decoder  # diffusers SD3Transformer2DModel
        self.vae = vae  # diffusers AutoencoderKL, or None in pixel space
        self.processor = processor  # Qwen2_5_VLProcessor (not a module: holds no weights)
        self.scheduler = scheduler  # diffusers FlowMatchEulerDiscreteScheduler
        self.settings = settings
        if (vae is None) != (settings.latent_space == "pixel"):
            raise ValueError(f"latent_space={settings.latent_space!r} does not match vae={type(vae).__name__}")

    # --- small accessors ------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the decoder's sample."""
        cfg = self.decoder.config
        side = self.settings.image_size // (1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1))
        return (cfg.in_channels, side, side)

    # --- encoder: image -> caption ----------------------------------------------------------

    def caption_prompt_text(self, prompt: str | None = None) -> str:
        """The chat-formatted captioning turn (image placeholder + instruction), generation prompt open."""
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt or self.settings.caption_prompt}]}
        ]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def caption_prompt_inputs(self, images: Sequence[Image.Image] | torch.Tensor, prompt: str | None = None) -> dict[str, torch.Tensor]:
        """Processor inputs of the captioning turn for a batch of images (left-padded).

        ``images``: PIL images (resized to ``encoder_image_size`` when it is set) or a uint8
        tensor [B, 3, H, W] already at that size.
        """
        size = self.settings.encoder_image_size
        if size and not isinstance(images, torch.Tensor):
            images = [img if isinstance(img, torch.Tensor) else resize_image(img.convert("RGB"), (size, size)) for img in images]
        text = self.caption_prompt_text(prompt)
        batch = self.processor(
            text=[text] * len(images), images=list(images), return_tensors="pt", padding=True, padding_side="left"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def caption_token_ids(self, captions: Sequence[str], max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption texts -> answer token ids with EOS appended, right-padded, and their mask."""
        limit = max_tokens or self.settings.max_caption_tokens
        rows = []
        for text in captions:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: limit - 1]
            rows.append(ids + [self.eos_token_id])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def caption_logprobs(
        self, prompt_inputs: dict[str, torch.Tensor], token_ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Teacher-forced log-probabilities [B, T] of ``token_ids`` after the captioning prompt.

        Differentiable: the SFT loss is ``-mean(logprobs[mask])`` and GRPO's ratio uses them.
        """
        prompt_len = prompt_inputs["input_ids"].shape[1]
        inputs = dict(prompt_inputs)
        inputs["input_ids"] = torch.cat([prompt_inputs["input_ids"], token_ids], dim=1)
        inputs["attention_mask"] = torch.cat([prompt_inputs["attention_mask"], mask.to(prompt_inputs["attention_mask"].dtype)], dim=1)
        if "mm_token_type_ids" in prompt_inputs:  # the caption is text (type 0)
            inputs["mm_token_type_ids"] = torch.cat([prompt_inputs["mm_token_type_ids"], torch.zeros_like(token_ids)], dim=1)
        logits = self.encoder(**inputs, use_cache=False).logits
        # the logit at position p predicts token p + 1
        step_logits = logits[:, prompt_len - 1 : prompt_len - 1 + token_ids.shape[1]].float() / temperature
        logprobs = torch.log_softmax(step_logits, dim=-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
        return logprobs * mask

    def caption_sampling_overrides(self) -> dict[str, Any]:
        """Sampling settings the encoder's own ``generation_config`` adds to every caption call
        (transformers merges it into the config ``sample_captions`` passes), where they differ
        from transformers' defaults; they shape the distribution the tokens are drawn from."""
        from transformers import GenerationConfig

        default, own = GenerationConfig(), self.encoder.generation_config
        keys = ("top_k", "top_p", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size", "length_penalty")
        return {k: getattr(own, k) for k in keys if getattr(own, k, None) != getattr(default, k, None)}

    @torch.no_grad()
    def sample_captions(
        self,
        images: Sequence[Image.Image] | torch.Tensor,
        *,
        seeds: Sequence[int],
        prompt: str | None = None,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        exact: bool = False,
    ) -> CaptionSample:
        """Draw one caption per image (temperature 0: greedy) with per-token log-probabilities.

        ``exact=False`` (evaluation, the benchmark adapter) follows the checkpoint's own
        ``generation_config`` as the official scripts do: a repetition penalty or an n-gram ban
        it sets shapes the draw (:meth:`caption_sampling_overrides` records them), and the
        returned log-probabilities, taken from the raw logits, are then not those of the draw.
        ``exact=True`` (RL) draws from ``softmax(logits / T)`` alone, so the returned and the
        teacher-forced log-probabilities (:meth:`caption_logprobs`) describe the distribution
        the tokens came from; it raises :class:`InexactSamplingError` if ``generate`` would run
        any other logits processor.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        temperature = self.settings.caption_temperature if temperature is None else temperature
        inputs = self.caption_prompt_inputs(images, prompt)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens or self.settings.max_caption_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            **(NEUTRAL_PROCESSOR_SETTINGS if exact else {}),
        )
        if exact:
            self._check_no_logits_processors(config, inputs)
        processors = LogitsProcessorList()
        if temperature > 0:
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
            processors.append(_PerRowSampler(generators, temperature))
        out = self.encoder.generate(**inputs, generation_config=config, logits_processor=processors)
        token_ids = out.sequences[:, inputs["input_ids"].shape[1] :]
        mask = first_eos_mask(token_ids, self.eos_token_id)
        token_ids = token_ids.masked_fill(mask.eq(0), self.pad_token_id)
        logits = torch.stack(out.logits, dim=1)[:, : token_ids.shape[1]].float()
        scale = temperature if temperature > 0 else 1.0
        logprobs = torch.log_softmax(logits / scale, dim=-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1) * mask
        texts = self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
        return CaptionSample([t.strip() for t in texts], token_ids, mask, logprobs, temperature)

    def _check_no_logits_processors(self, config: Any, inputs: dict[str, torch.Tensor]) -> None:
        """Raise unless ``generate(generation_config=config)`` builds no logits processor of its own.

        Asks transformers the way ``generate`` does (the checkpoint's ``generation_config``
        merged into ``config``, then the processors those settings add) through
        ``GenerationMixin``'s own preparation methods, so a setting this module does not know
        of is caught too. They are private; ``tests/test_rl_sampling.py`` pins them.
        """
        from transformers import LogitsProcessorList

        encoder = self.encoder
        merged, _ = encoder._prepare_generation_config(config)
        encoder._prepare_special_tokens(merged, True, device=inputs["input_ids"].device)
        active = encoder._get_logits_processor(
            generation_config=merged,
            input_ids_seq_length=inputs["input_ids"].shape[-1],
            encoder_input_ids=inputs["input_ids"],
            logits_processor=LogitsProcessorList(),
            device=inputs["input_ids"].device,
            model_kwargs={"attention_mask": inputs["attention_mask"]},
        )
        if len(active):
            names = ", ".join(type(p).__name__ for p in active)
            raise InexactSamplingError(
                f"exact caption sampling would also run {names}, which the encoder's generation_config "
                f"({self.caption_sampling_overrides() or merged.to_diff_dict()}) adds: the drawn tokens would not "
                "follow softmax(logits / T), the distribution the RL ratio and KL are computed from. Remove the "
                "setting from the checkpoint's encoder/generation_config.json, or sample with exact=False "
                "(evaluation only)."
            )

    # --- encoder LLM: caption -> decoder condition ------------------------------------------

    def condition_token_ids(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions wrapped in a ``generate`` turn (as the official release does), right-padded."""
        texts = [
            self.processor.apply_chat_template(
                [{"role": self.settings.generate_role, "content": [{"type": "text", "text": c}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for c in captions
        ]
        batch = self.tokenizer(
            texts,
            add_special_tokens=False,
            padding="max_length",
            truncation=True,
            max_length=self.settings.condition_length,
            padding_side="right",
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def encode_condition(self, captions: Sequence[str]) -> Condition:
        """Caption texts -> projected LLM last hidden states (differentiable w.r.t. the LLM)."""
        input_ids, attention_mask = self.condition_token_ids(captions)
        hidden = self.encoder.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        tokens, pooled = self.projector(hidden, attention_mask)
        return Condition(tokens, pooled, attention_mask)

    # --- decoder: condition -> image ---------------------------------------------------------

    def decoder_output(self, x_t: torch.Tensor, sigmas: torch.Tensor, cond: Condition) -> torch.Tensor:
        """The raw transformer output (a velocity or a clean sample, per ``settings.prediction``)."""
        timestep = sigmas.to(x_t.dtype).expand(x_t.shape[0]) * NUM_TRAIN_TIMESTEPS
        return self.decoder(
            hidden_states=x_t,
            encoder_hidden_states=cond.tokens.to(x_t.dtype),
            pooled_projections=cond.pooled.to(x_t.dtype),
            timestep=timestep,
        ).sample

    def velocity(self, x_t: torch.Tensor, sigmas: torch.Tensor, cond: Condition, *, sigma_floor: float = 1e-4) -> torch.Tensor:
        """The velocity ``v(x_t, sigma | caption)`` the sampler integrates.

        With ``prediction="sample"`` the network predicts ``x0`` and ``v = (x_t - x0_hat) / sigma``
        (the straight path's velocity through ``x0_hat``); ``sigma_floor`` bounds the division
        (training uses 0.05, as JiT does, so the loss weight ``1 / sigma^2`` stays finite).
        """
        out = self.decoder_output(x_t, sigmas, cond)
        if self.settings.prediction == "velocity":
            return out
        s = sigmas.to(x_t.dtype).expand(x_t.shape[0]).clamp(min=sigma_floor).view(-1, *([1] * (x_t.ndim - 1)))
        return (x_t - out) / s

    def predict_clean(self, x_t: torch.Tensor, sigmas: torch.Tensor, cond: Condition) -> torch.Tensor:
        """The one-step clean estimate ``x0_hat`` (direct for ``prediction="sample"``, else ``x_t - sigma v``)."""
        out = self.decoder_output(x_t, sigmas, cond)
        if self.settings.prediction == "sample":
            return out
        return predicted_clean_sample(x_t, out, sigmas.to(x_t.dtype).expand(x_t.shape[0]))

    def guided_velocity(
        self, x_t: torch.Tensor, sigma: float, cond: Condition, uncond: Condition | None, guidance_scale: float
    ) -> torch.Tensor:
        """Velocity with classifier-free guidance (one batched pass for both branches)."""
        sigmas = torch.tensor([sigma], device=x_t.device)
        if uncond is None or guidance_scale == 1.0:
            return self.velocity(x_t, sigmas, cond)
        both = Condition(
            torch.cat([cond.tokens, uncond.tokens]), torch.cat([cond.pooled, uncond.pooled]), torch.cat([cond.mask, uncond.mask])
        )
        v = self.velocity(torch.cat([x_t, x_t]), sigmas, both)
        v_cond, v_uncond = v.chunk(2)
        return classifier_free_guidance(v_uncond, v_cond, guidance_scale)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """Standard normal starting points, one generator per sample (batch-independent)."""
        shape = self.latent_shape
        noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(noise).to(self.device, next(self.decoder.parameters()).dtype)

    def sigma_schedule(self, num_steps: int) -> list[float]:
        """The scheduler's sigmas for ``num_steps`` Euler steps (num_steps + 1 values, ending at 0)."""
        self.scheduler.set_timesteps(num_steps)
        return [float(s) for s in self.scheduler.sigmas]

    def sample_latents(
        self,
        cond: Condition,
        *,
        seeds: Sequence[int],
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        step_fn: StepFn = euler_step_fn,
        keep_steps: bool = False,
        initial_noise: torch.Tensor | None = None,
    ) -> LatentTrajectory:
        """Integrate from noise (sigma = 1) to a sample (sigma = 0), one ``step_fn`` per step.

        ``seeds`` seed each row's starting noise and its stochastic steps' generator;
        ``initial_noise`` [B, C, h, w] replaces the starting noise (the generators still come
        from ``seeds``).
        """
        num_steps = num_steps or self.settings.num_inference_steps
        guidance_scale = self.settings.guidance_scale if guidance_scale is None else guidance_scale
        uncond = None
        if guidance_scale != 1.0:
            uncond = self.encode_condition([self.settings.negative_caption] * len(seeds))
        sigmas = self.sigma_schedule(num_steps)
        generators = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]  # for stochastic steps
        x = self.initial_noise(seeds) if initial_noise is None else initial_noise
        steps, logprobs = ([x] if keep_steps else []), []
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            v = self.guided_velocity(x, sigma, cond, uncond, guidance_scale)
            x, logprob = step_fn(x, v, sigma, sigma_next, generators)
            if keep_steps:
                steps.append(x)
            if logprob is not None:
                logprobs.append(logprob)
        return LatentTrajectory(x, sigmas, steps, torch.stack(logprobs, dim=1) if logprobs else None)

    # --- codec: image <-> decoder space ------------------------------------------------------

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the decoder's clean sample x0 (identity in pixel space).

        The VAE posterior's mean (not a draw from it): the same image always gives the same
        latents, so cached latents, resumed runs and ranks agree.
        """
        if self.vae is None:
            return x
        cfg = self.vae.config
        latents = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()
        return (latents - (cfg.shift_factor or 0.0)) * cfg.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's sample -> images in [-1, 1] (differentiable; not clipped)."""
        if self.vae is None:
            return latents
        cfg = self.vae.config
        return self.vae.decode(latents.to(self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)).sample

    # --- the round trip ----------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        captions: Sequence[str],
        *,
        seeds: Sequence[int],
        num_steps: int | None = None,
        guidance_scale: float | None = None,
    ) -> list[Image.Image]:
        """Captions -> PIL images at ``settings.image_size``."""
        cond = self.encode_condition(captions)
        trajectory = self.sample_latents(cond, seeds=seeds, num_steps=num_steps, guidance_scale=guidance_scale)
        return tensor_to_images(self.decode_latents(trajectory.latents))

    @torch.no_grad()
    def caption(self, images: Sequence[Image.Image], *, seeds: Sequence[int], prompt: str | None = None) -> list[str]:
        """Images -> captions (sampled at ``settings.caption_temperature``)."""
        return self.sample_captions(images, seeds=seeds, prompt=prompt).texts

    # --- saving and loading ------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the checkpoint folder: encoder/, processor/, projector/, decoder/, scheduler/, [vae/], uae_config.json."""
        from uae_reference.lora import merge_lora

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        merge_lora(self)  # a shipped checkpoint is plain weights; LoRA is a training-time device
        self.encoder.save_pretrained(path / "encoder")
        _forget_call_settings(self.processor.tokenizer)
        self.processor.save_pretrained(path / "processor")
        self.projector.save_pretrained(path / "projector")
        self.decoder.save_pretrained(path / "decoder")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(path / "vae")
        (path / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> UAEModel:
        """Load a folder written by :meth:`save_pretrained`."""
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        path = Path(path)
        settings = UAESettings.from_dict(json.loads((path / SETTINGS_FILE).read_text()))
        model = cls(
            encoder=Qwen2_5_VLForConditionalGeneration.from_pretrained(path / "encoder", dtype=dtype),
            processor=AutoProcessor.from_pretrained(path / "processor"),
            projector=UAEProjector.from_pretrained(path / "projector", torch_dtype=dtype),
            decoder=SD3Transformer2DModel.from_pretrained(path / "decoder", torch_dtype=dtype),
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(path / "scheduler"),
            vae=AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype) if (path / "vae").exists() else None,
            settings=settings,
        )
        return model.to(device).eval()



#: Shipped checkpoints store their weights in this dtype (they load back as float32): half the
#: bytes of float32 for a rounding of ~5e-4 relative. Every figure quoted for a shipped
#: checkpoint is measured on the stored (rounded) weights.
EXPORT_DTYPE = torch.float16


def export_checkpoint(src: str | Path, dst: str | Path, *, dtype: torch.dtype = EXPORT_DTYPE) -> Path:
    """Copy the checkpoint folder ``src`` to ``dst`` with its weights stored as ``dtype``.

    Writes into ``dst.tmp`` first and swaps it in at the end, so an interrupted export never
    leaves a half-written checkpoint where a working one was.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    UAEModel.from_pretrained(src, dtype=dtype).save_pretrained(tmp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst
