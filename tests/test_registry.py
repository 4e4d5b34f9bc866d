"""The adapter registry: lazy table, aliases, presets, decorator, --model-arg coercion."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import Literal, Optional

import pytest

from unified_bench.adapters import registry
from unified_bench.adapters.base import Adapter, ArgSpec, Capabilities
from unified_bench.adapters.registry import (
    PRESETS,
    build,
    build_adapter,
    coerce_value,
    declared_args,
    list_adapters,
    parse_model_args,
    register_adapter,
    resolve,
    unregister_adapter,
)
from unified_bench.core.errors import ConfigError

EXPECTED = {"mock", "precomputed", "openai", "remote", "pair", "janus-pro", "emu3", "uae", "shapes-oracle", "blank", "degrade"}


def test_table_lists_every_builtin_without_importing_models():
    code = (
        "import sys\n"
        "from unified_bench.adapters.registry import list_adapters, list_presets\n"
        "names = {s.name for s in list_adapters()}; list_presets()\n"
        "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'unified_bench.adapters.mock') if m in sys.modules]\n"
        "print(sorted(names)); print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in EXPECTED:
        assert f"'{name}'" in out


def test_targets_point_where_the_issue_says():
    specs = {s.name: s for s in list_adapters()}
    assert specs["pair"].target == "unified_bench.adapters.pair:PairAdapter"
    assert specs["janus-pro"].target == "unified_bench.adapters.janus:JanusProAdapter"
    assert specs["emu3"].target == "unified_bench.adapters.emu3:Emu3Adapter"
    assert specs["uae"].target == "unified_bench.adapters.uae:UaeAdapter"
    assert specs["shapes-oracle"].target == "unified_bench.tracks.shapes.adapters:ShapesOracleAdapter"
    assert specs["blank"].target == "unified_bench.tracks.shapes.adapters:BlankAdapter"
    assert specs["degrade"].target == "unified_bench.tracks.sanity:DegradeAdapter"
    assert "diffusers" in specs["pair"].needs and "peft" in specs["uae"].needs


def test_resolve_alias_and_preset():
    spec, args = resolve("janus")
    assert spec.name == "janus-pro" and args == {}
    spec, args = resolve("janus-pro-7b")
    assert spec.name == "janus-pro" and args == {"model": "deepseek-community/Janus-Pro-7B"}
    assert resolve("janus-pro-1b")[1]["model"] == "deepseek-community/Janus-Pro-1B"
    with pytest.raises(ConfigError, match="unknown model 'nope'.*mock"):
        resolve("nope")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_names_declared_arguments(preset):
    spec, args = resolve(preset)
    module = spec.target.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this checkout")
    cls = registry.load_adapter_class(spec)
    names = {a.name for a in declared_args(cls)}
    assert set(args) <= names, f"{preset} passes {set(args) - names} which {spec.target} does not declare"


def test_model_args_are_coerced_against_the_dataclass_config():
    built = build("mock", parse_model_args(["size=48", "noise=0.5", "fail_caption_ids=a,b", "slow-ms=2"]))
    assert built.args == {"size": 48, "noise": 0.5, "fail_caption_ids": ("a", "b"), "slow_ms": 2.0}
    assert built.adapter.config.size == 48 and built.adapter.capabilities.native_resolution == (48, 48)
    with pytest.raises(ConfigError, match="expected int, got 'big'"):
        build("mock", {"size": "big"})
    with pytest.raises(ConfigError, match="has no argument colour; it accepts: .*noise"):
        build("mock", {"colour": "red"})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_model_args(["novalue"])


def test_coerce_value_types():
    assert coerce_value("yes", bool) is True and coerce_value("0", bool) is False
    assert coerce_value("none", Optional[int]) is None and coerce_value("3", Optional[int]) == 3
    assert coerce_value("auto", int | str) == "auto"
    assert coerce_value('["a", "b"]', list[str]) == ["a", "b"]
    assert coerce_value("1,2", tuple[int, ...]) == (1, 2)
    assert coerce_value('{"0": "cuda:0"}', dict) == {"0": "cuda:0"}
    assert coerce_value("fp16", Literal["fp16", "bf16"]) == "fp16"
    with pytest.raises(ConfigError):
        coerce_value("fp8", Literal["fp16", "bf16"])
    with pytest.raises(ConfigError):
        coerce_value("maybe", bool)
    assert coerce_value(5, int) == 5  # non-strings (Python callers) pass through


class _Toy(Adapter):
    """A toy adapter declared with ArgSpecs."""

    args = [ArgSpec("scale", 1.0, "how much"), ArgSpec("mode", "a", "which", choices=("a", "b")), ArgSpec("device_map", None, "", type=Optional[str])]

    def __init__(self, scale: float = 1.0, mode: str = "a", device_map: str | None = None) -> None:
        self.scale, self.mode, self.device_map = scale, mode, device_map

    def caption(self, images, *, prompt, seeds, sample_ids=None):
        return ["x"] * len(images)

    def generate(self, prompts, *, seeds, size, sample_ids=None):
        return []


def test_decorator_registration_with_argspecs():
    register_adapter("toy-argspec", aliases=("toy-alias",))(_Toy)
    try:
        assert _Toy.name == "toy-argspec"
        assert any(s.name == "toy-argspec" and s.source == "decorator" for s in list_adapters())
        adapter = build_adapter("toy-alias", {"scale": "2.5", "mode": "b", "device_map": "auto"})
        assert (adapter.scale, adapter.mode, adapter.device_map) == (2.5, "b", "auto")
        assert build_adapter("toy-argspec", {"device_map": "none"}).device_map is None
        with pytest.raises(ConfigError, match="not one of a, b"):
            build_adapter("toy-argspec", {"mode": "c"})
    finally:
        unregister_adapter("toy-argspec")
    with pytest.raises(ConfigError):
        resolve("toy-argspec")


def test_signature_style_and_required_arguments():
    @register_adapter("toy-signature")
    class Sig(Adapter):
        capabilities = Capabilities()

        def __init__(self, path: str, steps: int = 4) -> None:
            self.path, self.steps = path, steps

        def caption(self, images, *, prompt, seeds, sample_ids=None):
            return []

        def generate(self, prompts, *, seeds, size, sample_ids=None):
            return []

    try:
        with pytest.raises(ConfigError, match="needs --model-arg path=..."):
            build_adapter("toy-signature")
        adapter = build_adapter("toy-signature", {"path": "/x", "steps": "8"})
        assert (adapter.path, adapter.steps) == ("/x", 8)
    finally:
        unregister_adapter("toy-signature")
    with pytest.raises(TypeError):
        register_adapter("bad")(object)


def test_missing_module_is_a_config_error(monkeypatch):
    monkeypatch.setitem(
        registry.BUILTIN,
        "ghost",
        registry.AdapterSpec("ghost", "unified_bench.adapters.no_such_module:Ghost", "x", needs=("no-such-dist-xyz",)),
    )
    with pytest.raises(ConfigError, match="cannot import.*install no-such-dist-xyz"):
        build_adapter("ghost")


def test_config_metadata_help_is_declared():
    from unified_bench.adapters.mock import MockAdapter

    args = {a.name: a for a in declared_args(MockAdapter)}
    assert args["slow_ms"].help and args["size"].default == 256 and not args["size"].required


# --- the one registry (unified_bench.core.registry) -----------------------------------------

from dataclasses import dataclass as _dataclass  # noqa: E402

from dist_info import REPO, pyproject_entry_points, write_dist_info  # noqa: E402

from unified_bench.core.registry import Registry, RegistryConflict  # noqa: E402


@_dataclass(frozen=True)
class _Spec:
    name: str
    target: str
    aliases: tuple[str, ...] = ()


def test_registry_aliases_never_shadow_ids():
    table = Registry("thing")
    table.register(_Spec("a", "pkg.mod:A", aliases=("alpha",)))
    table.register(_Spec("b", "pkg.mod:B"))
    assert table.lookup("alpha").name == "a" and table.lookup("nope") is None
    with pytest.raises(RegistryConflict, match="alias 'a' of thing 'c' would shadow the thing id 'a'"):
        table.register(_Spec("c", "pkg.mod:C", aliases=("a",)))
    assert "c" not in table.entries  # a failed registration leaves nothing behind
    with pytest.raises(RegistryConflict, match="would shadow the alias 'alpha'"):
        table.register(_Spec("alpha", "pkg.mod:Alpha"))
    with pytest.raises(RegistryConflict, match="would shadow the thing id 'b'"):
        table.add_alias("b", "a")
    with pytest.raises(RegistryConflict, match="already an alias of 'a'"):
        table.add_alias("alpha", "b")
    with pytest.raises(RegistryConflict, match="points to 'ghost', which is not a registered thing"):
        table.add_alias("spook", "ghost")
    table.add_alias("beta", "b")
    assert table.lookup("beta").name == "b"


def test_registry_conflicting_registration_raises_identical_is_a_noop():
    table = Registry("thing")
    first = table.register(_Spec("a", "pkg.mod:A"))
    assert table.register(_Spec("a", "pkg.mod:A")) is first  # same target: no-op
    with pytest.raises(RegistryConflict, match="'a' is already registered to pkg.mod:A; cannot register it again to pkg.other:A"):
        table.register(_Spec("a", "pkg.other:A"))
    with pytest.raises(ValueError, match="not an import path"):
        table.register(_Spec("d", "no colon here"))


def test_adapter_registry_rejects_conflicts():
    with pytest.raises(RegistryConflict, match="'mock' is already registered"):
        register_adapter("mock")(_Toy)
    with pytest.raises(RegistryConflict, match="alias 'mock' of model 'toy-shadow' would shadow"):
        register_adapter("toy-shadow", aliases=("mock",))(_Toy)
    with pytest.raises(RegistryConflict, match="would shadow the alias 'janus'"):
        register_adapter("janus")(_Toy)
    assert resolve("mock")[0].target == "unified_bench.adapters.mock:MockAdapter"
    assert resolve("janus")[0].name == "janus-pro"
    # the same class again (a re-run notebook cell) is fine
    register_adapter("toy-again")(_Toy)
    try:
        register_adapter("toy-again")(_Toy)
    finally:
        unregister_adapter("toy-again")


_BROKEN_MODULE = 'raise RuntimeError("boom at import")\n'


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """A distribution declaring good, broken, missing, malformed and conflicting plugins."""
    site = tmp_path / "site"
    write_dist_info(site, "ub-test-plugins", {
        "unified_bench.models": {
            "toy-plugin": "ub_toy_plugin:ToyPlugin",
            "broken-plugin": "ub_broken_plugin:Broken",
            "missing-plugin": "ub_not_installed_pkg.adapter:Missing",
            "malformed-plugin": "not an import path",
            "mock": "ub_toy_plugin:ToyPlugin",  # conflicts with the built-in
        },
        "unified_bench.metrics": {"clip": "ub_toy_plugin:Elsewhere", "broken-metric": "ub_broken_plugin:M"},
        "unified_bench.datasets": {"toy-set": "ub_toy_plugin:load", "broken-set": "ub_broken_plugin:load"},
    })
    (site / "ub_broken_plugin.py").write_text(_BROKEN_MODULE)
    (site / "ub_toy_plugin.py").write_text(
        "from unified_bench.adapters.mock import MockAdapter\n"
        "class ToyPlugin(MockAdapter):\n    '''a toy plugin'''\n"
        "def load(options, cache_dir):\n"
        "    from unified_bench.datasets.base import EvalDataset, Sample\n"
        "    from PIL import Image\n"
        "    return EvalDataset('toy-set', [Sample('a', image=Image.new('RGB', (8, 8)))], ('ssim',), 'toy', {'options': dict(options)})\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_broken_plugins_are_reported_by_name_and_others_keep_working(plugins):
    from unified_bench.adapters.registry import plugin_problems, unavailable

    specs = {s.name: s for s in list_adapters()}
    assert specs["toy-plugin"].source == "plugin:ub-test-plugins" and "broken-plugin" in specs
    assert build("toy-plugin", {"size": "16"}).adapter.config.size == 16
    assert resolve("mock")[0].target == "unified_bench.adapters.mock:MockAdapter"  # the built-in wins
    problems = {p.name: p for p in plugin_problems()}
    assert set(problems) == {"malformed-plugin", "mock"}
    assert "conflicts with the built-in model 'mock'" in problems["mock"].error
    # the module that raises on import fails when used, by name, with its error
    with pytest.raises(ConfigError, match=r"model 'broken-plugin': cannot import ub_broken_plugin \(RuntimeError: boom at import\)"):
        build_adapter("broken-plugin")
    with pytest.raises(ConfigError, match=r"^missing-plugin: provided by the package 'ub_not_installed_pkg', which cannot be imported \(No module named 'ub_not_installed_pkg'\) \(declared by plugin:ub-test-plugins\)"):
        build_adapter("missing-plugin")
    assert unavailable(specs["missing-plugin"]).startswith("provided by the package 'ub_not_installed_pkg'")
    assert unavailable(specs["toy-plugin"]) is None
    with pytest.raises(ConfigError, match="model 'malformed-plugin' cannot be used: plugin:ub-test-plugins declares it as not an import path, which malformed"):
        resolve("malformed-plugin")
    assert build_adapter("mock").name == "mock"


def test_broken_metric_and_dataset_plugins(plugins):
    from unified_bench.datasets.registry import list_datasets, load_eval_dataset
    from unified_bench.core.errors import DatasetError
    from unified_bench.metrics import METRICS, build_metric, get_spec

    assert get_spec("clip").target == "unified_bench.metrics.hf:ClipMetric"
    assert [p.name for p in METRICS.problems()] == ["clip"]
    with pytest.raises(ConfigError, match=r"metric 'broken-metric': cannot import ub_broken_plugin \(RuntimeError: boom at import\)"):
        build_metric("broken-metric")
    assert build_metric("ssim").info.name == "ssim"
    assert {"toy-set", "broken-set", "shapes"} <= {s.name for s in list_datasets()}
    dataset = load_eval_dataset("toy-set", {"anything": "goes"})
    assert dataset.name == "toy-set" and dataset.source == {"options": {"anything": "goes"}}
    with pytest.raises(DatasetError, match="dataset 'broken-set': cannot import ub_broken_plugin"):
        load_eval_dataset("broken-set")


def test_models_command_lists_broken_plugins_one_line_each(plugins):
    from runner_helpers import cli_env

    env = cli_env(plugins)
    env["PYTHONPATH"] = str(plugins) + ":" + env["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-m", "unified_bench", "models"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("not available: missing-plugin (plugin:ub-test-plugins") and "No module named 'ub_not_installed_pkg'" in line for line in lines)
    assert any(line.startswith("not available: malformed-plugin") for line in lines)
    assert any(line.startswith("not available: mock (plugin:ub-test-plugins") and "conflicts with the built-in" in line for line in lines)
    assert "toy-plugin" in proc.stdout and "blank" in proc.stdout and "janus-pro-7b" in proc.stdout


# --- the reference model registers through pyproject's entry points ---------------------------


def test_uae_entry_points_in_pyproject_resolve(tmp_path, monkeypatch):
    declared = pyproject_entry_points()["unified_bench.models"]
    assert declared == {
        "uae-reference": "uae_reference.adapter:UAEReferenceAdapter",
        "uae-tiny": "uae_reference.adapter:UAETinyAdapter",
    }
    write_dist_info(tmp_path, "unified-bench-under-test", {"unified_bench.models": declared})
    monkeypatch.syspath_prepend(str(tmp_path))
    spec, args = resolve("uae-tiny")
    assert spec.target == "uae_reference.adapter:UAETinyAdapter" and spec.source.startswith("plugin:") and args == {}
    from uae_reference.adapter import UAEReferenceAdapter, UAETinyAdapter

    assert registry.load_adapter_class(spec) is UAETinyAdapter
    assert registry.load_adapter_class(resolve("uae-reference")[0]) is UAEReferenceAdapter
    assert not any(p.name.startswith("uae") for p in registry.plugin_problems())
    # and no unified_bench module imports uae_reference: tests/test_layers.py checks the contract


# Makes uae_reference unimportable, as if it were not installed, then runs the CLI.
_WITHOUT_UAE = (
    "import sys, runpy, importlib.abc\n"
    "class Gone(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.partition('.')[0] == 'uae_reference':\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Gone())\n"
    "sys.argv = ['unified-bench', *sys.argv[1:]]\n"
    "runpy.run_module('unified_bench', run_name='__main__', alter_sys=True)\n"
)


def test_cli_works_without_uae_reference(tmp_path):
    from runner_helpers import cli_env

    site = tmp_path / "site"
    write_dist_info(site, "unified-bench-under-test", {"unified_bench.models": pyproject_entry_points()["unified_bench.models"]})
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = str(site) + ":" + env["PYTHONPATH"]

    def cli(*args):
        return subprocess.run([sys.executable, "-c", _WITHOUT_UAE, *args], env=env, capture_output=True, text=True, timeout=180)

    listed = cli("models")
    assert listed.returncode == 0, listed.stderr
    assert "mock" in listed.stdout and "janus-pro" in listed.stdout and "uae-official" in listed.stdout
    gone = [line for line in listed.stdout.splitlines() if line.startswith("not available:")]
    assert len(gone) == 2 and all("provided by the package 'uae_reference', which cannot be imported" in line for line in gone)

    run = cli("eval", "--model", "uae-tiny", "--data", "shapes", "--limit", "1", "--metrics", "ssim", "--out", str(tmp_path / "run"), "--no-progress")
    assert run.returncode == 2, run.stdout + run.stderr
    message = " ".join(run.stderr.split())
    assert message.startswith(
        "error: uae-tiny: provided by the package 'uae_reference', which cannot be imported "
        "(No module named 'uae_reference')"
    ), message
    assert "Traceback" not in run.stderr
    assert cli("metrics").returncode == 0


# --- presets for published rows -------------------------------------------------------------


def _reported_entries() -> dict:
    import json
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "leaderboard" / "entries"
    entries = {}
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "reported" in data:
            entries[data.get("entry_id") or f"reported:{path.stem}"] = data
    return entries


def test_every_target_is_a_shipped_reported_row():
    """A preset's targets name reported entries that exist; each names the entry's table and row."""
    entries = _reported_entries()
    targeted = [(p, t) for p in PRESETS.values() for t in p.targets]
    assert len(targeted) >= 8
    for preset, target in targeted:
        assert target.entry in entries, f"{preset.name} targets {target.entry}, which leaderboard/entries lacks"
        reported = entries[target.entry]["reported"]
        if "table" in reported:
            table_number = reported["table"].split(",")[0].split(" (")[0]  # "Table 2"
            assert f"{table_number}, '{reported['row']}" in target.row, (target.row, reported["table"], reported["row"])
            assert reported["printed"]["score"] in target.row  # the row's overall, as printed
        assert target.note, f"{preset.name}: say how the preset relates to {target.entry}"
    # one preset per published row: two presets aiming at one row would be two claims to reproduce it
    ids = [t.entry for _, t in targeted]
    assert len(ids) == len(set(ids))


def test_models_lists_each_presets_published_rows():
    import os

    def models(*args: str) -> str:
        env = {**os.environ, "COLUMNS": "400"}  # rich wraps table cells to the terminal's width
        run = subprocess.run([sys.executable, "-m", "unified_bench", "models", *args], capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        return " ".join(run.stdout.split())

    out = models()
    assert "targets (published rows)" in out
    for row in ("Table 2, 'Janus-Pro [8]' (82.77)", "Table 2, 'UAE' (86.09)", "Table 2, 'GPT-4o-Image [41]' (85.95)",
                "Table 3, 'Qwen-2.5-VL-3B [3]' (80.85)"):
        assert row in out
    out = models("janus-pro-7b")
    assert "targets UAE paper, arXiv:2509.09666v5 Table 2, 'Janus-Pro [8]' (82.77) [reported:uae-v5-table2-janus-pro]" in out
    assert "7B is inferred, not stated" in out
