"""Usage errors of every console script are one line and exit code 2 (README, "Exit codes").

Each case runs the *installed* script (``unified-bench``, its ``shapes`` group, ``uae-reference``)
as a subprocess on the checked-out code and checks
what a user sees: exit status 2, stderr exactly one line ``Error: <click's message>`` naming
the problem (and click's suggested option where it has one), nothing on stdout, no traceback.
These errors are all raised while click parses the command line, so no command body runs.

Also: ``unified-bench eval --fuse/--no-fuse --device-preprocessing MODE`` reach the scoring
engine's ScoringConfig (and the metric), and the default stays the engine's default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import toy_metrics
from runner_helpers import make_images

from unified_bench.cli import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHAPES = "shapes"  # the Shapes track's group: `unified-bench shapes ...`


def run(script: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    if script == SHAPES:
        script, args = "unified-bench", ["shapes", *args]
    path = BIN / script
    if not path.is_file():
        pytest.skip(f"console script {path} is not installed (pip install -e .)")
    command = [str(path)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "400"
    env["UNIFIED_BENCH_CACHE"] = str(tmp_path / "cache")
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2; stderr is exactly one line, ``Error: ...``, containing every fragment."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    assert result.stdout == "", shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


EVAL = ["eval", "--model", "mock", "--data", "photos", "--out", "run"]

#: (script, arguments, what the one line must contain): every kind of usage error, on several
#: commands of both console scripts and of the Shapes track's app
CASES = [
    # unknown option; click suggests the closest existing options
    ("unified-bench", [*EVAL, "--bogus"], ["No such option: --bogus"]),
    ("unified-bench", [*EVAL, "--limt", "2"], ["No such option: --limt", "--limit"]),
    ("unified-bench", ["score", "--images", "a", "--refs", "b", "--out", "c", "--metric", "ssim"], ["No such option: --metric", "--metrics"]),
    ("unified-bench", ["merge", "a", "--out", "m", "--no-fus"], ["No such option: --no-fus", "--no-fuse"]),
    ("unified-bench", ["weights", "fetch", "--metrcs", "ssim"], ["No such option: --metrcs", "--metrics"]),
    (SHAPES, ["stats", "--splt", "test"], ["No such option: --splt", "--split"]),
    ("uae-reference", ["train", "--stpes", "3"], ["No such option: --stpes", "--steps"]),
    ("uae-reference", ["rl", "train", "--smok"], ["No such option: --smok", "--smoke"]),
    # missing value
    ("unified-bench", [*EVAL, "--limit"], ["Option '--limit' requires an argument"]),
    ("unified-bench", ["leaderboard", "--out"], ["Option '--out' requires an argument"]),
    ("uae-reference", ["rl", "train", "--stage"], ["Option '--stage' requires an argument"]),
    # bad type / out of range
    ("unified-bench", [*EVAL, "--limit", "two"], ["Invalid value for '--limit'"]),
    ("unified-bench", [*EVAL, "--batch-size", "0"], ["Invalid value for '--batch-size'"]),
    (SHAPES, ["render", "--out", "r", "--limit", "0"], ["Invalid value for '--limit'"]),
    ("uae-reference", ["train", "--steps", "abc"], ["Invalid value for '--steps'"]),
    # bad choice
    ("unified-bench", [*EVAL, "--device-preprocessing", "resiz"], ["Invalid value for '--device-preprocessing'", "'resiz'", "'resize'"]),
    ("unified-bench", ["score", "--images", "a", "--refs", "b", "--out", "c", "--device-preprocessing", "gpu"], ["Invalid value for '--device-preprocessing'", "'normalize'"]),
    # extra argument (a second value after --runs, a value after a flag)
    ("unified-bench", ["leaderboard", "--out", "site", "--runs", "a", "b"], ["unexpected extra argument", "b"]),
    ("unified-bench", [*EVAL, "--fuse", "yes"], ["unexpected extra argument", "yes"]),
    ("uae-reference", ["train", "extra"], ["unexpected extra argument", "extra"]),
    # missing required option / argument
    ("unified-bench", ["eval", "--model", "mock", "--data", "photos"], ["Missing option '--out'"]),
    ("unified-bench", ["score", "--images", "a", "--refs", "b"], ["Missing option '--out'"]),
    ("unified-bench", ["merge", "--out", "m"], ["Missing argument"]),
    (SHAPES, ["render"], ["Missing option '--out'"]),
    ("uae-reference", ["evaluate"], ["Missing option '--checkpoint'"]),
    ("uae-reference", ["rl", "evaluate", "--out", "e"], ["Missing option '--checkpoint'"]),
    # unknown command
    ("unified-bench", ["evl"], ["No such command", "evl", "'eval'"]),
]


@pytest.mark.parametrize(("script", "args", "fragments"), CASES, ids=[" ".join([s, *a[:1], *a[-2:]]) for s, a, _ in CASES])
def test_usage_error_is_one_line_and_exit_2(tmp_path, script, args, fragments):
    assert_one_error_line(run(script, args, tmp_path), *fragments)
    assert not (tmp_path / "run").exists()  # nothing ran


@pytest.mark.parametrize(
    ("script", "args"),
    [("unified-bench", ["--help"]), ("unified-bench", ["eval", "--help"]), ("uae-reference", ["rl", "train", "--help"]), (SHAPES, ["render", "--help"])],
)
def test_help_still_exits_0(tmp_path, script, args):
    result = run(script, args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "Traceback" not in result.stderr


def test_eval_help_lists_the_scoring_options(tmp_path):
    result = run("unified-bench", ["eval", "--help"], tmp_path)
    assert result.returncode == 0
    for flag in ("--fuse", "--no-fuse", "--device-preprocessing"):
        assert flag in result.stdout


def test_bare_group_prints_its_help_without_a_traceback(tmp_path):
    """``no_args_is_help``: click >= 8.2 prints the help on stderr and exits 2 (older click: stdout, 0)."""
    for script, args in (("unified-bench", []), ("unified-bench", ["weights"]), ("uae-reference", ["rl"])):
        result = run(script, args, tmp_path)
        assert result.returncode in (0, 2) and "Traceback" not in result.stderr, result.stderr
        assert "Usage:" in result.stdout + result.stderr


def test_project_errors_keep_their_one_line_and_exit_2(tmp_path):
    result = run("unified-bench", ["score", "--images", "missing", "--refs", "missing", "--out", "out"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], result.stderr


# --- eval's scoring options reach the scoring engine ---------------------------------------------


@pytest.fixture
def scoring_spy(monkeypatch, tmp_path):
    """Toy metrics, and a record of the ScoringConfig each run scores with and of what the engine
    asks the embedding metric to do (fuse its forward, preprocess on the device)."""
    import unified_bench.runner.score as score_module

    toy_metrics.register(monkeypatch, "toy-embed")
    monkeypatch.setenv("UNIFIED_BENCH_CACHE", str(tmp_path / "cache"))
    for key in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    seen: dict[str, list] = {"configs": [], "metric": []}
    real = score_module.score_and_write

    def spy(pairs, config, *args, **kwargs):
        seen["configs"].append(config)
        return real(pairs, config, *args, **kwargs)

    def enable_fusion(self):
        seen["metric"].append("fuse")
        return False

    def preprocess_on_device(self, resize=True):
        seen["metric"].append(("device", resize))
        return "none"

    monkeypatch.setattr(score_module, "score_and_write", spy)
    monkeypatch.setattr(toy_metrics.ToyEmbedding, "enable_fusion", enable_fusion)
    monkeypatch.setattr(toy_metrics.ToyEmbedding, "preprocess_on_device", preprocess_on_device)
    return seen


@pytest.mark.parametrize(
    ("flags", "fuse", "mode", "metric_calls"),
    [
        ([], None, None, []),  # the defaults: the engine decides (no fusion under 64 images, CPU preprocessing)
        (["--fuse", "--device-preprocessing", "normalize"], True, "normalize", ["fuse", ("device", False)]),
        (["--no-fuse", "--device-preprocessing", "resize"], False, "resize", [("device", True)]),
    ],
)
def test_eval_scoring_options_reach_the_scoring_config(scoring_spy, tmp_path, flags, fuse, mode, metric_calls):
    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    main(["eval", "--model", "mock", "--model-arg", "size=32", "--data", str(data), "--out", str(out),
          "--metrics", "toy-embed", "--no-progress", *flags])  # returns normally: exit status 0
    (config,) = scoring_spy["configs"]
    assert config.fuse is fuse and config.device_preprocessing == mode
    assert type(config.device_preprocessing) in (type(None), str)  # the plain string, not the CLI's enum
    assert scoring_spy["metric"] == metric_calls
    assert (out / "results.json").is_file()
