"""Unit tests of the Unified-GRPO math (issue 7, acceptance 1): advantages, clipped loss, KL,
loss normalisation, and the Flow-GRPO SDE step on a 2-D flow whose velocity is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from uae_reference.rl.grpo import aggregate, clipped_surrogate, gaussian_mean_kl, group_advantages, kl_k3
from uae_reference.rl.sde import gaussian_log_prob, sample_ode, sample_sde, schedule_t_cap, sde_noise_std, sde_step, sde_step_kl


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors here are tiny: one thread avoids OpenMP spin-waits on a shared CPU (20x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- advantages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["group", "batch", "none"])
def test_constant_reward_group_has_zero_advantage(scope):
    rewards = torch.tensor([[0.7, 0.7, 0.7, 0.7], [0.1, 0.5, 0.2, 0.9]])
    adv = group_advantages(rewards, std_scope=scope)
    assert torch.equal(adv[0], torch.zeros(4))
    assert adv[1].abs().sum() > 0


def test_group_std_gives_unit_spread_and_batch_std_keeps_group_scale():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.1, 0.2, 0.3]])
    per_group = group_advantages(rewards, std_scope="group", eps=0.0)
    # each group: zero mean, unit population std, whatever its scale
    assert torch.allclose(per_group.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(per_group.std(dim=1, unbiased=False), torch.ones(2), atol=1e-6)
    assert torch.allclose(per_group[0], per_group[1], atol=1e-5)
    # one std for the batch: the low-spread group keeps 10x smaller advantages
    per_batch = group_advantages(rewards, std_scope="batch", eps=0.0)
    assert torch.allclose(per_batch[0], 10 * per_batch[1], atol=1e-5)
    assert torch.allclose(per_batch, (rewards - rewards.mean(1, keepdim=True)) / rewards.std(unbiased=False))
    # Dr. GRPO: centred only
    assert torch.allclose(group_advantages(rewards, std_scope="none"), rewards - rewards.mean(1, keepdim=True))


def test_advantage_epsilon_bounds_a_tiny_spread():
    rewards = torch.tensor([[1.0, 1.0 + 1e-7]])
    assert group_advantages(rewards, eps=1e-4).abs().max() < 1e-2
    with pytest.raises(ValueError):
        group_advantages(torch.ones(4))


# --- clipped objective ----------------------------------------------------------------------------


def _surrogate_grad(log_ratio: float, advantage: float, clip: float = 0.2):
    logp = torch.tensor([log_ratio], requires_grad=True)
    out = clipped_surrogate(logp, torch.zeros(1), torch.tensor([advantage]), clip_low=clip)
    out.loss.sum().backward()
    return logp.grad.item(), bool(out.clipped.item()), out


@pytest.mark.parametrize(
    ("ratio", "advantage"),
    [(1.5, 1.0), (1.21, 2.0), (0.5, -1.0), (0.79, -0.3)],
)
def test_clipped_loss_has_zero_gradient_outside_the_clip_range(ratio, advantage):
    grad, clipped, out = _surrogate_grad(math.log(ratio), advantage)
    assert clipped
    assert grad == 0.0
    # the loss there is the clipped constant -A * (1 +- eps)
    bound = 1.2 if advantage > 0 else 0.8
    assert out.loss.item() == pytest.approx(-advantage * bound)


@pytest.mark.parametrize(
    ("ratio", "advantage"),
    [(1.1, 1.0), (0.9, -1.0), (0.5, 1.0), (1.5, -1.0)],  # inside the range, or outside on the side that is not clipped
)
def test_clipped_loss_keeps_the_gradient_where_not_clipped(ratio, advantage):
    grad, clipped, _ = _surrogate_grad(math.log(ratio), advantage)
    assert not clipped
    # d(-A r)/dlogp = -A r
    assert grad == pytest.approx(-advantage * ratio, rel=1e-5)


def test_clip_high_is_asymmetric_and_advantages_broadcast():
    logp_new = torch.log(torch.tensor([[1.25, 1.25], [0.75, 0.75]]))
    adv = torch.tensor([[1.0], [-1.0]])
    sym = clipped_surrogate(logp_new, torch.zeros(2, 2), adv, clip_low=0.2)
    assert sym.clipped.all()
    wide = clipped_surrogate(logp_new, torch.zeros(2, 2), adv, clip_low=0.2, clip_high=0.28)
    assert not wide.clipped[0].any() and wide.clipped[1].all()


# --- KL ---------------------------------------------------------------------------------------------


def test_k3_is_nonnegative_zero_at_equality_and_unbiased():
    torch.manual_seed(0)
    p = torch.distributions.Categorical(logits=torch.tensor([0.5, -1.0, 2.0, 0.0]))
    q = torch.distributions.Categorical(logits=torch.tensor([0.0, 0.0, 1.0, 1.0]))
    draws = p.sample((200_000,))
    k3 = kl_k3(p.log_prob(draws), q.log_prob(draws))
    assert (k3 >= 0).all()
    exact = torch.distributions.kl_divergence(p, q)
    assert k3.mean().item() == pytest.approx(exact.item(), rel=0.02)
    assert torch.equal(kl_k3(torch.tensor([-1.3]), torch.tensor([-1.3])), torch.zeros(1))


def test_gaussian_mean_kl_matches_torch_distributions():
    mean, mean_ref = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    std = 0.3
    exact = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(mean_ref, std)
    ).sum(dim=(1, 2))
    assert torch.allclose(gaussian_mean_kl(mean, mean_ref, std, reduce="sum"), exact, rtol=1e-5)
    assert torch.allclose(gaussian_mean_kl(mean, mean_ref, std, reduce="mean"), exact / 8, rtol=1e-5)


def _shifted_sigmas(shift: float, steps: int = 10) -> list[float]:
    """The schedule a FlowMatchEulerDiscreteScheduler gives (tiny: shift 1; SD3.5: shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    return [float(s) for s in scheduler.sigmas]


def _flow_grpo_step(v, x, sigmas, j, noise_level):
    """Flow-GRPO's ``sde_step_with_logprob`` (sde branch) and its train script's KL denominator,
    written out from yifan123/flow_grpo (``diffusers_patch/sd3_sde_with_logprob.py``,
    ``scripts/train_sd3.py``): returns (prev_sample_mean, std_dev_t, sqrt(-dt))."""
    sig = torch.tensor(sigmas, dtype=torch.float32)
    sigma, sigma_prev, sigma_max = sig[j], sig[j + 1], sig[1].item()
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level
    mean = x * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, std_dev_t, torch.sqrt(-1 * dt)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sde_step_and_kl_scales_against_flow_grpos_formulas(shift):
    """Our step's Gaussian is Flow-GRPO's; its KL term on the "flow-grpo" scale is Flow-GRPO's
    ``((mean - mean_ref) ** 2).mean(dim=(1, 2, 3)) / (2 * std_dev_t ** 2)``, and the "exact"
    scale is that divided by |dt| (the KL of the two Gaussians, as torch computes it)."""
    gen = torch.Generator().manual_seed(3)
    x, v, v_ref = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    sigmas, a = _shifted_sigmas(shift), 0.7
    t_cap = schedule_t_cap(sigmas)
    for j in range(len(sigmas) - 2):  # every step but the last hop (never trained on)
        t, t_next = sigmas[j], sigmas[j + 1]
        fg_mean, std_dev_t, sqrt_dt = _flow_grpo_step(v, x, sigmas, j, a)
        fg_ref, _, _ = _flow_grpo_step(v_ref, x, sigmas, j, a)
        step = sde_step(x, v, t, t_next, noise_level=a, t_cap=t_cap, prev_sample=x)
        ref = sde_step(x, v_ref, t, t_next, noise_level=a, t_cap=t_cap, prev_sample=x)
        torch.testing.assert_close(step.mean, fg_mean, rtol=1e-5, atol=1e-5)
        assert step.std == pytest.approx((std_dev_t * sqrt_dt).item(), rel=1e-5)
        fg_kl = (((fg_mean - fg_ref) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * std_dev_t**2)).flatten()
        ours = sde_step_kl(step.mean, ref.mean, t, t_next, noise_level=a, t_cap=t_cap, scale="flow-grpo")
        torch.testing.assert_close(ours, fg_kl, rtol=1e-4, atol=0)
        exact = sde_step_kl(step.mean, ref.mean, t, t_next, noise_level=a, t_cap=t_cap, scale="exact")
        torch.testing.assert_close(exact * (t - t_next), ours, rtol=1e-5, atol=0)
        normal = torch.distributions.Normal
        torch_kl = torch.distributions.kl_divergence(normal(step.mean, step.std), normal(ref.mean, step.std)).mean(dim=(1, 2, 3))
        torch.testing.assert_close(exact, torch_kl, rtol=1e-4, atol=0)
        # the default scale is the value the shipped U4G checkpoint was trained with, to the bit
        assert torch.equal(exact, gaussian_mean_kl(step.mean, ref.mean, step.std))
    with pytest.raises(ValueError, match="scale"):
        sde_step_kl(step.mean, ref.mean, 0.5, 0.4, noise_level=a, scale="dpo")


def test_kl_scale_factor_of_the_presets():
    """beta on the exact scale is beta / |dt| on Flow-GRPO's: 9x at every trained step of the tiny
    schedule, 3.7x to 25x on SD3.5's shift-3 schedule (the figures docs/unified-grpo.md quotes)."""
    tiny, paper = _shifted_sigmas(1.0), _shifted_sigmas(3.0)
    tiny_factors = [1 / (a - b) for a, b in zip(tiny[:-2], tiny[1:-1])]
    paper_factors = [1 / (a - b) for a, b in zip(paper[:-2], paper[1:-1])]
    assert min(tiny_factors) == pytest.approx(9.01, abs=0.01) and max(tiny_factors) == pytest.approx(9.01, abs=0.01)
    assert min(paper_factors) == pytest.approx(3.72, abs=0.01) and max(paper_factors) == pytest.approx(25.08, abs=0.01)


# --- normalisation ------------------------------------------------------------------------------------


def test_aggregate_variants():
    values = torch.tensor([[1.0, 1.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    # sequence: (mean 1 + mean 3) / 2
    assert aggregate(values, mask, mode="sequence").item() == pytest.approx(2.0)
    # token: (2 + 12) / 6
    assert aggregate(values, mask, mode="token").item() == pytest.approx(14 / 6)
    # constant: (2 + 12) / (2 * 4), or / (2 * 8) with a larger max length
    assert aggregate(values, mask, mode="constant").item() == pytest.approx(14 / 8)
    assert aggregate(values, mask, mode="constant", max_length=8).item() == pytest.approx(14 / 16)


def test_sequence_mean_weighs_short_sequences_more_per_token():
    """The length bias the normalisation choice is about: one token's gradient share."""
    logp = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    aggregate(logp, mask, mode="sequence").backward()
    assert logp.grad[0, 0] == pytest.approx(4 * logp.grad[1, 0])
    logp.grad = None
    aggregate(logp, mask, mode="token").backward()
    assert logp.grad[0, 0] == pytest.approx(logp.grad[1, 0])


# --- SDE step -------------------------------------------------------------------------------------------


def test_sde_step_log_prob_is_the_closed_form_gaussian_density():
    torch.manual_seed(1)
    x, v = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    t, t_next, a = 0.6, 0.55, 0.7
    step = sde_step(x, v, t, t_next, noise_level=a, noise=torch.randn_like(x))
    # the mean and std written out from the SDE: drift v + g^2/(2t) (x + (1-t) v), g = a sqrt(t/(1-t))
    g = a * math.sqrt(t / (1 - t))
    dt = t_next - t
    mean = x + (v + g**2 / (2 * t) * (x + (1 - t) * v)) * dt
    std = g * math.sqrt(-dt)
    assert step.std == pytest.approx(std)
    assert torch.allclose(step.mean, mean, atol=1e-6)
    normal = torch.distributions.Normal(mean, std)
    assert torch.allclose(step.log_prob, normal.log_prob(step.sample).sum(dim=(1, 2, 3)), rtol=1e-5, atol=1e-3)
    per_dim = sde_step(x, v, t, t_next, noise_level=a, prev_sample=step.sample, reduce="mean").log_prob
    assert torch.allclose(per_dim, normal.log_prob(step.sample).mean(dim=(1, 2, 3)), rtol=1e-5, atol=1e-5)


def test_sde_step_rescoring_is_differentiable_through_the_velocity_only():
    x, v = torch.randn(2, 6), torch.randn(2, 6, requires_grad=True)
    drawn = sde_step(x, v.detach(), 0.5, 0.4, noise_level=0.7, noise=torch.randn(2, 6))
    rescored = sde_step(x, v, 0.5, 0.4, noise_level=0.7, prev_sample=drawn.sample)
    assert torch.allclose(rescored.log_prob, drawn.log_prob)
    rescored.log_prob.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert not drawn.sample.requires_grad


def test_sde_step_tends_to_the_euler_step_as_noise_vanishes():
    x, v = torch.randn(4, 3), torch.randn(4, 3)
    step = sde_step(x, v, 0.8, 0.7, noise_level=1e-6, noise=torch.randn(4, 3))
    assert torch.allclose(step.sample, x + (0.7 - 0.8) * v, atol=1e-5)


def test_sde_noise_std_cap_and_argument_checks():
    assert sde_noise_std(0.5, 0.7) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        sde_noise_std(1.0, 0.7)
    assert sde_noise_std(1.0, 0.7, t_cap=0.95) == pytest.approx(0.7 * math.sqrt(1 / 0.05))
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError):
        sde_step(x, x, 0.5, 0.6, noise_level=0.7, noise=x)  # wrong direction
    with pytest.raises(ValueError):
        sde_step(x, x, 0.5, 0.4, noise_level=0.0, noise=x)
    with pytest.raises(ValueError):
        sde_step(x, x, 0.5, 0.4, noise_level=0.7)  # neither noise nor prev_sample


def test_gaussian_log_prob_reduce_check():
    with pytest.raises(ValueError):
        gaussian_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), 1.0, reduce="max")


# --- the toy flow: Gaussian data, exact velocity --------------------------------------------------------

MU0 = torch.tensor([1.5, -0.5])
SIGMA0 = torch.tensor([[0.5, 0.3], [0.3, 0.4]])


def toy_marginal(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of x_t = (1-t) x0 + t eps with x0 ~ N(MU0, SIGMA0), eps ~ N(0, I)."""
    return (1 - t) * MU0, (1 - t) ** 2 * SIGMA0 + t**2 * torch.eye(2)


def toy_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """The exact flow-matching velocity E[eps - x0 | x_t = x] (both are jointly Gaussian with x_t)."""
    mean_t, cov_t = toy_marginal(t)
    solve = (x - mean_t) @ torch.linalg.inv(cov_t)  # C_t^-1 (x - mean_t) per row (C_t symmetric)
    e_eps = t * solve  # Cov(eps, x_t) = t I
    e_x0 = MU0 + (1 - t) * solve @ SIGMA0  # Cov(x0, x_t) = (1-t) SIGMA0 (symmetric)
    return e_eps - e_x0


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


@pytest.mark.parametrize("noise_level", [0.5, 0.7])
def test_sde_sampler_matches_the_ode_marginals_on_a_toy_flow(noise_level):
    n, steps = 20_000, 100
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(n, 2, generator=gen, dtype=torch.float64).float()
    ode = sample_ode(toy_velocity, start, sigmas)
    sde = sample_sde(toy_velocity, start, sigmas, noise_level=noise_level, generator=gen)
    ode_mean, ode_cov = _moments(ode)
    sde_mean, sde_cov = _moments(sde.states[-1])
    # the ODE itself reaches the data distribution (sanity of the exact velocity)
    assert torch.allclose(ode_mean, MU0, atol=0.03)
    assert torch.allclose(ode_cov, SIGMA0, atol=0.03)
    # the SDE has the same marginal: mean and covariance agree within Monte Carlo + step error
    assert torch.allclose(sde_mean, ode_mean, atol=0.03)
    assert torch.allclose(sde_cov, ode_cov, atol=0.04)
    # ... at an intermediate time too
    mid = steps // 2
    mean_t, cov_t = toy_marginal(sigmas[mid])
    sde_mid_mean, sde_mid_cov = _moments(sde.states[mid])
    assert torch.allclose(sde_mid_mean, mean_t, atol=0.03)
    assert torch.allclose(sde_mid_cov, cov_t, atol=0.04)
    # and it is genuinely stochastic: trajectories from the same start differ from the ODE's
    assert (sde.states[-1] - ode).abs().mean() > 0.1
    assert sde.log_probs.shape == (n, steps) and torch.isfinite(sde.log_probs).all()


@pytest.mark.parametrize("noise_level", [0.7, 1.0])
@pytest.mark.parametrize("window", [None, (0, 1), (2, 3), (3, 4)])
def test_sde_sampler_at_the_presets_step_count(noise_level, window):
    """The U4G presets roll out in 10 steps on the scheduler's own schedule (the tiny preset: noise
    level 1.0, a window of 2 stochastic steps among the first 5, the rest ODE). At 10 steps the
    marginals are only as good as the discretisation: the deterministic Euler sampler itself
    ends 0.13 off the data covariance. What holds, and is checked: the SDE (whole or windowed)
    ends no further from the data distribution than the ODE sampler at the same step count, and
    its mean stays on the ODE's. Measured (40,000 samples): the first stochastic steps overshoot
    the covariance (by 0.36-0.39 after steps 0-1 at noise 1.0, 0.11-0.15 at 0.7; exact ~0.8),
    and the following ODE/SDE steps pull it back (docs/unified-grpo.md, "The SDE step")."""
    n = 20_000
    sigmas = _shifted_sigmas(1.0)  # the tiny checkpoint's FlowMatchEulerDiscreteScheduler(shift=1), 10 steps
    t_cap = schedule_t_cap(sigmas)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=gen)
    ode = sample_ode(toy_velocity, x, sigmas)
    for k, (t, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if window is None or k in window:
            noise = torch.randn(n, 2, generator=gen)
            x = sde_step(x, toy_velocity(x, t), t, t_next, noise_level=noise_level, t_cap=t_cap, noise=noise).sample
        else:
            x = x + (t_next - t) * toy_velocity(x, t)
    ode_mean, ode_cov = _moments(ode)
    sde_mean, sde_cov = _moments(x)
    ode_error = (ode_cov - SIGMA0).abs().max().item()
    assert 0.1 < ode_error < 0.15  # the Euler sampler's own error at 10 steps
    assert (sde_cov - SIGMA0).abs().max().item() < ode_error + 0.03
    assert torch.allclose(sde_mean, ode_mean, atol=0.03) and torch.allclose(sde_mean, MU0, atol=0.03)
    assert (x - ode).abs().mean() > 0.05  # genuinely stochastic


def test_a_wrong_drift_breaks_the_marginals():
    """The test above can fail: dropping the score correction (plain Euler plus noise) inflates the variance."""
    n, steps, a = 20_000, 100, 0.7
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=gen)
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        std = sde_noise_std(t, a, t_cap=sigmas[1]) * math.sqrt(t - t_next)
        x = x + (t_next - t) * toy_velocity(x, t) + std * torch.randn(n, 2, generator=gen)
    _, cov = _moments(x)
    assert not torch.allclose(cov, SIGMA0, atol=0.04)


# --- the pieces together: Flow-GRPO on a small learned flow --------------------------------------------


class _ToyVelocity(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))

    def forward(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(len(x), 1) if not torch.is_tensor(t) or t.ndim == 0 else t
        return self.net(torch.cat([x, t], dim=1))


@pytest.fixture(scope="module")
def two_mode_flow():
    """A flow-matching MLP trained on two equally likely modes at x = -2 and x = +2."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = _ToyVelocity()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(500):
        centre = torch.where(torch.rand(256, generator=gen) < 0.5, -2.0, 2.0)
        x0 = torch.stack([centre, torch.zeros(256)], 1) + 0.3 * torch.randn(256, 2, generator=gen)
        eps, t = torch.randn(256, 2, generator=gen), torch.rand(256, 1, generator=gen)
        loss = (model(( 1 - t) * x0 + t * eps, t) - (eps - x0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _flow_grpo(model, *, beta: float, iterations: int = 30, group: int = 64):
    """Flow-GRPO with reward 1[x lands right of 0]: SDE rollouts, group advantages, clipped
    surrogate on per-step log-probs, Gaussian KL to the frozen start. Returns the new policy."""
    import copy

    from uae_reference.rl.sde import schedule_t_cap

    policy, reference = copy.deepcopy(model), copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(policy.parameters(), 1e-3)
    sigmas = torch.linspace(1, 0, 11).tolist()
    cap, gen = schedule_t_cap(sigmas), torch.Generator().manual_seed(1)
    for _ in range(iterations):
        states, old = [torch.randn(group, 2, generator=gen)], []
        with torch.no_grad():
            for t, t_next in zip(sigmas[:-1], sigmas[1:]):
                x = states[-1]
                step = sde_step(x, policy(x, t), t, t_next, noise_level=0.7, t_cap=cap, noise=torch.randn(group, 2, generator=gen))
                states.append(step.sample)
                old.append(step.log_prob)
        adv = group_advantages((states[-1][:, 0] > 0).float().view(1, -1)).view(-1)
        for rows in torch.randperm(group, generator=gen).chunk(2):  # the second half is off-policy
            opt.zero_grad()
            for k in range(len(sigmas) - 2):  # never the last hop to 0
                t, t_next, x, x_next = sigmas[k], sigmas[k + 1], states[k][rows], states[k + 1][rows]
                step = sde_step(x, policy(x, t), t, t_next, noise_level=0.7, t_cap=cap, prev_sample=x_next)
                with torch.no_grad():
                    ref_mean = sde_step(x, reference(x, t), t, t_next, noise_level=0.7, t_cap=cap, prev_sample=x_next).mean
                surrogate = clipped_surrogate(step.log_prob, old[k][rows], adv[rows], clip_low=0.2)
                loss = surrogate.loss.mean() + beta * gaussian_mean_kl(step.mean, ref_mean, step.std, reduce="sum").mean()
                (loss / (len(sigmas) - 2)).backward()
            opt.step()
    return policy


def _right_fraction(model) -> float:
    from uae_reference.rl.sde import schedule_t_cap

    sigmas = torch.linspace(1, 0, 11).tolist()
    with torch.no_grad():
        traj = sample_sde(model, torch.randn(2000, 2, generator=torch.Generator().manual_seed(7)), sigmas,
                          noise_level=0.7, generator=torch.Generator().manual_seed(8))
    assert schedule_t_cap(sigmas) == sigmas[1]
    return (traj.states[-1][:, 0] > 0).float().mean().item()


def test_flow_grpo_moves_a_learned_flow_towards_the_rewarded_mode_and_kl_holds_it_back(two_mode_flow):
    before = _right_fraction(two_mode_flow)
    assert 0.35 < before < 0.65  # both modes, equally likely
    free = _right_fraction(_flow_grpo(two_mode_flow, beta=0.01))
    held = _right_fraction(_flow_grpo(two_mode_flow, beta=3.0))
    assert free > 0.85, (before, free)
    assert before < held < free, (before, held, free)


# --- the rollout stores what it scored -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_rollout_step_scores_the_sample_it_stores(dtype):
    """A half-precision decoder keeps its trajectory in its own dtype; the old log-probability is
    that of the stored (rounded) sample, so re-scoring the stored transition gives it exactly.
    Scoring the float32 sample instead (what the rollout did before) is off by more than
    Flow-GRPO's whole clip range (1e-4) in bfloat16."""
    from uae_reference.rl.sde import per_sample_noise
    from uae_reference.rl.u4g import sde_step_fn

    gen = torch.Generator().manual_seed(0)
    x, v = (torch.randn(4, 3, 16, 16, generator=gen).to(dtype) for _ in range(2))

    def generators():
        return [torch.Generator().manual_seed(i) for i in range(4)]

    stored, log_prob = sde_step_fn(0.7, 0.9, "mean")(x, v, 0.8, 0.7, generators())
    assert stored.dtype == dtype
    rescored = sde_step(x, v, 0.8, 0.7, noise_level=0.7, t_cap=0.9, prev_sample=stored, reduce="mean").log_prob
    assert torch.equal(log_prob, rescored)
    unrounded = sde_step(x, v, 0.8, 0.7, noise_level=0.7, t_cap=0.9, noise=per_sample_noise(x.shape, generators()), reduce="mean")
    gap = (unrounded.log_prob - rescored).abs().max().item()
    if dtype == torch.float32:
        assert gap == 0.0 and torch.equal(unrounded.log_prob, log_prob)  # float32 runs: unchanged to the bit
    elif dtype == torch.bfloat16:
        assert gap > 1e-4
