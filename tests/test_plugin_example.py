"""Acceptance 6: the example plugin installs as its own package and runs through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from runner_helpers import REPO, cli_env, make_images, read_captions


@pytest.mark.slow
def test_plugin_installs_lists_and_runs(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO / "examples" / "unified-bench-plugin-example", source)  # builds write into the tree
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    assert (target / "unified_bench_plugin_example" / "adapter.py").is_file()
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    cli = [sys.executable, "-m", "unified_bench"]

    listed = subprocess.run([*cli, "models"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "example-echo" in line)
    assert "plugin:" in row  # the table may wrap the distribution name
    args = subprocess.run([*cli, "models", "example-echo"], env=env, capture_output=True, text=True, timeout=120)
    assert "palette" in args.stdout and "colour family" in args.stdout

    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    run = subprocess.run(
        [*cli, "eval", "--model", "example-echo", "--model-arg", "palette=cool", "--data", str(data),
         "--metrics", "ssim", "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    captions = read_captions(out)
    assert sorted(captions) == ["img00", "img01"] and captions["img00"]["caption"].startswith("a ")
    record = json.loads((out / "results.json").read_text())["run"]
    assert record["model"]["adapter"]["source"] == "plugin:unified-bench-plugin-example"
    assert record["model"]["args"] == {"palette": "cool"}
    assert record["model"]["adapter"]["describe"] == {"kind": "example", "size": 64, "palette": "cool"}

    bad = subprocess.run([*cli, "eval", "--model", "example-echo", "--model-arg", "palette=red", "--data", str(data),
                          "--metrics", "ssim", "--out", str(tmp_path / "bad")], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not one of warm, cool" in bad.stderr
