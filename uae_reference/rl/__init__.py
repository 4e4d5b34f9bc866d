"""Unified-GRPO: reinforcement learning of the UAE encoder (G4U) and decoder (U4G).

Layout, from the formulas to the loops (docs/unified-grpo.md walks through it):

- :mod:`uae_reference.rl.grpo`        group advantages, clipped ratio objective, k3 KL, loss normalisation
- :mod:`uae_reference.rl.sde`         the Flow-GRPO SDE step with its Gaussian log-probability
- :mod:`uae_reference.rl.config`      documented dataclasses for both stages, with sources
- :mod:`uae_reference.rl.rewards`     reconstruction similarity under a frozen benchmark metric
- :mod:`uae_reference.rl.rollout`     seeds, the reference policy, caption statistics
- :mod:`uae_reference.rl.g4u`         Generation for Understanding: GRPO on the encoder's captions
- :mod:`uae_reference.rl.u4g`         Understanding for Generation: Flow-GRPO on the decoder
- :mod:`uae_reference.rl.trainer`     the loop both stages share (accelerate, DDP, logs, checkpoint)
- :mod:`uae_reference.rl.curves`      per-step CSV and PNG curves
- :mod:`uae_reference.rl.evaluate`    test-split evaluation through ``unified-bench eval``, paired CIs
- :mod:`uae_reference.rl.checkpoints` the bundled stages behind ``uae-tiny --model-arg stage=...``
- :mod:`uae_reference.rl.cli`         ``uae-reference rl train / evaluate / help-config``
"""
