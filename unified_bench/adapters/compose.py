"""``compose``: any registered adapter captions, any registered adapter generates.

``--model compose --model-arg captioner=openai --model-arg captioner_args='{"base_url": ...}'
--model-arg generator=pair --model-arg generator_args='{"generator": ...}'`` joins, say, an
OpenAI-compatible captioner served by vLLM with a local diffusers generator (or the
reverse). Each half is built through the registry exactly as ``--model NAME --model-arg ...``
would build it (names, aliases, presets, ``file.py:Class``), so its arguments are checked
and coerced by that adapter's own declaration. ``caption()`` goes to the captioner only and
``generate()`` to the generator only; each half reports its own executed settings, and
``describe()`` records both halves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration


@dataclass
class ComposeConfig:
    captioner: str = field(metadata={"help": "adapter (name, alias, preset or file.py:Class) whose caption() is used"})
    generator: str = field(metadata={"help": "adapter (name, alias, preset or file.py:Class) whose generate() is used"})
    captioner_args: dict | None = field(default=None, metadata={"help": "the captioner's arguments, a JSON object", "args_of": "captioner"})
    generator_args: dict | None = field(default=None, metadata={"help": "the generator's arguments, a JSON object", "args_of": "generator"})


@dataclass
class _Half:
    name: str
    target: str
    source: str
    args: dict[str, Any]
    adapter: Adapter

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "source": self.source,
            "args": self.args,
            "describe": self.adapter.describe(),
        }


class ComposeAdapter(Adapter):
    """One adapter's captions feed another adapter's generator."""

    name = "compose"
    config_class = ComposeConfig

    def __init__(self, config: ComposeConfig) -> None:
        self.config = config
        self.captioner = _build("captioner", config.captioner, config.captioner_args)
        try:
            self.generator = _build("generator", config.generator, config.generator_args)
        except BaseException:
            self.captioner.adapter.close()
            raise
        cap, gen = self.captioner.adapter.capabilities, self.generator.adapter.capabilities
        if not cap.can_caption:
            self.close()
            raise ConfigError(f"compose: captioner {config.captioner!r} cannot caption")
        if not gen.can_generate:
            self.close()
            raise ConfigError(f"compose: generator {config.generator!r} cannot generate")
        self.capabilities = Capabilities(
            max_batch_size=max(1, min(cap.max_batch_size or 1, gen.max_batch_size or 1)),
            native_resolution=gen.native_resolution,
            deterministic=cap.deterministic and gen.deterministic,
            needs=tuple(dict.fromkeys((*cap.needs, *gen.needs))),
        )

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list:
        return self.captioner.adapter.caption(images, prompt=prompt, seeds=seeds, sample_ids=sample_ids)

    def generate(
        self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None
    ) -> list:
        return self.generator.adapter.generate(prompts, seeds=seeds, size=size, sample_ids=sample_ids)

    def caption_settings(self, prompt: str) -> ExecutedCaption | None:
        return self.captioner.adapter.caption_settings(prompt)

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration | None:
        return self.generator.adapter.generation_settings(size)

    def describe(self) -> dict[str, Any]:
        return {"kind": "compose", "captioner": self.captioner.record(), "generator": self.generator.record()}

    def output_identity(self) -> dict[str, Any] | None:
        halves = {"captioner": self.captioner.adapter.output_identity(), "generator": self.generator.adapter.output_identity()}
        return halves if any(v is not None for v in halves.values()) else None

    def close(self) -> None:
        for half in (self.generator if hasattr(self, "generator") else None, self.captioner):
            if half is not None:
                half.adapter.close()


def _build(role: str, name: str, args: dict | None) -> _Half:
    from unified_bench.adapters.registry import instantiate, prepare

    if not name:
        raise ConfigError(f"compose needs --model-arg {role}=NAME")
    if args is not None and not isinstance(args, dict):
        raise ConfigError(f"compose: {role}_args must be a JSON object, got {type(args).__name__}")
    try:
        spec, cls, values = prepare(name, args or {})
    except ConfigError as err:
        raise ConfigError(f"compose {role}: {err}") from err
    return _Half(name, spec.target, spec.source, dict(values), instantiate(cls, values))
