"""``gated_adapter:GatedMock``: the mock adapter, except that after ``open_for`` generate
calls it waits for the file ``gate`` to exist. A test holds a real ``eval`` (or ``serve``)
process mid-run for as long as it needs, whatever the machine's load, then lets it go on
(creates the file) or kills it. Its outputs are the mock's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from unified_bench.adapters.mock import MockAdapter, MockConfig


@dataclass
class GatedConfig(MockConfig):
    gate: str = field(default="", metadata={"help": "file whose existence lets generation go on", "affects_outputs": False})
    open_for: int = field(default=1, metadata={"help": "generate calls before the gate", "affects_outputs": False})


class GatedMock(MockAdapter):
    name = "gated-mock"
    config_class = GatedConfig

    def __init__(self, config: GatedConfig | None = None) -> None:
        super().__init__(config or GatedConfig())
        self.calls = 0

    def generate(self, prompts, *, seeds, size, sample_ids=None):
        self.calls += 1
        if self.calls > self.config.open_for:
            while not Path(self.config.gate).exists():
                time.sleep(0.02)
        return super().generate(prompts, seeds=seeds, size=size, sample_ids=sample_ids)
