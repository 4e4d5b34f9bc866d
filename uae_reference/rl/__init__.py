"""Unified-GRPO: reinforcement learning of the UAE encoder (G4U) and decoder (U4G).

Layout, from the formulas to the loops:

- :mod:`uae_reference.rl.grpo`    group advantages, clipped ratio objective, k3 KL, loss normalisation
- :mod:`uae_reference.rl.sde`     the Flow-GRPO SDE step with its Gaussian log-probability
- :mod:`uae_reference.rl.config`  documented dataclasses for both stages, with sources
- :mod:`uae_reference.rl.rewards` reconstruction similarity under a frozen image embedding
- :mod:`uae_reference.rl.g4u`     Generation for Understanding: GRPO on the encoder's captions
- :mod:`uae_reference.rl.u4g`     Understanding for Generation: Flow-GRPO on the decoder
- :mod:`uae_reference.rl.curves`  per-step CSV and PNG curves
"""
