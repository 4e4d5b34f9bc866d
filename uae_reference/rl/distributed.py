"""The RL stages on many processes: whole replicas (DDP), PyTorch FSDP2, or DeepSpeed ZeRO-3.

Read top to bottom:

1. :func:`resolve_sharding` -- which plan a run uses: ``config.sharding``, or (``"auto"``) what
   ``accelerate launch`` was configured with (``distributed_type: FSDP`` -> ``"fsdp"``,
   ``DEEPSPEED`` with ZeRO stage 3 -> ``"zero3"``, anything else -> ``"none"``).
2. :func:`shard_fsdp` -- FSDP2's ``fully_shard`` on every transformer block (one unit each:
   all-gathered just before it runs, freed after) and then on the whole policy module (the
   root unit: embeddings, projector, VAE and whatever else sits outside a block). The trainer
   does this itself rather than through ``accelerator.prepare``: accelerate (1.16) turns FSDP
   on only for GPUs, and the same code must run the two-process CPU test.
   :func:`zero3_engine` -- ``deepspeed.initialize`` with a ZeRO-3 config, for the same reason.
3. :func:`rollout_runner` -- a rollout calls ``generate`` and samplers on the model's
   submodules, not the wrapper's ``forward``. Sharded parameters are not usable there, and a
   block all-gathered once per generated token would be far too slow, so for the rollout every
   parameter is made whole on every rank, as TRL does for generation:

   - FSDP2: every unit is unsharded (``unshard()``) and kept so (``reshard_after_forward``
     off) while the rollout runs *as the root module's forward* ("forward redirection",
     :func:`call_as_forward`), so FSDP's root hooks run as in training; afterwards every unit
     is resharded. (FSDP requires the first forward of a step to enter at the root.)
   - ZeRO-3: ``deepspeed.zero.GatheredParameters`` over every parameter, with the engine's
     per-module gather/release hooks removed for the rollout and put back after (TRL's
     ``unwrap_model_for_generation``).

   Peak memory during a rollout is therefore the whole model in its compute dtype on every GPU
   (the dry run's "rollout gather" line); see docs/rl-distributed.md.
4. :func:`full_state_dict` and :func:`whole_values` -- the whole weights at the end, for the
   checkpoint (written by the main process from a plain copy of the model) and the weight digest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified_bench.core.errors import ConfigError

SHARDINGS: tuple[str, ...] = ("auto", "none", "fsdp", "zero3")
#: The repeated blocks of the encoder (LLM layers, vision blocks) and the decoder (MMDiT blocks):
#: each becomes one FSDP unit. Everything else belongs to the root unit.
FSDP_UNIT_CLASSES: tuple[str, ...] = ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock", "JointTransformerBlock")
#: The ZeRO-3 config the ``zero3`` plan uses when accelerate was not launched with one.
DEFAULT_ZERO3_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rl_zero3.json"


def resolve_sharding(requested: str, accelerator) -> str:
    """The plan this run uses: ``"none"``, ``"fsdp"`` or ``"zero3"``."""
    from accelerate.utils import DistributedType

    if requested not in SHARDINGS:
        raise ConfigError(f"sharding must be one of {', '.join(SHARDINGS)}; got {requested!r}")
    launched = "none"
    if accelerator.distributed_type == DistributedType.FSDP:
        launched = "fsdp"
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        if stage != 3:
            raise ConfigError(
                f"accelerate was launched with DeepSpeed ZeRO stage {stage}; the RL stages shard with ZeRO-3 "
                "(uae_reference/configs/rl_zero3.yaml), FSDP (rl_fsdp.yaml) or replicate (rl_ddp.yaml)"
            )
        launched = "zero3"
    sharding = launched if requested == "auto" else requested
    if launched != "none" and sharding != launched:
        raise ConfigError(f"accelerate was launched for {launched} but the config asks for sharding={requested!r}")
    if sharding != "none" and not torch.distributed.is_initialized():
        raise ConfigError(
            f"sharding={sharding!r} needs a process group: launch with torchrun or accelerate launch "
            "(see docs/rl-distributed.md)"
        )
    return sharding


# --- FSDP2 ---------------------------------------------------------------------------------------


def shard_fsdp(root: nn.Module, *, mixed_precision: str = "no", reshard_after_forward: bool = True) -> list[nn.Module]:
    """Apply FSDP2 to ``root`` in place: one unit per block of :data:`FSDP_UNIT_CLASSES`, then the
    root. Returns the units, root last. Parameters become DTensors sharded over the ranks."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if mixed_precision == "bf16":  # bf16 all-gathers and compute, fp32 gradient reduction
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    units = [m for m in root.modules() if type(m).__name__ in FSDP_UNIT_CLASSES]
    for unit in units:
        fully_shard(unit, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(root, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return [*units, root]


def fsdp_units(root: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in root.modules() if isinstance(m, FSDPModule)]


def call_as_forward(module: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` as ``module``'s forward, so the hooks a wrapper put on
    ``module`` (FSDP's root pre- and post-forward) run around it as they do around training
    ("forward redirection", as PyTorch Lightning and TRL call it)."""
    had_own = "forward" in module.__dict__
    original = module.__dict__.get("forward")

    def redirected(*_args: Any, **_kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    module.forward = redirected
    try:
        return module()
    finally:
        if had_own:
            module.forward = original
        else:
            del module.forward


# --- DeepSpeed ZeRO-3 ------------------------------------------------------------------------------


def zero3_engine(module: nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict):
    """``deepspeed.initialize`` of ``module`` with a ZeRO-3 config (parameters, gradients and
    optimiser states partitioned). The trainer calls ``engine.backward`` and ``engine.step``."""
    import deepspeed

    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        raise ConfigError("the zero3 plan needs a DeepSpeed config with zero_optimization.stage = 3")
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
    return engine


def load_zero3_config(accelerator, path: str | Path | None = None) -> dict:
    """The DeepSpeed config: accelerate's (``deepspeed_config_file`` of the launch yaml), else ``path``."""
    import json

    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        return dict(plugin.deepspeed_config)
    config = json.loads(Path(path or DEFAULT_ZERO3_CONFIG).read_text())
    if accelerator.mixed_precision != "bf16":
        config["bf16"] = {"enabled": False}
    return config


def _zero3_offload(engine):
    optimizer = engine.optimizer
    return optimizer.parameter_offload if hasattr(optimizer, "parameter_offload") else optimizer


def _remove_zero3_hooks(engine) -> None:
    offload = _zero3_offload(engine)
    for param in offload.module.parameters():
        param.ds_active_sub_modules.clear()
    for hook in [*offload.forward_hooks, *offload.backward_hooks]:
        hook.remove()
    offload.forward_hooks, offload.backward_hooks = [], []


def _restore_zero3_hooks(engine) -> None:
    offload = _zero3_offload(engine)
    offload._register_deepspeed_module(offload.module)


# --- whole parameters, for rollouts and checkpoints -------------------------------------------------


def full_state_dict(module: nn.Module, sharding: str, *, is_main: bool) -> dict[str, torch.Tensor]:
    """``module``'s whole state dict on CPU on the main process ({} elsewhere); every rank must
    call. FSDP2's own state dict holds sharded DTensors, so it is gathered through
    ``torch.distributed.checkpoint``'s full-state-dict option; ZeRO-3's through ``GatheredParameters``."""
    if sharding == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if is_main else {}
    if sharding == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if is_main else {}
    return {k: v.detach().cpu() for k, v in module.state_dict().items()} if is_main else {}


@contextmanager
def rollout_runner(loss_module: nn.Module, sharding: str, engine=None) -> Iterator[Callable[..., Any]]:
    """Yield ``run(fn, *args)``, which calls ``fn(*args)`` with the model's parameters whole.

    ``"none"``: ``fn(*args)`` as it is (today's single-process and DDP path, unchanged).
    ``"fsdp"``: inside the root's forward with every unit unsharded and kept so until the end.
    ``"zero3"``: under ``GatheredParameters`` with the engine's hooks removed.
    """
    if sharding == "none":
        yield lambda fn, *args, **kwargs: fn(*args, **kwargs)
    elif sharding == "fsdp":
        units = fsdp_units(loss_module)
        blocks = [u for u in units if u is not loss_module]

        def run(fn, *args, **kwargs):
            def unsharded():
                for unit in units:  # the root is unsharded by its own pre-forward; the blocks here
                    unit.unshard()
                return fn(*args, **kwargs)

            return call_as_forward(loss_module, unsharded)

        for block in blocks:
            block.set_reshard_after_forward(False, recurse=False)
        try:
            yield run
        finally:
            for unit in units:
                unit.reshard()
            for block in blocks:
                block.set_reshard_after_forward(True, recurse=False)
    elif sharding == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            _remove_zero3_hooks(engine)
            try:
                yield lambda fn, *args, **kwargs: fn(*args, **kwargs)
            finally:
                _restore_zero3_hooks(engine)
    else:
        raise ValueError(f"unknown sharding {sharding!r}")


#: trackers ``report_to`` may name, and the package each needs
TRACKERS: dict[str, str] = {"tensorboard": "tensorboard", "wandb": "wandb"}


def report_targets(report_to: str) -> list[str]:
    """``"none"`` -> [], ``"tensorboard,wandb"`` -> both; an unknown name raises."""
    names = [n.strip() for n in report_to.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"report_to takes none, {', '.join(TRACKERS)} (comma-separated); got {', '.join(unknown)}")
    return names


def check_trackers(names: list[str]) -> None:
    """Raise a ConfigError naming the package to install when a tracker cannot be imported
    (accelerate would otherwise drop it without a word)."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ConfigError(f"--report-to {name} needs the {TRACKERS[name]} package: pip install {TRACKERS[name]}")


def whole_values(params: list[torch.Tensor], sharding: str) -> list[torch.Tensor]:
    """Detached CPU copies of the parameters' whole values (under sharding every rank must call):
    an FSDP DTensor is all-gathered, ZeRO-3 partitions are gathered."""
    if sharding == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return [p.detach().cpu().clone() for p in params]
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().cpu().clone() for p in params]
