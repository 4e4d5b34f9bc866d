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

EXPECTED = {"mock", "precomputed", "openai", "remote", "pair", "janus-pro", "emu3", "uae", "shapes-oracle", "blank"}


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
