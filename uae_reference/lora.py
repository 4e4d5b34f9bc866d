"""LoRA where the paper uses it, through ``peft``, injected in place.

- Encoder: every linear layer of the Qwen2.5-VL *language model* (attention q/k/v/o and MLP
  gate/up/down), r = 32, alpha = 64, Gaussian init — the official release's ``set_lora`` on the
  LLM with ``target_modules='all-linear'``. The vision tower and ``lm_head`` get none.
- Decoder: the attention projections of every MMDiT joint-attention block, image stream
  (``to_q/to_k/to_v/to_out.0``) and text stream (``add_q_proj/add_k_proj/add_v_proj/to_add_out``);
  r = 32, alpha = 64 as in Flow-GRPO's SD3.5 recipe.

Adapters are injected into the modules themselves (``peft.inject_adapter_in_model``), so the
model keeps its class and call signature; :func:`merge_lora` folds them back into plain weights
before a checkpoint is written.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

#: All linear layers of the Qwen2.5-VL language model (not the vision tower, not lm_head).
ENCODER_LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
#: Attention projections of SD3's joint-attention blocks (image and text streams).
DECODER_LORA_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)


@dataclass(frozen=True)
class LoraSettings:
    """Rank and scale of one LoRA adapter."""

    #: rank of the low-rank update (paper: 32)
    r: int = 32
    #: scale numerator; the update is scaled by alpha / r (paper: 64)
    alpha: int = 64
    #: dropout on the adapter input
    dropout: float = 0.0


def add_lora(module: nn.Module, settings: LoraSettings, targets: str | tuple[str, ...]) -> nn.Module:
    """Inject a LoRA adapter into ``module`` in place; only adapter weights stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        init_lora_weights="gaussian",
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
    )
    return inject_adapter_in_model(config, module)


def lora_parameter_count(module: nn.Module) -> int:
    """Number of LoRA adapter parameters inside ``module``."""
    return sum(p.numel() for name, p in module.named_parameters() if "lora_" in name)


def has_lora(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and put the plain layer back (in place)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    return module
