"""``remote``: a model served by ``unified-bench serve`` in another process or machine.

Its capabilities and description come from the server's ``/info`` and are recorded in the
run record like any local model's. See ``unified_bench.adapters.serve`` for the protocol.

Every argument here says how outputs are fetched, not what they are (``affects_outputs``:
False), so a run resumes against a restarted or moved server with other retry or timeout
settings; what the outputs depend on is the served model, which :meth:`output_identity`
reports and a resumed run must match. After ``max_consecutive_failures`` requests in a row
that cannot reach the server the run stops, keeping its finished samples, to be resumed.

``timeout_s`` defaults to an hour because it must bound the slowest legitimate request: one
batch of a large model (a 7B generator at 1024x1024, 40 steps, several images per batch) on
a modest GPU takes tens of minutes. The progress bar shows how long the current request has
been running, so a hung server is visible; lower the bound with ``--model-arg timeout_s=``
when your model answers faster. A request that timed out is not retried (the server is
still busy with it, or hung) and counts towards the circuit breaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration
from unified_bench.adapters.http import CircuitBreaker, HttpError, RetryPolicy, decode_image, encode_png, request_json
from unified_bench.core.errors import AdapterOutputError, ConfigError


@dataclass
class RemoteConfig:
    url: str = field(default="http://127.0.0.1:8765", metadata={"help": "address printed by `unified-bench serve`", "affects_outputs": False})
    timeout_s: float = field(
        default=3600.0,
        metadata={"help": "per-request timeout: one batch of a big model on a slow GPU can take tens of minutes", "affects_outputs": False},
    )
    max_retries: int = field(default=3, metadata={"help": "retries on connection errors and 5xx", "affects_outputs": False})
    backoff_s: float = field(default=1.0, metadata={"help": "first retry delay (doubles, with jitter)", "affects_outputs": False})
    max_batch_size: int = field(default=0, metadata={"help": "cap on the batch size (0: what the server declares)", "affects_outputs": False})
    max_consecutive_failures: int = field(
        default=5,
        metadata={"help": "stop the run after this many requests in a row cannot reach the server (0: never)", "affects_outputs": False},
    )


class RemoteAdapter(Adapter):
    """Client of the ``unified-bench serve`` protocol."""

    name = "remote"
    config_class = RemoteConfig

    def __init__(self, config: RemoteConfig | None = None) -> None:
        from unified_bench.adapters.serve import PROTOCOL_VERSION

        self.config = config or RemoteConfig()
        self._base = self.config.url.rstrip("/")
        self._retry = RetryPolicy(self.config.max_retries, self.config.backoff_s, 30.0, retry_timeouts=False)
        self._breaker = CircuitBreaker(self.config.max_consecutive_failures)
        self._caption_settings: ExecutedCaption | None = None
        self._generation_settings: ExecutedGeneration | None = None
        try:
            self.info = request_json(self._base + "/info", timeout_s=30.0, retry=self._retry)
        except HttpError as err:
            raise ConfigError(
                f"no model server at {self._base} ({err}); start one with "
                "`unified-bench serve --model NAME --port P` and pass --model-arg url=http://HOST:P"
            ) from err
        if not isinstance(self.info, dict) or self.info.get("protocol") != PROTOCOL_VERSION:
            raise ConfigError(f"{self._base} does not speak {PROTOCOL_VERSION} (got {str(self.info)[:200]})")
        caps = self.info.get("capabilities") or {}
        declared = int(caps.get("max_batch_size") or 1)
        native = caps.get("native_resolution")
        self.capabilities = Capabilities(
            max_batch_size=min(declared, self.config.max_batch_size) if self.config.max_batch_size else declared,
            native_resolution=tuple(native) if native else None,
            deterministic=bool(caps.get("deterministic", False)),
            can_caption=bool(caps.get("can_caption", True)),
            can_generate=bool(caps.get("can_generate", True)),
            needs=("a running `unified-bench serve`",),
        )

    def _post(self, route: str, payload: dict) -> dict:
        try:
            return request_json(
                self._base + route, payload, timeout_s=self.config.timeout_s, retry=self._retry, breaker=self._breaker
            )
        except HttpError as err:
            # 422: the served model raised; surface its message as this sample's error
            raise RuntimeError(f"remote {route}: {err}") from None

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list:
        payload = {"images": [encode_png(i) for i in images], "prompt": prompt, "seeds": list(seeds), "sample_ids": _ids(sample_ids)}
        answer = self._post("/caption", payload)
        if not isinstance(answer, dict):
            return answer
        self._caption_settings = _settings(ExecutedCaption, answer.get("settings"))
        return answer.get("captions")

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        payload = {"prompts": list(prompts), "seeds": list(seeds), "size": list(size) if size else None, "sample_ids": _ids(sample_ids)}
        answer = self._post("/generate", payload)
        self._generation_settings = _settings(ExecutedGeneration, answer.get("settings"))
        encoded, errors = answer.get("images") or [], answer.get("errors") or []
        failed = [e for e in errors if e]
        if failed:
            raise AdapterOutputError("; ".join(failed))
        if len(encoded) != len(prompts):
            raise AdapterOutputError(f"server returned {len(encoded)} images for {len(prompts)} prompts")
        return [decode_image(text) for text in encoded]

    # the served adapter reports its settings with every answer; these are the last call's
    def caption_settings(self, prompt: str) -> ExecutedCaption | None:
        return self._caption_settings

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration | None:
        return self._generation_settings

    def describe(self) -> dict:
        return {"kind": "remote", "url": self._base, "served_model": self.info.get("model"), "served": self.info.get("describe")}

    def output_identity(self) -> dict:
        """The served model decides the outputs, wherever it is served from."""
        return {"served_model": self.info.get("model"), "served": self.info.get("describe")}


def _ids(sample_ids: list[str] | None) -> list[str] | None:
    return list(sample_ids) if sample_ids is not None else None


def _settings(cls: type, data: object) -> object:
    """A served adapter's reported settings; anything malformed counts as not reported."""
    if not isinstance(data, dict):
        return None
    try:
        return cls.from_dict(data)
    except TypeError:
        return None
