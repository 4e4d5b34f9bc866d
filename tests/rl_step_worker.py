"""Worker of ``tests/test_rl_distributed.py``: the first step of the tiny G4U and U4G stages, each
from the same checkpoint, on one process or on every rank of a ``torchrun`` process group.

    python tests/rl_step_worker.py INIT OUT '{"prompts_per_step": 4}'
    torchrun --standalone --nproc_per_node 2 tests/rl_step_worker.py INIT OUT '{"sharding": "fsdp", ...}'

Each stage writes ``OUT/<stage>/`` as training does (``final/``, ``log.csv``, ...) and
``OUT/<stage>/first_update.pt``: the trainable parameters' whole gradients just before the first
optimiser step and their values just after it, recorded by wrapping ``torch.optim.AdamW.step``
(the trainer's own optimiser; under FSDP the DTensors are all-gathered on every rank).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def _whole(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().clone()


def record_first_update(path_of_stage) -> None:
    """Wrap AdamW.step so the first step of each stage saves (gradients before, parameters after)."""
    original = torch.optim.AdamW.step
    seen: set[str] = set()

    def step(self, *args, **kwargs):
        params = [p for group in self.param_groups for p in group["params"]]
        target = path_of_stage()
        grads = [_whole(p.grad) for p in params] if target not in seen else None
        out = original(self, *args, **kwargs)
        if grads is not None:
            seen.add(target)
            after = [_whole(p) for p in params]
            if int(os.environ.get("RANK", "0")) == 0:
                torch.save({"grads": grads, "params": after}, Path(target) / "first_update.pt")
        return out

    torch.optim.AdamW.step = step


def main(init: str, out: str, overrides: dict) -> None:
    from uae_reference.rl.config import rl_config
    from uae_reference.rl.trainer import train_rl_stage

    if overrides.get("sharding") == "zero3":
        # DeepSpeed JIT-compiles an optional shared-memory all-reduce kernel for CPUs when it joins
        # the ranks (minutes, the first time); gloo's all-reduce does the same job
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    current = {"dir": ""}
    record_first_update(lambda: current["dir"])
    stage_only = {"g4u": {"max_caption_tokens": 12}, "u4g": {}}  # a random encoder never says EOS
    for stage in overrides.pop("stages", ["g4u", "u4g"]):
        current["dir"] = f"{out}/{stage}"
        config = rl_config(
            "tiny", stage, smoke=True, init_from=init, output_dir=current["dir"], steps=1, updates_per_step=1,
            num_threads=1, **stage_only[stage], **overrides,
        )
        train_rl_stage(config, show_progress=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
