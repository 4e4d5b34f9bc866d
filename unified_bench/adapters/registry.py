"""Lazy adapter registry: model name -> where its class lives, what it needs, its presets.

The table is a :class:`unified_bench.core.registry.Registry` (the one class behind the
adapter, metric and dataset registries). Three ways an adapter becomes known:

1. the declarative table :data:`BUILTIN` below — ``"module:Class"`` strings, so listing the
   models imports nothing heavy; the module is imported only by :func:`build_adapter`;
2. ``register_adapter("name")`` — a decorator for classes defined in the running process
   (notebooks, tests, in-tree modules once imported);
3. the entry-point group ``unified_bench.models`` — an installed package declares
   ``my-model = "my_pkg.adapter:MyAdapter"`` in its ``pyproject.toml``. The reference model
   (``uae-reference``, ``uae-tiny``) registers this way too, from this repository's
   ``pyproject.toml``, so an environment without ``uae_reference`` still works.

A name is registered once: registering it again to another class, or an alias that would
shadow a name, raises :class:`~unified_bench.core.registry.RegistryConflict`. A plugin that
conflicts or cannot be imported is reported by name (``unified-bench models``) and fails only
when it is used.

**Declaring arguments.** ``--model-arg key=value`` strings are coerced to the type each
argument declares. An adapter declares its arguments in one of three ways (first match wins):

- ``config_class``: a dataclass (fields with defaults, help in ``field(metadata={"help": ...})``);
  the adapter is built as ``cls(config_class(**values))``. ``"affects_outputs": False`` in the
  metadata marks a transport setting (see :func:`split_args`); ``"args_of": "FIELD"`` marks a
  dict of arguments for the adapter named by another field (``compose``'s halves);
- ``args``: a list of :class:`~unified_bench.adapters.base.ArgSpec`; built as ``cls(**values)``;
- neither: the keyword parameters of ``__init__`` (annotations give the types); ``cls(**values)``.

Conventions for model adapters: ``model`` (hub id or local path), ``device``, ``dtype`` and
``device_map`` (``"auto"`` spreads a model too large for one GPU over several, via accelerate).

**Presets** are named argument bundles (``janus-pro-7b`` = ``janus-pro`` with
``model=deepseek-community/Janus-Pro-7B``); ``--model-arg`` overrides a preset's values.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from unified_bench.adapters.base import Adapter
from unified_bench.core.registry import PluginProblem, Registry, RegistryConflict, module_available  # noqa: F401 (re-exported)
from unified_bench.core.errors import ConfigError

ENTRY_POINT_GROUP = "unified_bench.models"

_MISSING = object()


@dataclass(frozen=True)
class AdapterSpec:
    """Where an adapter lives and what it needs; nothing is imported to describe it."""

    name: str
    target: str  # "package.module:Class"
    description: str
    needs: tuple[str, ...] = ()  # pip distributions; "env:VAR" for variables; free text for services
    aliases: tuple[str, ...] = ()
    #: "builtin" | "decorator" | "plugin:<distribution>" | "file:<path>" | "module:<module>"
    #: (the last two: ``--model path/to/file.py:Class`` or ``--model package.module:Class``)
    source: str = "builtin"
    sha256: str | None = None  # a "file:" adapter's file, as resolved


@dataclass(frozen=True)
class Target:
    """A published row a preset is meant to reproduce: a reported entry under
    ``leaderboard/entries`` (its ``entry_id``), the row in words, and how the preset departs
    from what the source ran or leaves open what the source does not state."""

    entry: str
    row: str
    note: str = ""


@dataclass(frozen=True)
class Preset:
    """A named argument bundle for one adapter, and the published rows it targets."""

    name: str
    adapter: str
    args: Mapping[str, Any]
    description: str
    targets: tuple[Target, ...] = ()


_HF = ("transformers", "accelerate")

#: The in-tree adapters. Targets are imported only when the model is built.
_BUILTIN_SPECS: list[AdapterSpec] = [
    AdapterSpec(
        "mock",
        "unified_bench.adapters.mock:MockAdapter",
        "deterministic test double: caption from colour statistics, image from caption+seed",
    ),
    AdapterSpec(
        "precomputed",
        "unified_bench.adapters.precomputed:PrecomputedAdapter",
        "captions and images produced elsewhere (a folder with images/ and captions.jsonl)",
    ),
    AdapterSpec(
        "openai",
        "unified_bench.adapters.openai_api:OpenAIAdapter",
        "OpenAI-compatible HTTP API: chat completions to caption, images API to generate",
        needs=("env:OPENAI_API_KEY", "network access to the API"),
        aliases=("openai-api",),
    ),
    AdapterSpec(
        "remote",
        "unified_bench.adapters.remote:RemoteAdapter",
        "a model served elsewhere by `unified-bench serve` (its own environment or machine)",
        needs=("a running `unified-bench serve`",),
    ),
    AdapterSpec(
        "pair",
        "unified_bench.adapters.pair:PairAdapter",
        "any transformers image-text-to-text model + any diffusers text-to-image pipeline",
        needs=(*_HF, "diffusers"),
    ),
    AdapterSpec(
        "compose",
        "unified_bench.adapters.compose:ComposeAdapter",
        "any registered adapter captions, any registered adapter generates (captioner=, generator=, *_args=JSON)",
    ),
    AdapterSpec(
        "janus-pro",
        "unified_bench.adapters.janus:JanusProAdapter",
        "DeepSeek Janus-Pro through transformers (understanding and generation)",
        needs=_HF,
        aliases=("janus",),
    ),
    AdapterSpec(
        "emu3",
        "unified_bench.adapters.emu3:Emu3Adapter",
        "BAAI Emu3 through transformers (chat and generation checkpoints)",
        needs=_HF,
    ),
    AdapterSpec(
        "cosmos3",
        "unified_bench.adapters.cosmos3:Cosmos3Adapter",
        "NVIDIA Cosmos 3: Reasoner captions (transformers), Generator draws (diffusers), one checkpoint",
        needs=(*_HF, "diffusers"),
    ),
    AdapterSpec(
        "unidiffuser",
        "unified_bench.adapters.unidiffuser:UniDiffuserAdapter",
        "UniDiffuser: one joint image-text diffusion model, img2text and text2img modes (diffusers)",
        needs=("transformers", "diffusers"),
    ),
    AdapterSpec(
        "uae",
        "unified_bench.adapters.uae:UaeAdapter",
        "UAE official release: Qwen2.5-VL + LoRA + projector, SD3.5 transformer + LoRA",
        needs=(*_HF, "diffusers", "peft"),
    ),
    AdapterSpec(
        "shapes-oracle",
        "unified_bench.tracks.shapes.adapters:ShapesOracleAdapter",
        "Shapes track oracle: exact scene caption and exact re-render (upper bound)",
    ),
    AdapterSpec(
        "blank",
        "unified_bench.tracks.shapes.adapters:BlankAdapter",
        "lower bound: a fixed caption and a blank image",
    ),
    AdapterSpec(
        "degrade",
        "unified_bench.tracks.sanity:DegradeAdapter",
        "metric sanity test double: the reconstruction is a degraded copy (or another photo) of the input",
    ),
]

_UAE_V5 = "UAE paper, arXiv:2509.09666v5"
_NO_SETTINGS = (
    "The paper states the 100 images, the captioning prompt and that the same model draws from its own caption; "
    "it states no caption sampling, generation size, steps, guidance or seeds, so the preset keeps the adapter's "
    "defaults (the model's own official settings)"
)
_JANUS_SIZE = (
    "the source does not name the Janus-Pro size; 7B is inferred, not stated: for 'Janus Pro [8]' it prints GenEval 0.80 "
    "(Table 4) and DPG-Bench 84.19 (Table 9), the figures the Janus-Pro paper gives for Janus-Pro-7B. " + _NO_SETTINGS
)
_UAE_RELEASE = (
    "the released checkpoints (zhiyuanyan1/UAE) with the official demo.py settings; the paper does not say which "
    "release its numbers came from"
)
_TABLE3_DECODER = (
    "the captioner is the row's; the text read does not name the generator used for Table 3's rows: this preset draws "
    "with SD3.5-large, the base of UAE's decoder, so it is the closest runnable setting, not the paper's stated one"
)

#: Named argument bundles. Arguments are checked against the adapter when it is built.
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in [
        Preset(
            "janus-pro-1b",
            "janus-pro",
            {"model": "deepseek-community/Janus-Pro-1B"},
            "Janus-Pro 1B (transformers format)",
        ),
        Preset(
            "janus-pro-7b",
            "janus-pro",
            {"model": "deepseek-community/Janus-Pro-7B"},
            "Janus-Pro 7B (transformers format)",
            targets=(
                Target("reported:uae-v5-table2-janus-pro", f"{_UAE_V5} Table 2, 'Janus-Pro [8]' (82.77)", _JANUS_SIZE),
                Target("reported:uae-v5-table1-janus-pro", f"{_UAE_V5} Table 1, 'Janus-pro' Unified-Score (82.8)", _JANUS_SIZE),
            ),
        ),
        Preset(
            "uae-official",
            "uae",
            {},
            "UAE official release with the paper's settings (adapter defaults)",
            targets=(
                Target("reported:uae-arxiv-2509.09666", "arXiv:2509.09666, UAE's unified score (86.09)", _UAE_RELEASE),
                Target("reported:uae-v5-table2-uae", f"{_UAE_V5} Table 2, 'UAE' (86.09)", _UAE_RELEASE),
                Target("reported:uae-v5-table3-uae-captioner", f"{_UAE_V5} Table 3, 'UAE' (86.09)", _UAE_RELEASE),
            ),
        ),
        Preset(
            "qwen2.5-vl-7b+sd3.5-large",
            "pair",
            {"captioner": "Qwen/Qwen2.5-VL-7B-Instruct", "generator": "stabilityai/stable-diffusion-3.5-large"},
            "a non-unified baseline pair: Qwen2.5-VL-7B captions, SD3.5-large draws (paper settings)",
            targets=(Target("reported:uae-v5-table3-qwen-2-5-vl-7b-captioner", f"{_UAE_V5} Table 3, 'Qwen-2.5-VL-7B [3]' (81.92)", _TABLE3_DECODER),),
        ),
        Preset(
            "qwen2.5-vl-3b+sd3.5-large",
            "pair",
            {"captioner": "Qwen/Qwen2.5-VL-3B-Instruct", "generator": "stabilityai/stable-diffusion-3.5-large"},
            "UAE's two base models before any joint training (paper settings)",
            targets=(Target("reported:uae-v5-table3-qwen-2-5-vl-3b-captioner", f"{_UAE_V5} Table 3, 'Qwen-2.5-VL-3B [3]' (80.85)", _TABLE3_DECODER),),
        ),
        Preset(
            "qwen2.5-vl-7b+flux.1-dev",
            "pair",
            {
                "captioner": "Qwen/Qwen2.5-VL-7B-Instruct",
                "generator": "black-forest-labs/FLUX.1-dev",
                # FLUX.1-dev is guidance-distilled: its own recommended settings, not CFG 5.0
                "guidance_scale": 3.5,
                "steps": 28,
            },
            "Qwen2.5-VL-7B with FLUX.1-dev at FLUX's recommended 28 steps, guidance 3.5",
        ),
        Preset(
            "gpt-4o-image",
            "openai",
            {"caption_model": "gpt-4o", "image_model": "gpt-image-1"},
            "GPT-4o captions and GPT-4o image generation (gpt-image-1) through OpenAI's API",
            targets=(
                Target(
                    "reported:uae-v5-table2-gpt-4o-image",
                    f"{_UAE_V5} Table 2, 'GPT-4o-Image [41]' (85.95)",
                    "the source names 'GPT-4o-Image', citing OpenAI's 4o image generation announcement, and gives no "
                    "API model ids or dates; gpt-4o and gpt-image-1 are this preset's choice",
                ),
            ),
        ),
        Preset(
            "emu3-hf",
            "emu3",
            {"model": "BAAI/Emu3-Chat-hf", "gen_model": "BAAI/Emu3-Gen-hf"},
            "Emu3 chat + generation checkpoints in transformers format",
        ),
        Preset(
            "cosmos3-nano",
            "cosmos3",
            {"model": "nvidia/Cosmos3-Nano"},
            "Cosmos 3 Nano (16B: 8B Reasoner + 8B Generator), NVIDIA's Diffusers text-to-image settings",
        ),
        Preset(
            "cosmos3-super",
            "cosmos3",
            {"model": "nvidia/Cosmos3-Super"},
            "Cosmos 3 Super (64B: 32B Reasoner + 32B Generator), NVIDIA's Diffusers text-to-image settings",
        ),
        Preset(
            "unidiffuser-v1",
            "unidiffuser",
            {"model": "thu-ml/unidiffuser-v1"},
            "UniDiffuser v1 (512x512) with the official sampling config: 50 DPM-Solver steps, guidance 7",
        ),
    ]
}


def _plugin_spec(name: str, target: str, dist: str) -> AdapterSpec:
    return AdapterSpec(
        name,
        target,
        f"plugin adapter {target} (from the {dist} distribution)",
        needs=(dist,) if dist != "unknown" else (),
        source=f"plugin:{dist}",
    )


def _install_hint(spec: AdapterSpec) -> str:
    missing = [need for need in spec.needs if not need_satisfied(need)]
    return f"; install {', '.join(missing)}" if missing else ""


#: The one registry of adapters (built-ins, decorator registrations, entry-point plugins).
ADAPTERS: Registry[AdapterSpec] = Registry(
    "model",
    group=ENTRY_POINT_GROUP,
    plugin_spec=_plugin_spec,
    list_command="unified-bench models",
)
for _spec in _BUILTIN_SPECS:
    ADAPTERS.register(_spec)
del _spec

#: The built-in and in-process entries (a live view: ``ADAPTERS.entries``).
BUILTIN: dict[str, AdapterSpec] = ADAPTERS.entries


def register_adapter(
    name: str,
    *,
    description: str | None = None,
    needs: Sequence[str] = (),
    aliases: Sequence[str] = (),
) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: make ``cls`` buildable as ``name`` in this process.

    Registering a name that is taken by another class raises ``RegistryConflict``;
    registering the same class again (a re-run cell, a reloaded module) is a no-op."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f"@register_adapter({name!r}) needs an Adapter subclass, got {cls!r}")
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        spec = AdapterSpec(
            name,
            f"{cls.__module__}:{cls.__qualname__}",
            description or (doc[0] if doc else cls.__qualname__),
            tuple(needs),
            tuple(aliases),
            source="decorator",
        )
        ADAPTERS.register(spec, obj=cls)
        if cls.__dict__.get("name") in (None, "adapter"):
            cls.name = name
        return cls

    return decorate


def unregister_adapter(name: str) -> None:
    """Forget a decorator-registered adapter (tests)."""
    if name in ADAPTERS.entries and ADAPTERS.entries[name].source == "decorator":
        ADAPTERS.unregister(name)


def all_specs() -> dict[str, AdapterSpec]:
    """Every usable adapter: plugins, then built-ins and decorator registrations."""
    return ADAPTERS.specs()


def plugin_problems() -> list[PluginProblem]:
    """Entry points of ``unified_bench.models`` that could not be registered."""
    return ADAPTERS.problems()


def unavailable(spec: AdapterSpec) -> str | None:
    """Why ``spec``'s module cannot be imported, found without importing it; None if it can."""
    if ADAPTERS.object(spec.name) is not None:
        return None
    module = spec.target.partition(":")[0]
    top = module.partition(".")[0]
    if top != "unified_bench":
        why = module_available(top)
        if why is not None:
            return f"provided by the package {top!r}, which cannot be imported ({why})"
    why = module_available(module)
    return None if why is None else f"cannot import {module} ({why})"


def list_adapters() -> list[AdapterSpec]:
    specs = all_specs()
    return [specs[name] for name in sorted(specs)]


def list_presets() -> list[Preset]:
    return [PRESETS[name] for name in sorted(PRESETS)]


def preset_targets(name: str | None) -> tuple[Target, ...]:
    """The published rows the preset ``name`` targets (none for any other name)."""
    preset = PRESETS.get(name) if isinstance(name, str) else None
    return preset.targets if preset is not None else ()


def resolve(name: str) -> tuple[AdapterSpec, dict[str, Any]]:
    """A model name, alias or preset -> (adapter spec, preset arguments)."""
    if name in ADAPTERS.entries:
        return ADAPTERS.entries[name], {}
    if name in PRESETS:
        preset = PRESETS[name]
        spec, base = resolve(preset.adapter)
        return spec, {**base, **preset.args}
    spec = ADAPTERS.lookup(name)
    if spec is not None:
        return spec, {}
    direct = direct_spec(name)
    if direct is not None:
        return direct, {}
    problem = ADAPTERS.problem(name)
    if problem is not None:
        raise ConfigError(ADAPTERS.unknown_message(name))
    known = sorted(set(all_specs()) | set(PRESETS))
    raise ConfigError(
        f"unknown model {name!r}; known models and presets: {', '.join(known)} "
        f"(run `unified-bench models`; third-party adapters register under the "
        f"'{ENTRY_POINT_GROUP}' entry-point group)"
    )


_FILE_TARGET = re.compile(r"^(?P<path>.+\.py):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_MODULE_TARGET = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")


def direct_spec(name: str) -> AdapterSpec | None:
    """``path/to/file.py:Class`` or ``package.module:Class`` as a spec (None: neither form).

    A file's spec names its absolute path and SHA-256; nothing is imported here. A missing
    file is a one-line error."""
    match = _FILE_TARGET.match(name)
    if match is not None:
        path = Path(match["path"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"model {name!r}: no adapter file {match['path']}")
        path = path.resolve()
        return AdapterSpec(
            name=name,
            target=f"{path}:{match['attr']}",
            description=f"adapter class loaded from {path}",
            source=f"file:{path}",
            sha256=_sha256(path.read_bytes()),
        )
    match = _MODULE_TARGET.match(name)
    if match is not None:
        return AdapterSpec(
            name=name,
            target=name,
            description=f"adapter class imported from {match['module']}",
            source=f"module:{match['module']}",
        )
    return None


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _load_file_class(spec: AdapterSpec) -> Any:
    """Execute a ``file:`` spec's file (the bytes it was hashed from) as a fresh module."""
    import importlib.util
    import sys

    path_text, _, attr = spec.target.rpartition(":")
    path = Path(path_text)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"model {spec.name!r}: cannot read {path} ({err.strerror or err})") from None
    if spec.sha256 is not None and _sha256(data) != spec.sha256:
        raise ConfigError(f"model {spec.name!r}: {path} changed after it was resolved; run again")
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_unified_bench_adapter_file_{_sha256(data)[:16]}_{stem}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
        assert module_spec is not None
        module = importlib.util.module_from_spec(module_spec)
        module.__file__ = str(path)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
        try:
            exec(compile(data, str(path), "exec"), module.__dict__)
        except Exception as err:  # the user's code: any failure is one line
            sys.modules.pop(module_name, None)
            raise ConfigError(f"model {spec.name!r}: {path} failed to import: {type(err).__name__}: {err}") from None
    obj: Any = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"model {spec.name!r}: {path} defines no {attr!r}") from None
    return obj


def load_adapter_class(spec: AdapterSpec, *, name: str | None = None) -> type[Adapter]:
    """Import the adapter's module (the only place heavy imports happen)."""
    if spec.source.startswith("file:"):
        cls = _load_file_class(spec)
    else:
        cls = ADAPTERS.load(spec, name=name, hint=_install_hint(spec))
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"model {spec.name!r}: {spec.target} is not an Adapter subclass")
    return cls


# --- declared arguments ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredArg:
    """One argument an adapter accepts, with the type used to coerce command-line strings."""

    name: str
    type: Any  # a typing annotation, or None when unknown
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    affects_outputs: bool = True  # False: how outputs are fetched (timeouts, retries, address)
    args_of: str | None = None  # this dict holds the arguments of the adapter named by that field

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def declared_args(cls: type[Adapter]) -> list[DeclaredArg]:
    """The arguments ``cls`` accepts (see the module docstring for the three styles)."""
    config_class = getattr(cls, "config_class", None)
    if config_class is not None:
        hints = typing.get_type_hints(config_class)
        out = []
        for f in dataclasses.fields(config_class):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = _MISSING
            choices = f.metadata.get("choices")
            out.append(
                DeclaredArg(
                    f.name,
                    hints.get(f.name),
                    default,
                    f.metadata.get("help", ""),
                    tuple(choices) if choices else None,
                    bool(f.metadata.get("affects_outputs", True)),
                    f.metadata.get("args_of"),
                )
            )
        return out
    specs = getattr(cls, "args", None)
    if specs:
        return [
            DeclaredArg(
                s.name,
                getattr(s, "type", None) or (type(s.default) if s.default is not None else None),
                s.default,
                s.help,
                tuple(s.choices) if s.choices else None,
                bool(getattr(s, "affects_outputs", True)),
            )
            for s in specs
        ]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: fall back to defaults' types
        hints = {}
    out = []
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = _MISSING if param.default is param.empty else param.default
        annotation = hints.get(param.name)
        if annotation is None and default not in (_MISSING, None):
            annotation = type(default)
        out.append(DeclaredArg(param.name, annotation, default))
    return out


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}
_NONE = {"none", "null"}


def coerce_value(text: Any, annotation: Any, *, name: str = "value") -> Any:
    """Convert a command-line string to ``annotation`` (bool, int, float, str, Optional,
    Literal, tuple/list of those, dict from JSON). Non-strings pass through unchanged."""
    if not isinstance(text, str) or annotation is None or annotation is Any:
        return text
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if type(None) in args and text.strip().lower() in _NONE:
            return None
        errors = []
        for option in non_none:
            try:
                return coerce_value(text, option, name=name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"--model-arg {name}: cannot parse {text!r}")
    if origin is typing.Literal:
        for option in args:
            if str(option) == text:
                return option
        raise ConfigError(f"--model-arg {name}: {text!r} is not one of {', '.join(map(str, args))}")
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"--model-arg {name}: expected true/false, got {text!r}")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ConfigError(f"--model-arg {name}: expected {annotation.__name__}, got {text!r}") from None
    if annotation is str:
        return text
    if origin in (tuple, list, Sequence) or annotation in (tuple, list):
        items = _split_list(text)
        item_type = args[0] if args and args[0] is not Ellipsis else str
        values = [coerce_value(item, item_type, name=name) for item in items]
        return tuple(values) if origin is tuple or annotation is tuple else values
    if origin in (dict, Mapping) or annotation is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"--model-arg {name}: expected a JSON object, got {text!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--model-arg {name}: expected a JSON object, got {text!r}")
        return value
    return text


def _split_list(text: str) -> list[str]:
    """'a,b' or '["a","b"]' or '' -> list of strings."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            raise ConfigError(f"cannot parse list {text!r} as JSON") from None
        return [str(item) for item in value]
    return [item.strip() for item in stripped.split(",") if item.strip()]


def parse_model_args(items: Sequence[str] | None) -> dict[str, str]:
    """['k=v', ...] -> {'k': 'v'} (values stay strings until coerced against the adapter)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-arg expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def coerce_args(cls: type[Adapter], values: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """Check names against the declared arguments and coerce strings to their types."""
    declared = {arg.name: arg for arg in declared_args(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        accepted = ", ".join(sorted(declared)) or "(none)"
        raise ConfigError(f"model {model!r} has no argument {', '.join(unknown)}; it accepts: {accepted}")
    out: dict[str, Any] = {}
    for key, raw in values.items():
        arg = declared[key]
        value = coerce_value(raw, arg.type, name=key)
        if arg.choices and value not in arg.choices:
            raise ConfigError(f"--model-arg {key}: {value!r} is not one of {', '.join(map(str, arg.choices))}")
        out[key] = value
    missing = [a.name for a in declared.values() if a.required and a.name not in out]
    if missing:
        raise ConfigError(f"model {model!r} needs --model-arg {' '.join(m + '=...' for m in missing)}")
    return out


def split_args(cls: type[Adapter], values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` as (arguments that decide the outputs, transport arguments).

    A run's identity holds the first (a resume must match them); the second is recorded per
    invocation and may change between them. An argument the class does not declare counts as
    deciding the outputs. A dict marked ``args_of`` (``compose``'s ``captioner_args``) is split
    by the declaration of the adapter it configures, when that adapter can be resolved.
    """
    declared = {arg.name: arg for arg in declared_args(cls)}
    outputs: dict[str, Any] = {}
    transport: dict[str, Any] = {}
    for key, value in values.items():
        arg = declared.get(key)
        if arg is not None and not arg.affects_outputs:
            transport[key] = value
        elif arg is not None and arg.args_of and isinstance(value, Mapping) and isinstance(values.get(arg.args_of), str):
            inner_outputs, inner_transport = _split_nested(values[arg.args_of], value)
            outputs[key] = inner_outputs
            if inner_transport:
                transport[key] = inner_transport
        else:
            outputs[key] = value
    return outputs, transport


def _split_nested(name: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        spec, _ = resolve(name)
        cls = load_adapter_class(spec)
    except (ConfigError, ImportError):
        return dict(values), {}  # cannot tell: compare all of it, as before
    return split_args(cls, values)


@dataclass
class BuiltAdapter:
    """An adapter instance plus what was asked for, for the run record."""

    adapter: Adapter
    name: str  # the name the user gave (model, alias or preset)
    spec: AdapterSpec
    args: dict[str, Any] = field(default_factory=dict)  # coerced, preset + overrides


def prepare(name: str, args: Mapping[str, Any] | None = None) -> tuple[AdapterSpec, type[Adapter], dict[str, Any]]:
    """Resolve ``name``, import its class and coerce ``args`` (preset values, then overrides)
    without constructing it, so a caller can record or compare settings before loading."""
    spec, preset_args = resolve(name)
    cls = load_adapter_class(spec)
    merged = {**preset_args, **dict(args or {})}
    return spec, cls, coerce_args(cls, merged, model=name)


def instantiate(cls: type[Adapter], values: Mapping[str, Any]) -> Adapter:
    """Construct with coerced values, in the style the class declares its arguments."""
    config_class = getattr(cls, "config_class", None)
    return cls(config_class(**values)) if config_class is not None else cls(**values)


def build(name: str, args: Mapping[str, Any] | None = None) -> BuiltAdapter:
    """Resolve ``name`` (model, alias or preset), coerce ``args`` and construct the adapter."""
    spec, cls, values = prepare(name, args)
    return BuiltAdapter(instantiate(cls, values), name, spec, values)


def build_adapter(name: str, args: Mapping[str, Any] | None = None) -> Adapter:
    """``build_adapter("janus-pro-1b", {"device": "cuda"})`` -> a ready adapter."""
    return build(name, args).adapter


def need_satisfied(need: str) -> bool | None:
    """True/False for a pip distribution or ``env:VAR``; None when it cannot be checked."""
    import os

    if need.startswith("env:"):
        return bool(os.environ.get(need[4:]))
    if " " in need:
        return None
    try:
        version(need)
        return True
    except PackageNotFoundError:
        return False
