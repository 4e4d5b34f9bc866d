"""``--model path/to/file.py:Class`` and ``--model package.module:Class``: an adapter class
loaded directly, recorded by import path (and, for a file, the file's SHA-256)."""

from __future__ import annotations

import hashlib
import json

import pytest
from runner_helpers import make_images

from unified_bench.cli import main
from unified_bench.core.errors import ConfigError
from unified_bench.adapters.registry import prepare
from unified_bench.results import load_results

ADAPTER_FILE = '''
from dataclasses import dataclass, field

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities


@dataclass
class FlatConfig:
    shade: int = field(default=128, metadata={"help": "grey level of every generated image"})


class FlatGrey(Adapter):
    name = "flat-grey"
    config_class = FlatConfig

    def __init__(self, config=None):
        self.config = config or FlatConfig()
        self.capabilities = Capabilities(max_batch_size=4, native_resolution=(32, 32))

    def caption(self, images, *, prompt, seeds, sample_ids=None):
        return ["a grey square"] * len(images)

    def generate(self, prompts, *, seeds, size, sample_ids=None):
        return [Image.new("RGB", size, (self.config.shade,) * 3) for _ in prompts]


class NotAnAdapter:
    pass
'''


def test_file_adapter_runs_and_is_recorded_by_path_and_hash(toys, tmp_path):
    source = tmp_path / "my_adapter.py"
    source.write_text(ADAPTER_FILE)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    main(["eval", "--model", f"{source}:FlatGrey", "--model-arg", "shade=10", "--data", str(data), "--out", str(out),
          "--metrics", "toy-pair", "--no-progress"])
    run = load_results(out)["run"]
    adapter = run["model"]["adapter"]
    assert adapter["source"] == f"file:{source.resolve()}"
    assert adapter["target"] == f"{source.resolve()}:FlatGrey"
    assert adapter["sha256"] == digest
    assert run["model"]["args"] == {"shade": 10}
    assert json.loads((out / "run.json").read_text())["adapter"]["sha256"] == digest


def test_module_adapter_is_recorded_by_module(toys, tmp_path):
    data = make_images(tmp_path / "data", 1)
    out = tmp_path / "run"
    main(["eval", "--model", "unified_bench.adapters.mock:MockAdapter", "--model-arg", "size=32", "--data", str(data),
          "--out", str(out), "--metrics", "toy-pair", "--no-progress"])
    adapter = load_results(out)["run"]["model"]["adapter"]
    assert adapter["source"] == "module:unified_bench.adapters.mock"
    assert adapter["target"] == "unified_bench.adapters.mock:MockAdapter"
    assert "sha256" not in adapter


def test_registered_names_keep_their_record(toys, tmp_path):
    data = make_images(tmp_path / "data", 1)
    out = tmp_path / "run"
    main(["eval", "--model", "mock", "--model-arg", "size=32", "--data", str(data), "--out", str(out),
          "--metrics", "toy-pair", "--no-progress"])
    adapter = load_results(out)["run"]["model"]["adapter"]
    assert adapter["source"] == "builtin" and "sha256" not in adapter


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("{dir}/missing.py:FlatGrey", "no adapter file"),
        ("{dir}/my_adapter.py:Nope", "defines no 'Nope'"),
        ("{dir}/my_adapter.py:NotAnAdapter", "is not an Adapter subclass"),
        ("{dir}/broken.py:X", "failed to import: ZeroDivisionError"),
        ("unified_bench.adapters.mock:Nope", "has no attribute 'Nope'"),
        ("unified_bench.adapters.mock:MockConfig", "is not an Adapter subclass"),
        ("no_such_package_here.mod:Thing", "no_such_package_here"),
    ],
)
def test_direct_adapter_errors(tmp_path, target, fragment):
    (tmp_path / "my_adapter.py").write_text(ADAPTER_FILE)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ConfigError) as err:
        prepare(target.format(dir=tmp_path), {})
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_direct_adapter_error_is_one_line_on_the_command_line(tmp_path, capsys):
    data = make_images(tmp_path / "data", 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", f"{tmp_path}/nope.py:X", "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no adapter file" in err[0]
