"""The projector: LLM hidden states -> the decoder's text conditioning.

The UAE decoder (an SD3 MMDiT) takes two text inputs: a sequence ``encoder_hidden_states``
of width ``joint_attention_dim`` (SD3 feeds T5 + CLIP token features there) and one
``pooled_projections`` vector of width ``pooled_projection_dim`` (SD3 feeds pooled CLIP
features, which modulate every block through adaptive norms). The projector produces both
from the encoder LLM's last hidden states of a caption:

- tokens: a two-layer MLP applied per token (Linear -> GELU -> Linear), pad positions set to
  zero so padding carries no caption content;
- pooled: the masked mean of the hidden states over the caption's tokens, then its own
  two-layer MLP (Linear -> SiLU -> Linear);
- optionally (``output_norm``, the tiny preset) a LayerNorm on the projected tokens, so they
  reach the decoder at unit scale as T5's (final-norm) features reach SD3; a freshly initialised
  two-layer MLP shrinks the LLM's unit-RMS states about eightfold, and the decoder then leans on
  its image tokens and ignores the caption for hundreds of steps;
- optionally (``max_positions > 0``, the tiny preset) a learned embedding of each token's index
  is added to the projected tokens. SD3's MMDiT gives text tokens no position of their own: it
  relies on T5's (or, in UAE, Qwen's) contextual features to say which word belongs to which
  phrase. A two-layer LLM trained from scratch encodes order only weakly, and the decoder then
  cannot tell which colour goes with which "top left"; the index embedding restores that.

It is a diffusers ``ModelMixin`` so it saves and loads like the decoder
(``save_pretrained`` / ``from_pretrained``, safetensors + config.json).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence of ``hidden`` [B, L, D] where ``mask`` [B, L] is 1 (0 rows stay 0)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class UAEProjector(ModelMixin, ConfigMixin):
    """LLM hidden size -> (joint-attention tokens, pooled vector) for the SD3 decoder."""

    @register_to_config
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        pooled_dim: int,
        hidden_dim: int | None = None,
        max_positions: int = 0,
        output_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)]
        if output_norm:
            layers.append(nn.LayerNorm(out_dim))
        self.token_mlp = nn.Sequential(*layers)
        self.pooled_mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, pooled_dim))
        self.positions = nn.Embedding(max_positions, out_dim) if max_positions > 0 else None
        if self.positions is not None:
            nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``hidden`` [B, L, in_dim], ``mask`` [B, L] -> tokens [B, L, out_dim], pooled [B, pooled_dim]."""
        tokens = self.token_mlp(hidden)
        if self.positions is not None:
            tokens = tokens + self.positions.weight[: hidden.shape[1]].to(tokens.dtype)
        tokens = tokens * mask.to(hidden.dtype).unsqueeze(-1)
        pooled = self.pooled_mlp(masked_mean(hidden, mask))
        return tokens, pooled
