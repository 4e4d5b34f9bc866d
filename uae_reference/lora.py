"""LoRA where the paper uses it, through ``peft``, injected in place.

- Encoder: every linear layer of the Qwen2.5-VL *language model* (attention q/k/v/o and MLP
  gate/up/down), r = 32, alpha = 64, Gaussian init — the official release's ``set_lora`` on the
  LLM with ``target_modules='all-linear'``. The vision tower and ``lm_head`` get none.
- Decoder: the attention projections of every MMDiT joint-attention block, image stream
  (``to_q/to_k/to_v/to_out.0``) and text stream (``add_q_proj/add_k_proj/add_v_proj/to_add_out``);
  r = 32, alpha = 64 as in Flow-GRPO's SD3.5 recipe.

Adapters are injected into the modules themselves, so the model keeps its class and call
signature: :func:`add_lora` wraps the module in a ``peft.PeftModel`` (which injects the LoRA
layers in place, exactly as ``peft.inject_adapter_in_model`` does) and keeps that wrapper beside
the module, not inside the model. Through it RL runs the reference policy with peft's own
``disable_adapter()`` (:func:`adapters_disabled`), and :func:`merge_lora` folds the adapters
into plain weights with ``merge_and_unload()`` before a checkpoint is written.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: where :func:`add_lora` keeps peft's wrapper on the module (in ``__dict__``: not a submodule,
#: so it is in no state dict, no ``modules()`` walk and no DistributedDataParallel wrapper)
_HANDLE = "_uae_lora_peft"

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


def add_lora(module: nn.Module, settings: LoraSettings, targets: str | tuple[str, ...]) -> Any:
    """Inject a LoRA adapter into ``module`` in place; only adapter weights stay trainable.

    Returns peft's ``PeftModel`` around ``module`` (also kept on the module for
    :func:`adapters_disabled` and :func:`merge_lora`); ``module`` itself stays what callers use.
    """
    from peft import LoraConfig, PeftModel

    if _HANDLE in module.__dict__:
        raise ValueError("the module already has a LoRA adapter; merge it (merge_lora) before adding another")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        init_lora_weights="gaussian",
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
    )
    # autocast_adapter_dtype=False: adapters in the module's own dtype, as inject_adapter_in_model makes them
    with warnings.catch_warnings():
        # peft probes transformers' deprecated is_gradient_checkpointing (a FutureWarning per call)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        handle = PeftModel(module, config, autocast_adapter_dtype=False)
    module.__dict__[_HANDLE] = handle
    return handle


def lora_handles(module: nn.Module) -> list[Any]:
    """The ``PeftModel`` wrappers :func:`add_lora` put around ``module`` or modules inside it."""
    return [m.__dict__[_HANDLE] for m in module.modules() if _HANDLE in m.__dict__]


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without its LoRA adapters (the reference policy), under ``no_grad``.

    peft's ``disable_adapter()`` for each adapter inside ``module``: it clears the adapter
    weights' ``requires_grad`` on entry and sets it again on exit, before any backward pass;
    the optimiser and DistributedDataParallel keep the same parameter objects throughout.
    """
    handles = lora_handles(module)
    if not handles:
        raise ValueError("the module has no LoRA adapters added by uae_reference.lora.add_lora")
    with ExitStack() as stack:
        for handle in handles:
            stack.enter_context(handle.disable_adapter())
        stack.enter_context(torch.no_grad())
        yield


def lora_parameter_count(module: nn.Module) -> int:
    """Number of LoRA adapter parameters inside ``module``."""
    return sum(p.numel() for name, p in module.named_parameters() if "lora_" in name)


def has_lora(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter inside ``module`` into its base layer (peft's ``merge_and_unload()``,
    which puts the plain layers back in place); returns ``module``."""
    for child in list(module.modules()):
        handle = child.__dict__.pop(_HANDLE, None)
        if handle is not None:
            handle.merge_and_unload()
    if has_lora(module):
        raise ValueError("LoRA layers not added by uae_reference.lora.add_lora cannot be merged here")
    return module
