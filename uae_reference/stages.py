"""The loss of each training stage, for one batch, as plain functions of the model.

**Decoder pretraining** (``decoder``): rectified flow. For a clean sample ``x0``, noise
``e ~ N(0, I)`` and a noise level ``sigma`` from SD3's logit-normal density,
``x_t = (1 - sigma) x0 + sigma e``; the decoder, conditioned on the projected LLM hidden
states of the image's *long* caption, predicts the velocity ``v``; the loss is
``|v - (e - x0)|^2``. A fraction of captions is replaced by the empty caption so the same
network also gives the unconditional velocity used by classifier-free guidance.

**Captioning SFT** (``sft``): cross-entropy of the caption tokens (and the closing
``<|im_end|>``) given the image and the instruction, teacher-forced; targets are short
captions with probability ``1 - sft_long_fraction`` and long captions otherwise (only long
ones during the first ``sft_long_first_steps`` steps).

**Cold start** (``coldstart``): three terms,

- *semantic*: the encoder captions the image (sampled, no gradient: tokens are discrete); the
  caption is run through the encoder's LLM again in the decoder's ``generate`` turn — a
  teacher-forced pass whose last hidden states *are* differentiable functions of the LLM's
  weights — projected, and the decoder predicts ``v`` at a noise level ``sigma ~ U(0,
  semantic_max_sigma)``. Its one-step clean estimate ``x0_hat = x_t - sigma * v`` (exact for
  the straight path ``x_t = (1 - sigma) x0 + sigma e`` whenever ``v = e - x0``; the
  conditional mean of ``x0`` for an MSE-optimal ``v``; a decoder with ``prediction="sample"``
  outputs it directly) is decoded and embedded with the frozen
  semantic network; the loss is ``1 - cos(embed(x0_hat), embed(x0))``. Using ``x0_hat`` rather
  than a full sampling chain keeps the image a *single* differentiable decoder call away from
  the condition, so one backward pass reaches the decoder, the projector and — through the
  hidden states of the caption — the encoder's LLM. (No gradient reaches the vision tower:
  the caption is a discrete bottleneck; improving *what* the caption says is RL's job.)
- *flow*: the stage-1 flow-matching loss on ground-truth long captions, which keeps the
  decoder a valid velocity field while the semantic term pulls on it;
- *caption*: the SFT cross-entropy, which keeps the shared LLM a captioner while the semantic
  term changes its hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uae_reference.config import TrainConfig
from uae_reference.data import ShapesTrainingSet
from uae_reference.flow import flow_matching_loss, noisy_sample, sample_sigmas_logit_normal
from uae_reference.model import UAEModel, uint8_to_unit
from uae_reference.semantic import semantic_distance

#: With a clean-sample-predicting decoder, the training velocity divides by max(sigma, this):
#: the loss is then the flow-matching loss with weight 1 / max(sigma, 0.05)^2 on the x0 error.
VELOCITY_SIGMA_FLOOR = 0.05

#: Loss columns each stage reports (besides the total "loss").
STAGE_TERMS: dict[str, tuple[str, ...]] = {
    "sft": ("caption",),
    "vae": ("reconstruction", "kl"),
    "decoder": ("flow",),
    "coldstart": ("semantic", "flow", "caption"),
}


@dataclass
class Batch:
    """One step's data on one process."""

    images: torch.Tensor  # uint8 [B, 3, H, W] at the decoder's size
    encoder_images: torch.Tensor  # uint8 [B, 3, h, w] at the encoder's size
    latents: torch.Tensor | None
    condition_captions: list[str]  # what the decoder is conditioned on (dropout applied)
    target_captions: list[str]  # what the encoder is taught to say
    caption_seeds: list[int]  # per-sample seeds for sampled captions


def make_batch(data: ShapesTrainingSet, indices: list[int], config: TrainConfig, generator: torch.Generator, step: int) -> Batch:
    """Draw the captions of a batch (long for the decoder, the SFT mixture for the encoder)."""
    condition, target = [], []
    for i in indices:
        long = data.long_caption(i, generator, config.paraphrase_fraction)
        drop = torch.rand((), generator=generator).item() < config.caption_dropout
        condition.append("" if drop else long)
        is_long = torch.rand((), generator=generator).item() < config.sft_long_fraction or step < config.sft_long_first_steps
        target.append(long if is_long else data.short_caption(i, generator, config.paraphrase_fraction, config.short_caption_order))
    seeds = [config.seed * 1_000_003 + step * 65_537 + i for i in indices]
    latents = data.latents[indices] if data.latents is not None else None
    return Batch(data.images[indices], data.encoder_images[indices], latents, condition, target, seeds)


def clean_samples(model: UAEModel, batch: Batch) -> torch.Tensor:
    """The decoder's x0: precomputed latents when the run cached them, else encoded now."""
    if batch.latents is not None:
        return batch.latents.to(model.device)
    with torch.no_grad():
        return model.encode_images(uint8_to_unit(batch.images).to(model.device))


def vae_step_loss(model: UAEModel, batch: Batch, config: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    x = uint8_to_unit(batch.images).to(model.device)
    posterior = model.vae.encode(x).latent_dist
    reconstruction = model.vae.decode(posterior.sample(generator=generator)).sample
    mse = (reconstruction.float() - x.float()).pow(2).mean()
    kl = posterior.kl().mean() / x[0].numel()  # per pixel value, like the MSE
    return {"loss": mse + config.kl_weight * kl, "reconstruction": mse, "kl": kl}


def decoder_step_loss(model: UAEModel, batch: Batch, config: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    x0 = clean_samples(model, batch)
    cond = model.encode_condition(batch.condition_captions)
    sigmas = sample_sigmas_logit_normal(len(x0), mean=config.logit_mean, std=config.logit_std, generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    sigmas = sigmas.to(x0.device)
    x_t = noisy_sample(x0, noise, sigmas)
    if model.settings.prediction == "sample" and config.flow_loss_space == "sample":
        loss = (model.predict_clean(x_t, sigmas, cond).float() - x0.float()).pow(2).mean()
    else:
        v = model.velocity(x_t, sigmas, cond, sigma_floor=VELOCITY_SIGMA_FLOOR)
        loss = flow_matching_loss(v, x0, noise)
    return {"loss": loss, "flow": loss}


def caption_loss(model: UAEModel, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Mean token cross-entropy of ``captions`` given the images (teacher forcing)."""
    prompt_inputs = model.caption_prompt_inputs(images)
    token_ids, mask = model.caption_token_ids(captions)
    logprobs = model.caption_logprobs(prompt_inputs, token_ids, mask)
    return -(logprobs.sum() / mask.sum())


def sft_step_loss(model: UAEModel, batch: Batch, config: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:  # noqa: ARG001
    loss = caption_loss(model, batch.encoder_images, batch.target_captions)
    return {"loss": loss, "caption": loss}


def coldstart_step_loss(
    model: UAEModel, batch: Batch, config: TrainConfig, generator: torch.Generator, semantic: nn.Module
) -> dict[str, torch.Tensor]:
    images = uint8_to_unit(batch.images).to(model.device)
    x0 = clean_samples(model, batch)
    b = len(x0)

    # semantic term: the encoder's own caption -> decoder -> x0_hat -> frozen embedding
    if config.coldstart_captions == "sampled":
        was_training = model.training
        model.eval()
        captions = model.sample_captions(batch.encoder_images, seeds=batch.caption_seeds).texts
        model.train(was_training)
    else:
        captions = [c or "" for c in batch.condition_captions]
    cond = model.encode_condition(captions)  # differentiable w.r.t. the LLM (teacher-forced tokens)
    sigmas = (torch.rand(b, generator=generator) * config.semantic_max_sigma).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x0_hat = model.predict_clean(noisy_sample(x0, noise, sigmas), sigmas, cond)
    with torch.no_grad():
        reference = semantic(images)
    sem = semantic_distance(semantic(model.decode_latents(x0_hat)), reference)

    # flow term on ground-truth long captions (as in decoder pretraining)
    flow = decoder_step_loss(model, batch, config, generator)["flow"]
    # caption term (as in SFT)
    ce = caption_loss(model, batch.encoder_images, batch.target_captions)

    loss = config.semantic_weight * sem + config.flow_weight * flow + config.caption_weight * ce
    return {"loss": loss, "semantic": sem, "flow": flow, "caption": ce}


class StageModule(nn.Module):
    """The model plus its stage's loss, as one module (what DistributedDataParallel wraps)."""

    def __init__(self, model: UAEModel, config: TrainConfig, semantic: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        # not a submodule: frozen, and it must not be wrapped or saved with the model
        self._semantic = [semantic] if semantic is not None else []

    def forward(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        stage = self.config.stage
        if stage == "decoder":
            return decoder_step_loss(self.model, batch, self.config, generator)
        if stage == "sft":
            return sft_step_loss(self.model, batch, self.config, generator)
        if stage == "vae":
            return vae_step_loss(self.model, batch, self.config, generator)
        return coldstart_step_loss(self.model, batch, self.config, generator, self._semantic[0])


def configure_trainable(model: UAEModel, config: TrainConfig) -> list[nn.Parameter]:
    """Freeze everything, then enable (or add LoRA to) what this stage trains; return those params.

    - sft: the whole encoder (vision tower and LLM), or LoRA on its LLM when ``encoder_lora``;
    - decoder: the whole decoder and the projector; the encoder stays frozen;
    - coldstart: LoRA on the encoder's LLM and on the decoder's attention projections (or the
      whole module when its LoRA setting is None), and the whole projector.
    """
    from uae_reference.lora import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, add_lora

    model.requires_grad_(False)
    if config.stage == "vae":
        if model.vae is None:
            raise ValueError("the vae stage needs a model with a VAE (latent_space='vae')")
        model.vae.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]
    if config.stage in ("sft", "coldstart"):
        if config.encoder_lora is not None:
            add_lora(model.encoder, config.encoder_lora, ENCODER_LORA_TARGETS)
        else:
            model.encoder.requires_grad_(True)
    if config.stage in ("decoder", "coldstart"):
        model.projector.requires_grad_(True)
        if config.stage == "coldstart" and config.decoder_lora is not None:
            add_lora(model.decoder, config.decoder_lora, DECODER_LORA_TARGETS)
        else:
            model.decoder.requires_grad_(True)
    if config.stage == "coldstart" and config.encoder_lora is None:
        # the semantic loss cannot reach the vision tower; train the LLM only
        model.encoder.model.visual.requires_grad_(False)
    if model.vae is not None:
        model.vae.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]
