"""Text towers of the image metrics' checkpoints: clip-text, siglip-text, longclip-text, clip-t2i.

Each loads the text tower of the checkpoint its image counterpart loads (same default, same
local-directory / hub-id / ``HF_HUB_OFFLINE`` resolution, revision recorded in MetricInfo) and
embeds texts to the features the checkpoint's own model class returns:

- clip-text:     ``CLIPModel.get_text_features`` (projected EOS-token features); the
                 tokenizer pads to the longest text (CLIP's causal mask makes padding inert);
- siglip-text:   ``SiglipModel.get_text_features`` (the pooled head on the last position); the
                 tokenizer pads every text to the context (64 for the real checkpoints), as
                 ``SiglipProcessor(padding="max_length")`` does and the model expects, and the
                 model gets no attention mask, as from that processor;
- longclip-text: LongCLIP's ``encode_text`` (248 positions, the first 20 from
                 ``positional_embedding`` and the rest from ``positional_embedding_res``, a causal
                 transformer, ``ln_final`` of the EOT token times ``text_projection``) on an
                 OpenAI-format file, tokenised with OpenAI's BPE (open_clip ships the same
                 vocabulary LongCLIP's tokenizer reads); an HF-format conversion loads like clip-text;
- clip-t2i:      clip's image features of an image against clip-text's features of a text.

Every text is cut to the tower's context; each text's token count is recorded
(:class:`~unified_bench.metrics.base.TokenCount`) so a cut never goes unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from unified_bench.core.errors import ConfigError
from unified_bench.metrics.base import ImageTextMetric, MetricInfo, TextEmbeddingMetric
from unified_bench.metrics.hf import ClipMetric, checkpoint_config, clip_tower_config, load_tower
from unified_bench.metrics.longclip import (
    HEAD_WIDTH,
    LayerNormFp32,
    Transformer,
    is_hf_checkpoint,
    load_openai_tower,
    openai_weights_file,
)
from unified_bench.metrics.runtime import dtype_name, quiet_transformers, resolve_dtype
from unified_bench.metrics.weights import ResolvedCheckpoint, load_errors, resolve_checkpoint

#: LongCLIP keeps CLIP's first 20 positions and stretches the rest (arXiv 2403.15378).
LONGCLIP_KEPT_POSITIONS = 20


def tokenizer_settings(tokenizer: Any, context: int, padding: str, inputs: Sequence[str]) -> dict[str, Any]:
    """What changes a text's tokens, for MetricInfo."""
    return {
        "tokenizer": type(tokenizer).__name__,
        "context_length": context,
        "padding": padding,
        "truncation": "to the context, recorded per text",
        "model_inputs": list(inputs),
    }


# --------------------------------------------------------------------------- HF text towers


class HFTextMetric(TextEmbeddingMetric):
    """Shared loading, tokenising and batching for transformers text towers."""

    unit = "cosine"
    #: config.json ``model_type`` values this metric accepts
    model_types: ClassVar[frozenset[str]]
    #: how the features are taken from the model output (recorded in MetricInfo)
    pooling: ClassVar[str]
    #: pad every text to the context (a tower that pools the last position needs it)
    pad_to_context: ClassVar[bool] = False
    #: the tokenizer outputs the model is given
    model_inputs: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        *,
        resolved: ResolvedCheckpoint | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.device = torch.device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.resolved = resolved or resolve_checkpoint(self.name, checkpoint)
        with quiet_transformers(), load_errors(self.name, self.resolved.requested, self.resolved.path):
            config = checkpoint_config(self.name, self.resolved, self.model_types)
            self.tokenizer = AutoTokenizer.from_pretrained(self.resolved.path)
            model_cls, model_config = self._model_class(config)
            self.model = load_tower(self.name, self.resolved, model_cls, model_config, self.torch_dtype)
        self.model.to(self.device).eval()
        self._context = int(self.model.config.max_position_embeddings)
        padding = "max_length" if self.pad_to_context else "longest"
        self._info = MetricInfo(
            name=self.name,
            kind=self.kind,
            checkpoint=self.resolved.recorded,
            revision=self.resolved.revision,
            preprocessing={
                **tokenizer_settings(self.tokenizer, self._context, padding, self.model_inputs),
                "pooling": self.pooling,
            },
            dtype=dtype_name(self.torch_dtype),
        )

    def _model_class(self, config: Any) -> tuple[type, Any]:
        raise NotImplementedError

    def _pool(self, output: Any) -> torch.Tensor:
        raise NotImplementedError

    @property
    def info(self) -> MetricInfo:
        return self._info

    @property
    def context_length(self) -> int:
        return self._context

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with quiet_transformers():  # the tokenizer warns about texts longer than its maximum
            return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        inputs = self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_context else "longest",
            truncation=True,
            max_length=self._context,
            return_tensors="pt",
        )
        kwargs = {key: inputs[key].to(self.device) for key in self.model_inputs if key in inputs}
        return self._pool(self.model(**kwargs))

    def close(self) -> None:
        self.model = None
        self.tokenizer = None


class ClipTextMetric(HFTextMetric):
    """CLIP projected text features (``CLIPModel.get_text_features``)."""

    name = "clip-text"
    model_types = frozenset({"clip", "clip_text_model"})
    pooling = "text_projection(pooler_output at EOS)"

    def _model_class(self, config: Any) -> tuple[type, Any]:
        from transformers import CLIPTextModelWithProjection

        return CLIPTextModelWithProjection, clip_tower_config(config, "text")

    def _pool(self, output: Any) -> torch.Tensor:
        return output.text_embeds


class SiglipTextMetric(HFTextMetric):
    """SigLIP pooled text features (``SiglipModel.get_text_features``): the head on the last
    position, so every text is padded to the context, with no attention mask (SiglipProcessor)."""

    name = "siglip-text"
    model_types = frozenset({"siglip", "siglip_text_model"})
    pooling = "pooler_output (head on the last position)"
    pad_to_context = True
    model_inputs = ("input_ids",)

    def _model_class(self, config: Any) -> tuple[type, Any]:
        from transformers import SiglipTextModel

        return SiglipTextModel, config.text_config if config.model_type == "siglip" else config

    def _pool(self, output: Any) -> torch.Tensor:
        return output.pooler_output


# --------------------------------------------------------------------------- LongCLIP (OpenAI format)


@dataclass(frozen=True)
class TextShape:
    vocab_size: int
    width: int
    layers: int
    heads: int
    context: int
    output_dim: int
    #: LongCLIP's second position table (absent in a plain OpenAI CLIP file)
    long_positions: bool


_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def text_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's weights of an OpenAI-format state dict (everything not ``visual.*``)."""
    return {key: value for key, value in state.items() if key.startswith(_TEXT_PREFIXES)}


def text_shape(weights: Mapping[str, torch.Tensor]) -> TextShape:
    """Read the tower's size from its weights (as OpenAI's ``build_model`` does)."""
    needed = ("token_embedding.weight", "positional_embedding", "text_projection")
    if any(key not in weights for key in needed):
        raise ConfigError("checkpoint has no OpenAI text tower (token_embedding / positional_embedding / text_projection missing)")
    vocab, width = weights["token_embedding.weight"].shape
    block = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$")
    if width % HEAD_WIDTH:
        raise ConfigError(f"text tower width {width} is not a multiple of {HEAD_WIDTH} (OpenAI's head width)")
    return TextShape(
        vocab_size=int(vocab),
        width=int(width),
        layers=len([key for key in weights if block.match(key)]),
        heads=int(width) // HEAD_WIDTH,
        context=int(weights["positional_embedding"].shape[0]),
        output_dim=int(weights["text_projection"].shape[1]),
        long_positions="positional_embedding_res" in weights,
    )


class OpenAITextTransformer(nn.Module):
    """OpenAI CLIP's text tower with LongCLIP's two position tables; names match its checkpoints."""

    def __init__(self, shape: TextShape) -> None:
        super().__init__()
        self.shape = shape
        self.token_embedding = nn.Embedding(shape.vocab_size, shape.width)
        self.positional_embedding = nn.Parameter(torch.zeros(shape.context, shape.width))
        if shape.long_positions:
            self.positional_embedding_res = nn.Parameter(torch.zeros(shape.context, shape.width))
        self.transformer = Transformer(shape.width, shape.layers, shape.heads)
        self.ln_final = LayerNormFp32(shape.width)
        self.text_projection = nn.Parameter(torch.zeros(shape.width, shape.output_dim))
        causal = torch.full((shape.context, shape.context), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)

    def positions(self) -> torch.Tensor:
        """LongCLIP: ``pos * mask1 + pos_res * mask2`` with mask1 the first 20 rows (a select: equal)."""
        if not self.shape.long_positions:
            return self.positional_embedding
        kept = (torch.arange(self.shape.context, device=self.positional_embedding.device) < LONGCLIP_KEPT_POSITIONS)[:, None]
        return torch.where(kept, self.positional_embedding, self.positional_embedding_res)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [N, L] (EOT the largest id of each row) -> ``ln_final(EOT) @ text_projection``."""
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.positions()[:length].to(self.token_embedding.weight.dtype)
        x = self.transformer(x.transpose(0, 1), self.attn_mask[:length, :length].to(x.dtype)).transpose(0, 1)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)] @ self.text_projection


class OpenAIBpe:
    """OpenAI CLIP's BPE tokenizer (the one LongCLIP's ``tokenize`` uses): ``<sot> text <eot>``,
    cut to the context with the last token set to ``<eot>``, zero-padded to the context."""

    def __init__(self) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.bpe = SimpleTokenizer()
        self.vocab_size = self.bpe.vocab_size

    def ids(self, text: str) -> list[int]:
        return [self.bpe.sot_token_id, *self.bpe.encode(text), self.bpe.eot_token_id]

    def batch(self, texts: Sequence[str], context: int) -> torch.Tensor:
        out = torch.zeros(len(texts), context, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.ids(text)
            if len(ids) > context:
                ids = ids[:context]
                ids[-1] = self.bpe.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids)
        return out


class _HFLongClipText(ClipTextMetric):
    """An HF-format LongCLIP conversion: a CLIP text tower with 248 positions and its tokenizer."""

    name = "longclip-text"


class LongClipTextMetric(TextEmbeddingMetric):
    """LongCLIP text features (``encode_text``), 248-token context."""

    name = "longclip-text"
    unit = "cosine"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        self.device = torch.device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        resolved = resolve_checkpoint(self.name, checkpoint)
        self._hf: _HFLongClipText | None = None
        self.tower: OpenAITextTransformer | None = None
        if is_hf_checkpoint(resolved):
            self._hf = _HFLongClipText(checkpoint, device, dtype, resolved=resolved)
            self._info = self._hf.info
            return
        weights = openai_weights_file(self.name, resolved)
        self.tokenizer = OpenAIBpe()
        self.tower = self._build_tower(weights, resolved.requested)
        self._info = MetricInfo(
            name=self.name,
            kind=self.kind,
            checkpoint=resolved.recorded,
            revision=resolved.revision,
            preprocessing={
                "format": "openai-clip",
                **tokenizer_settings(self.tokenizer.bpe, self.tower.shape.context, "max_length", ("input_ids",)),
                "positions": "longclip (first 20 kept, rest stretched)" if self.tower.shape.long_positions else "clip",
                "pooling": "ln_final(EOT) @ text_projection",
            },
            dtype=dtype_name(self.torch_dtype),
        )

    def _build_tower(self, weights_file: Path, requested: str) -> OpenAITextTransformer:
        def build(weights: dict[str, torch.Tensor]) -> OpenAITextTransformer:
            shape = text_shape(weights)
            if shape.vocab_size < self.tokenizer.vocab_size:
                raise ConfigError(
                    f"metric {self.name!r}: {requested!r} embeds {shape.vocab_size} tokens; OpenAI's BPE tokenizer "
                    f"needs {self.tokenizer.vocab_size}"
                )
            return OpenAITextTransformer(shape)

        tower = load_openai_tower(
            self.name, weights_file, requested, part="text-tower", fits="an OpenAI text transformer",
            select=text_weights, build=build,
        )
        return tower.to(self.device, self.torch_dtype).eval()

    @property
    def info(self) -> MetricInfo:
        return self._info

    @property
    def context_length(self) -> int:
        return self._hf.context_length if self._hf is not None else self.tower.shape.context

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self._hf is not None:
            return self._hf.count_tokens(texts)
        return [len(self.tokenizer.ids(text)) for text in texts]

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        if self._hf is not None:
            return self._hf.encode_texts(texts)
        return self.tower(self.tokenizer.batch(texts, self.tower.shape.context).to(self.device))

    def close(self) -> None:
        if self._hf is not None:
            self._hf.close()
        self._hf = None
        self.tower = None


# --------------------------------------------------------------------------- image vs text


class _ClipT2IText(ClipTextMetric):
    name = "clip-t2i"


class ClipT2IMetric(ClipMetric, ImageTextMetric):
    """CLIP image features of an image against CLIP text features of its text (one checkpoint,
    both towers): how well a generated image shows the text it was drawn from."""

    name = "clip-t2i"
    kind = "image-text"
    reads = ("image-text",)

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        super().__init__(checkpoint, device, dtype)
        self.text = _ClipT2IText(checkpoint, device, dtype, resolved=self.resolved)
        self._info = replace(self._info, preprocessing={**self._info.preprocessing, "text": dict(self.text.info.preprocessing)})

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.text.count_tokens(texts)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text.encode_texts(texts)

    def close(self) -> None:
        super().close()
        self.text.close()
