"""``openai``: any OpenAI-compatible HTTP API (OpenAI, Azure-style gateways, vLLM, ...).

Captioning posts the image as a base64 PNG data URL to ``/chat/completions`` with the
protocol's instruction; generation calls ``/images/generations`` and reads ``b64_json``.
Each known image model gets only the parameters it accepts (``IMAGE_MODELS``: gpt-image
models take no ``response_format`` and always answer base64; dall-e models take it; sizes,
qualities and styles differ); a model the table does not know (one served by vLLM or a gateway)
gets the parameters as configured. The key is read from an environment variable (never from a
flag, so it stays out of shell history and run records). Hosted APIs are not deterministic: the per-sample seed is sent
where the API accepts one, but equal seeds need not give equal outputs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.adapters.http import CircuitBreaker, RetryPolicy, decode_image, encode_png, request_json
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration
from unified_bench.core.images import to_rgb


@dataclass(frozen=True)
class ImageModelRules:
    """What one images model accepts in ``/images/generations`` (OpenAI's API reference)."""

    response_format: bool  # takes response_format; False: always answers b64_json, rejects the field
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    styles: tuple[str, ...] = ()  # empty: the model takes no style


IMAGE_MODELS: dict[str, ImageModelRules] = {
    "dall-e-2": ImageModelRules(True, ("256x256", "512x512", "1024x1024"), ("standard",)),
    "dall-e-3": ImageModelRules(True, ("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"), ("vivid", "natural")),
    # gpt-image-1, gpt-image-1-mini, gpt-image-1.5, ...: one family, one set of rules
    "gpt-image": ImageModelRules(False, ("1024x1024", "1536x1024", "1024x1536", "auto"), ("low", "medium", "high", "auto")),
}


def image_model_rules(model: str) -> ImageModelRules | None:
    """The rules of a known images model, None for one the table does not know."""
    if model in IMAGE_MODELS:
        return IMAGE_MODELS[model]
    return IMAGE_MODELS["gpt-image"] if model.startswith("gpt-image-") else None


@dataclass
class OpenAIConfig:
    base_url: str = field(default="https://api.openai.com/v1", metadata={"help": "API root, e.g. http://localhost:8000/v1 for vLLM"})
    caption_model: str = field(default="gpt-4o", metadata={"help": "chat model that captions"})
    image_model: str = field(default="gpt-image-1", metadata={"help": "images model that generates"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key ('' for no auth)", "affects_outputs": False})
    temperature: float = field(default=0.7, metadata={"help": "caption sampling temperature (paper: 0.7)"})
    max_tokens: int = field(default=512, metadata={"help": "caption length cap (paper: 512 new tokens)"})
    send_seed: bool = field(default=True, metadata={"help": "send the per-sample seed with chat requests"})
    response_format: str = field(
        default="auto",
        metadata={"help": "images API response_format: 'auto' sends b64_json to models that take it (dall-e, unknown) and nothing to gpt-image; 'b64_json'; '' to omit"},
    )
    quality: str = field(default="", metadata={"help": "images API quality ('' to omit; checked against the model's accepted values)"})
    style: str = field(default="", metadata={"help": "images API style, dall-e-3 only: vivid or natural ('' to omit)"})
    # transport settings ("affects_outputs": False): how outputs are fetched, not what they are
    timeout_s: float = field(default=120.0, metadata={"help": "per-request timeout", "affects_outputs": False})
    max_retries: int = field(default=5, metadata={"help": "retries on 429/5xx/connection errors", "affects_outputs": False})
    backoff_s: float = field(default=1.0, metadata={"help": "first retry delay; doubles each retry, with jitter", "affects_outputs": False})
    max_backoff_s: float = field(default=60.0, metadata={"help": "cap on one retry delay (also caps Retry-After)", "affects_outputs": False})
    max_batch_size: int = field(default=8, metadata={"help": "samples per runner batch (one request each)", "affects_outputs": False})
    concurrency: int = field(default=4, metadata={"help": "requests in flight at once within a batch", "affects_outputs": False})
    max_consecutive_failures: int = field(
        default=5, metadata={"help": "stop the run after this many requests in a row cannot reach the API (0: never)", "affects_outputs": False}
    )


class OpenAIAdapter(Adapter):
    """OpenAI-compatible API: chat completions to caption, images API to generate."""

    name = "openai"
    config_class = OpenAIConfig

    def __init__(self, config: OpenAIConfig | None = None) -> None:
        self.config = config or OpenAIConfig()
        self._key = None
        if self.config.api_key_env:
            self._key = os.environ.get(self.config.api_key_env)
            if not self._key:
                raise ConfigError(
                    f"the openai adapter reads its key from ${self.config.api_key_env}, which is not set; "
                    "export it, or pass --model-arg api_key_env=OTHER_VAR ('' for a server without auth)"
                )
        self.capabilities = Capabilities(
            max_batch_size=self.config.max_batch_size,
            native_resolution=(1024, 1024),
            deterministic=False,
            needs=(f"env:{self.config.api_key_env}",) if self.config.api_key_env else (),
        )
        self._retry = RetryPolicy(self.config.max_retries, self.config.backoff_s, self.config.max_backoff_s)
        self._breaker = CircuitBreaker(self.config.max_consecutive_failures)
        self._rules = image_model_rules(self.config.image_model)
        self._image_params = self._check_image_params()

    def _check_image_params(self) -> dict[str, str]:
        """The fixed images-request parameters the model accepts; a configured one it does not
        accept is a ConfigError naming what it takes, before any request is sent."""
        model, rules, config = self.config.image_model, self._rules, self.config
        if config.response_format not in ("auto", "b64_json", ""):
            raise ConfigError(
                f"openai adapter: response_format={config.response_format!r}: the adapter reads images from "
                "b64_json; use 'auto' (default), 'b64_json' or '' to omit it"
            )
        params: dict[str, str] = {}
        if config.response_format == "auto":
            if rules is None or rules.response_format:
                params["response_format"] = "b64_json"
        elif config.response_format:
            if rules is not None and not rules.response_format:
                raise ConfigError(
                    f"openai adapter: {model} takes no response_format (it always answers b64_json); "
                    "drop --model-arg response_format, or set it to auto"
                )
            params["response_format"] = config.response_format
        for name, value, accepted in (
            ("quality", config.quality, rules.qualities if rules else None),
            ("style", config.style, rules.styles if rules else None),
        ):
            if not value:
                continue
            if accepted is not None and value not in accepted:
                takes = f"one of {', '.join(accepted)}" if accepted else f"no {name}"
                raise ConfigError(f"openai adapter: {model} takes {takes}, not {name}={value!r}; pass --model-arg {name}=...")
            params[name] = value
        return params

    def _post(self, path: str, payload: dict) -> dict:
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        url = self.config.base_url.rstrip("/") + path
        return request_json(url, payload, headers=headers, timeout_s=self.config.timeout_s, retry=self._retry, breaker=self._breaker)

    def _map(self, fn, *columns) -> list:
        """Apply ``fn`` over the batch with up to ``concurrency`` requests in flight, in order."""
        items = list(zip(*columns))
        if self.config.concurrency <= 1 or len(items) <= 1:
            return [fn(*item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(items))) as pool:
            return list(pool.map(lambda item: fn(*item), items))

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        return self._map(lambda image, seed: self._caption_one(image, prompt, seed), images, seeds)

    def _caption_one(self, image: Image.Image, prompt: str, seed: int) -> str:
        payload = {
            "model": self.config.caption_model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + encode_png(image)}},
                    ],
                }
            ],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if self.config.send_seed:
            payload["seed"] = seed
        answer = self._post("/chat/completions", payload)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"chat completion without choices[0].message.content: {str(answer)[:200]}") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        return self._map(lambda prompt: self._generate_one(prompt, size), prompts)

    def _generate_one(self, prompt: str, size: tuple[int, int] | None) -> Image.Image:
        payload: dict = {"model": self.config.image_model, "prompt": prompt, "n": 1}
        if size:
            payload["size"] = f"{size[0]}x{size[1]}"
            if self._rules is not None and payload["size"] not in self._rules.sizes:
                raise ValueError(
                    f"{self.config.image_model} generates only {', '.join(s for s in self._rules.sizes if s != 'auto')}, "
                    f"not {payload['size']}; pass --size with one of them"
                )
        payload.update(self._image_params)
        answer = self._post("/images/generations", payload)
        try:
            encoded = answer["data"][0]["b64_json"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"images answer without data[0].b64_json: {str(answer)[:200]}") from None
        return to_rgb(decode_image(encoded))

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        """What each chat request sends: the instruction as given, the temperature and the
        token cap. The server's decoding rule is not sent, so ``do_sample`` is not reported;
        nor are top_p and the rest (the server's defaults apply)."""
        return ExecutedCaption(
            prompt=prompt,
            do_sample=None,
            temperature=float(self.config.temperature),
            max_new_tokens=int(self.config.max_tokens),
            extra={"model": self.config.caption_model, "seed_sent": bool(self.config.send_seed)},
        )

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """What each images request sends: the model, the size (None when no size is sent:
        the server's default applies) and the model's accepted parameters (quality, style,
        response_format) as sent; steps, guidance, scheduler and dtype are the service's and
        not reported."""
        extra: dict = {"model": self.config.image_model, **self._image_params}
        width, height = (int(size[0]), int(size[1])) if size else (None, None)
        return ExecutedGeneration(width=width, height=height, extra=extra)

    def describe(self) -> dict:
        return {
            "kind": "openai-compatible",
            "base_url": self.config.base_url,
            "caption_model": self.config.caption_model,
            "image_model": self.config.image_model,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "seed_sent": self.config.send_seed,
        }
