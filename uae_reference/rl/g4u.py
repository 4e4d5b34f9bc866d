"""Generation for Understanding (G4U): GRPO on the encoder's captions, the decoder frozen.

For each training image, read top to bottom:

1. **Rollout** (:func:`g4u_rollout`, no gradient): the encoder samples a group of ``G``
   captions from ``softmax(logits / T)`` alone (each with its own seed; ``exact=True``: the
   checkpoint's own repetition penalty or n-gram ban cannot reshape the draw, so the policy
   that is scored is the one that sampled); the frozen decoder reconstructs
   every caption with its deterministic Euler sampler, all members of a group from the same
   initial noise (so rewards within a group differ by what the captions say, not by noise);
   the reward is the metric's similarity of reconstruction and original. The sampling
   policy's and the reference policy's per-token log-probabilities are recomputed by teacher
   forcing, so the ratio of the first update is exactly 1.
2. **Advantages**: rewards minus their group's mean, over a std (:func:`group_advantages`).
3. **Update** (:func:`g4u_loss`, ``updates_per_step`` minibatches): per token, the clipped
   surrogate plus ``beta`` times the k3 KL to the reference, reduced by the configured
   normalisation. Only the encoder's weights (its LLM's LoRA adapters, or the whole encoder)
   receive gradients; a caption is discrete, so the reward reaches the encoder only through
   the policy gradient.

The condition the decoder reads is the encoder LLM's hidden states of the caption, so the
reconstruction uses the *current* encoder, exactly as evaluation will (the KL term keeps that
drift small). See docs/unified-grpo.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from uae_reference.data import ShapesTrainingSet
from uae_reference.model import UAEModel, tensor_to_images
from uae_reference.rl.config import G4UConfig
from uae_reference.rl.grpo import aggregate, clipped_surrogate, kl_k3, masked_mean
from uae_reference.rl.rewards import ReconstructionReward
from uae_reference.rl.rollout import (
    CAPTION_STREAM,
    NOISE_STREAM,
    ReferencePolicy,
    caption_lengths,
    caption_stats,
    encoder_inputs,
    end_at_special_tokens,
    rollout_seed,
    row_chunks,
    summarise_captions,
)


@dataclass
class G4URollout:
    """One step's captions, their rewards and the log-probabilities the update needs."""

    indices: list[int]  # training-set index of each prompt [B]
    images: torch.Tensor  # uint8 [B * G, 3, H, W] encoder inputs, each repeated G times (group-major)
    texts: list[str]  # [B * G]
    token_ids: torch.Tensor  # [B * G, T]
    mask: torch.Tensor  # [B * G, T]
    old_logprobs: torch.Tensor  # [B * G, T] under the sampling policy
    ref_logprobs: torch.Tensor | None  # [B * G, T] under the reference policy (beta > 0)
    rewards: torch.Tensor  # [B, G]
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reconstructions: list = field(default_factory=list)  # PIL images (kept for the examples log)
    ref_condition: torch.Tensor | None = None  # [B * G, L, D] reference LLM states of the generate turns (anchor > 0)


def render_captions(texts: list[str], seeds: list[int], size: int) -> list:
    """An ideal frozen decoder for Shapes: parse each caption, fill what it leaves unsaid from the
    seed, render exactly (what ``shapes-oracle`` does with a caption). Reads only the caption."""
    from unified_bench.tracks.shapes.captions import parse
    from unified_bench.tracks.shapes.render import blank_image, render
    from unified_bench.tracks.shapes.scene import complete_scene

    images = []
    for text, seed in zip(texts, seeds):
        scene = complete_scene(parse(text), seed)
        images.append(render(scene, size, jitter_seed=seed) if scene.objects else blank_image(size))
    return images


def _teacher_forced(model: UAEModel, images: torch.Tensor, token_ids: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    inputs = model.caption_prompt_inputs(list(images))
    return model.caption_logprobs(inputs, token_ids, mask, temperature=temperature)


@torch.no_grad()
def g4u_rollout(
    model: UAEModel,
    reference: ReferencePolicy,
    reward: ReconstructionReward,
    data: ShapesTrainingSet,
    indices: list[int],
    config: G4UConfig,
    step: int,
) -> G4URollout:
    """Sample G captions per image, reconstruct them with the frozen decoder, score them."""
    group = config.group_size
    timings: dict[str, float] = {}
    was_training = model.training
    model.eval()

    # 1. captions from the current policy
    started = time.perf_counter()
    images = encoder_inputs(data, indices).repeat_interleave(group, dim=0)
    seeds = [rollout_seed(config.seed, step, i, g, CAPTION_STREAM) for i in indices for g in range(group)]
    # exact: drawn from softmax(logits / T) alone, the distribution the ratio and the KL score
    sample = model.sample_captions(
        list(images), seeds=seeds, temperature=config.temperature, max_new_tokens=config.max_caption_tokens, exact=True
    )
    sample = end_at_special_tokens(model, sample)
    parts = row_chunks(len(sample.texts), config.rollout_batch_size)  # memory, not the draws

    def teacher_forced() -> torch.Tensor:
        return torch.cat([_teacher_forced(model, images[p], sample.token_ids[p], sample.mask[p], config.temperature) for p in parts])

    old = teacher_forced()
    # the reference policy's view of the same captions: token log-probs (KL) and the decoder's
    # condition (anchor), in one pass with the reference weights swapped in
    ref = ref_condition = None
    if config.beta > 0 or config.condition_anchor > 0:
        with reference(model.encoder) as encoder:
            swapped = model.encoder
            model.encoder = encoder
            try:
                if config.beta > 0:
                    ref = teacher_forced()
                if config.condition_anchor > 0:
                    with torch.no_grad():
                        ref_condition = torch.cat([condition_hidden(model, sample.texts[p])[0] for p in parts])
            finally:
                model.encoder = swapped
    timings["seconds_sampling"] = time.perf_counter() - started

    # 2. reconstructions by the frozen decoder (one initial noise per group)
    started = time.perf_counter()
    noise_seeds = [rollout_seed(config.seed, step, i, 0, NOISE_STREAM) for i in indices for _ in range(group)]
    if config.reconstruction == "renderer":
        reconstructions = render_captions(sample.texts, noise_seeds, model.settings.image_size)
    else:
        reconstructions = []
        for part in parts:
            cond = model.encode_condition(sample.texts[part])
            trajectory = model.sample_latents(cond, seeds=noise_seeds[part], num_steps=config.reconstruction_steps or None)
            reconstructions += tensor_to_images(model.decode_latents(trajectory.latents))
    timings["seconds_decoding"] = time.perf_counter() - started

    # 3. rewards: similarity of each reconstruction with its original
    started = time.perf_counter()
    originals = tensor_to_images(data.images[indices].float().div(127.5).sub(1.0))
    if reward.is_embedding:
        reference_embeddings = reward.embed(originals).repeat_interleave(group, dim=0)
        scores = reward.score(reconstructions, [originals[k // group] for k in range(len(reconstructions))], reference_embeddings)
    else:
        scores = reward.score(reconstructions, [originals[k // group] for k in range(len(reconstructions))])
    timings["seconds_reward"] = time.perf_counter() - started

    lengths = caption_lengths(sample.token_ids, sample.mask, model.eos_token_id)
    stats = summarise_captions(
        [caption_stats(text, n, data.scenes[indices[k // group]]) for k, (text, n) in enumerate(zip(sample.texts, lengths))]
    )
    model.train(was_training)
    return G4URollout(
        indices=list(indices),
        images=images,
        texts=sample.texts,
        token_ids=sample.token_ids,
        mask=sample.mask,
        old_logprobs=old,
        ref_logprobs=ref,
        ref_condition=ref_condition,
        rewards=scores.view(len(indices), group),
        stats=stats,
        timings=timings,
        reconstructions=reconstructions,
    )


def g4u_loss(
    model: UAEModel,
    rollout: G4URollout,
    rows: torch.Tensor,
    advantages: torch.Tensor,
    config: G4UConfig,
    *,
    policy_weight: float = 1.0,
    anchor_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The GRPO loss of the rollout rows ``rows`` (advantages given per row).

    ``policy_weight`` and ``anchor_weight`` scale the two terms (normalised over ``rows``) to
    their share of a larger batch (:func:`g4u_row_weights`; 1: ``rows`` is the whole batch).
    """
    mask = rollout.mask[rows]
    token_ids = rollout.token_ids[rows]
    logp = _teacher_forced(model, rollout.images[rows], token_ids, mask, config.temperature)
    anchor = torch.zeros((), device=logp.device)
    if rollout.ref_condition is not None:
        anchor = condition_drift(model, [rollout.texts[i] for i in rows.tolist()], rollout.ref_condition[rows])
    adv = advantages.to(logp.device).unsqueeze(1)
    surrogate = clipped_surrogate(logp, rollout.old_logprobs[rows], adv, clip_low=config.clip_low, clip_high=config.clip_high)
    per_token = surrogate.loss
    kl = torch.zeros_like(logp)
    if rollout.ref_logprobs is not None:
        kl = kl_k3(logp, rollout.ref_logprobs[rows])
        per_token = per_token + config.beta * kl
    loss = aggregate(per_token, mask, mode=config.normalisation, max_length=config.max_caption_tokens)
    loss = policy_weight * loss + anchor_weight * config.condition_anchor * anchor
    return {
        "loss": loss,
        "condition_drift": anchor.detach(),
        "policy_loss": aggregate(surrogate.loss, mask, mode=config.normalisation, max_length=config.max_caption_tokens).detach(),
        "kl": masked_mean(kl.detach(), mask),
        "clip_fraction": masked_mean(surrogate.clipped.float(), mask),
        "ratio": masked_mean(surrogate.ratio.detach(), mask),
        "ratio_deviation": masked_mean((surrogate.ratio.detach() - 1).abs(), mask),
    }


def condition_hidden(model: UAEModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's last hidden states of each caption's ``generate`` turn (what the projector reads)."""
    input_ids, attention_mask = model.condition_token_ids(texts)
    hidden = model.encoder.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return hidden, attention_mask


def condition_drift(model: UAEModel, texts: list[str], reference: torch.Tensor) -> torch.Tensor:
    """Mean squared change of the decoder's condition from ``reference``, over real tokens."""
    hidden, mask = condition_hidden(model, texts)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return ((hidden - reference.to(hidden)) ** 2 * weights).sum() / (weights.sum() * hidden.shape[-1]).clamp(min=1.0)


def g4u_row_weights(model: UAEModel, rollout: G4URollout, config: G4UConfig) -> torch.Tensor:
    """Each row's weight [N, 2] in the two normalisers of :func:`g4u_loss`: the policy term's
    (its caption tokens under ``"token"`` normalisation, else 1) and the anchor's (its
    condition tokens). A part of a batch is that part's share of the weights."""
    n = len(rollout.texts)
    policy = rollout.mask.sum(dim=1).double().cpu() if config.normalisation == "token" else torch.ones(n, dtype=torch.float64)
    anchor = torch.ones(n, dtype=torch.float64)
    if config.condition_anchor > 0:
        anchor = model.condition_token_ids(rollout.texts)[1].sum(dim=1).double().cpu()
    return torch.stack([policy, anchor], dim=1)
