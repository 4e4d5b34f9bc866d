"""Per-step logs of an RL stage: ``log.csv`` (one row per step) and ``curves.png``.

The columns ``step``, ``reward`` and ``caption_length`` are the ones the leaderboard plots
(``run.training.curve_csv``); the rest say why the reward moved: its spread within groups,
what the captions state (attributes per object, share of long captions), how far the policy
is from its reference (KL), how often the clip bit and how far the ratio strayed from 1 (its
mean absolute deviation, which the mean ratio hides), and where the time went.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

LOG_COLUMNS: tuple[str, ...] = (
    "step",
    "reward",
    "reward_std",
    "reward_group_std",
    "caption_length",
    "attributes_per_object",
    "long_fraction",
    "caption_precision",
    "kl",
    "condition_drift",
    "clip_fraction",
    "ratio",
    "ratio_deviation",
    "loss",
    "policy_loss",
    "grad_norm",
    "lr",
    "seconds_sampling",
    "seconds_decoding",
    "seconds_captions",
    "seconds_reward",
    "seconds_update",
    "seconds_step",
    "elapsed",
)


class StepLog:
    """Append-only CSV with a fixed header (a new run overwrites the file)."""

    def __init__(self, path: Path, columns: Sequence[str] = LOG_COLUMNS) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writeheader()

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow({k: _cell(row.get(k)) for k in self.columns})


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``log.csv`` as floats (empty cells and the ``stage`` label left out)."""
    with Path(path).open(newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None) and k != "stage"} for row in csv.DictReader(handle)]


def combine_logs(logs: Sequence[tuple[str, str | Path]], out: str | Path) -> Path:
    """Concatenate stage logs into one curve (steps continue across stages; a ``stage`` column says which)."""
    out = Path(out)
    rows, offset = [], 0
    for stage, path in logs:
        stage_rows = read_log(path)
        for row in stage_rows:
            rows.append({"stage": stage, **row, "step": row["step"] + offset})
        offset += int(max((r["step"] for r in stage_rows), default=0))
    columns = ["stage", *LOG_COLUMNS]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (_cell(row[k]) if k in row else "") for k in columns})
    return out


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` points (the first points average what exists)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(
    logs: Sequence[tuple[str, str | Path]], out: str | Path, title: str = "Unified-GRPO on Shapes", smooth: int = 5
) -> Path:
    """Reward, caption length, attributes per object, KL and clip fraction against step (PNG):
    each step faint, a ``smooth``-step trailing mean bold (rewards vary with the prompts drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("reward", "reward (reconstruction similarity)"),
        ("caption_length", "caption length (tokens)"),
        ("attributes_per_object", "attributes stated per object"),
        ("kl", "KL to reference"),
        ("clip_fraction", "clip fraction"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    offset = 0
    for stage, path in logs:
        rows = read_log(path)
        if not rows:
            continue
        for ax, (key, label) in zip(axes, panels):
            pts = [(r["step"] + offset, r[key]) for r in rows if key in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            (line,) = ax.plot(xs, ys, linewidth=0.8, alpha=0.45)
            ax.plot(xs, moving_average(ys, smooth), color=line.get_color(), linewidth=1.8, label=stage.upper())
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("step")
        offset += int(max(r["step"] for r in rows))
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
