"""The decoder's rectified-flow math, checked as pure functions (and against diffusers)."""

from __future__ import annotations

import pytest
import torch

from uae_reference.flow import (
    classifier_free_guidance,
    euler_step,
    flow_matching_loss,
    noisy_sample,
    predicted_clean_sample,
    sample_sigmas_logit_normal,
    shift_sigmas,
    velocity_target,
)


def _data(seed: int = 0, shape=(4, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_path_endpoints_and_velocity_is_the_sigma_derivative():
    x0, noise = _data()
    assert torch.equal(noisy_sample(x0, noise, torch.zeros(4)), x0)
    assert torch.equal(noisy_sample(x0, noise, torch.ones(4)), noise)
    sigma, h = torch.full((4,), 0.3, dtype=torch.float64), 1e-6
    finite_diff = (noisy_sample(x0, noise, sigma + h) - noisy_sample(x0, noise, sigma - h)) / (2 * h)
    torch.testing.assert_close(finite_diff, velocity_target(x0, noise), atol=1e-8, rtol=0)


def test_per_sample_sigma_broadcast():
    x0, noise = _data()
    sigmas = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    x_t = noisy_sample(x0, noise, sigmas)
    for i, s in enumerate(sigmas):
        torch.testing.assert_close(x_t[i], (1 - s) * x0[i] + s * noise[i])


def test_flow_matching_loss_is_the_velocity_mse():
    x0, noise = _data()
    target = noise - x0
    assert flow_matching_loss(target, x0, noise).item() == pytest.approx(0.0, abs=1e-12)
    v = target + 0.5
    assert flow_matching_loss(v, x0, noise).item() == pytest.approx(0.25, rel=1e-6)
    weights = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert flow_matching_loss(v, x0, noise, weights).item() == pytest.approx(0.25 / 4, rel=1e-6)


def test_x0_prediction_inverts_the_path_for_the_true_velocity():
    x0, noise = _data(1)
    sigmas = torch.tensor([0.05, 0.4, 0.8, 0.999], dtype=torch.float64)
    x_t = noisy_sample(x0, noise, sigmas)
    torch.testing.assert_close(predicted_clean_sample(x_t, velocity_target(x0, noise), sigmas), x0)
    # an error e in the velocity moves x0_hat by -sigma * e: low-noise estimates are trustworthy
    err = torch.ones_like(x0)
    shifted = predicted_clean_sample(x_t, velocity_target(x0, noise) + err, sigmas)
    torch.testing.assert_close(shifted - x0, -sigmas.view(-1, 1, 1, 1) * err)


def test_euler_steps_follow_the_straight_path_exactly():
    x0, noise = _data(2)
    v = velocity_target(x0, noise)
    x = noise
    sigmas = [1.0, 0.7, 0.31, 0.0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = euler_step(x, v, s, s_next)
        torch.testing.assert_close(x, noisy_sample(x0, noise, torch.full((4,), s_next, dtype=torch.float64)))
    torch.testing.assert_close(x, x0)


def test_euler_step_equals_the_diffusers_scheduler_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(5)
    x, v = _data(3, (2, 3, 4, 4))
    x, v = x.float(), v.float()
    ours = x.clone()
    for i, t in enumerate(scheduler.timesteps):
        sigma, sigma_next = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
        expected = scheduler.step(v, t, x).prev_sample
        ours = euler_step(x, v, sigma, sigma_next)
        torch.testing.assert_close(ours, expected)
        x = expected


def test_shift_matches_the_scheduler_schedule():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # the training grid of sigmas, before and after the scheduler's shift
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas
    plain = FlowMatchEulerDiscreteScheduler(shift=1.0).sigmas
    torch.testing.assert_close(shift_sigmas(plain, 3.0), shifted)
    assert torch.equal(shift_sigmas(torch.tensor([0.0, 1.0]), 3.0), torch.tensor([0.0, 1.0]))


def test_logit_normal_sigmas_are_sd3s_density():
    g = torch.Generator().manual_seed(0)
    sigmas = sample_sigmas_logit_normal(20_000, generator=g)
    assert sigmas.min() > 0 and sigmas.max() < 1
    logits = torch.logit(sigmas.double())
    assert logits.mean().item() == pytest.approx(0.0, abs=0.03)
    assert logits.std().item() == pytest.approx(1.0, abs=0.03)
    # SD3's default puts the mode in the middle: more samples near 0.5 than at the ends
    middle = ((sigmas > 0.4) & (sigmas < 0.6)).float().mean()
    edge = (sigmas < 0.1).float().mean()
    assert middle > 2 * edge
    # deterministic given the generator, shifted by the mean
    a = sample_sigmas_logit_normal(8, mean=1.0, generator=torch.Generator().manual_seed(5))
    b = sample_sigmas_logit_normal(8, mean=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.mean() > 0.5


def test_classifier_free_guidance():
    cond, uncond = _data(4)
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 0.0), uncond)
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 3.0), uncond + 3 * (cond - uncond))
