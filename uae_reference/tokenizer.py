"""The tiny preset's tokenizer and processor, built offline with no download.

At paper scale the processor is ``AutoProcessor.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")``.
The tiny preset cannot download it, and a 150k-token byte-level vocabulary would dwarf a model
with a 64-wide embedding, so it builds the same *kind* of object from scratch:

- a word-level ``tokenizers`` model whose vocabulary is the Shapes caption grammar, the
  captioning instruction and punctuation, lower-cased (the grammar's parser is case-blind);
- the special tokens the Qwen2.5-VL classes look up by name (``<|im_start|>``, ``<|im_end|>``,
  ``<|vision_start|>``, ``<|image_pad|>``, ``<|vision_end|>``, ``<|video_pad|>``,
  ``<|endoftext|>`` as padding), plus ``<unk>``;
- a Qwen-style chat template (``<|im_start|>role\\n...<|im_end|>\\n``, an image as
  ``<|vision_start|><|image_pad|><|vision_end|>``), so the *same* code path formats prompts at
  both scales. Unlike Qwen's own template it adds no default system message;
- a ``Qwen2_5_VLProcessor`` whose ``Qwen2VLImageProcessor`` keeps a tiny image at its size
  (``min_pixels = max_pixels = size**2``) and uses the tiny vision tower's patch size, so the
  processor expands ``<|image_pad|>`` into ``(size / patch / merge)**2`` placeholders — the
  number of merged visual tokens the vision tower returns.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
UNK_TOKEN = "<unk>"
#: Tokens the Qwen2.5-VL model and processor refer to by name; ids follow this order.
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    "<|im_start|>",
    EOS_TOKEN,
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    UNK_TOKEN,
)
#: Roles used by the chat template: "user"/"assistant" to caption, "generate" to condition the
#: decoder (the official release wraps the caption in a message with role "generate").
ROLES: tuple[str, ...] = ("system", "user", "assistant", "generate")
PUNCTUATION: tuple[str, ...] = (",", ".", ";", ":", "-", "!", "?", '"', "'")

#: Qwen-style chat template (Jinja), restricted to text and image content.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: The instruction the tiny encoder is trained to answer (its vocabulary must cover it).
TINY_CAPTION_PROMPT = "Describe the image."


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over ``words`` (lower-cased) plus specials and punctuation.

    Text is lower-cased, split on whitespace, and punctuation becomes its own token; decoding
    joins words with spaces and removes the space before punctuation ("circle , a" -> "circle, a").
    Unknown words map to ``<unk>``.
    """
    vocab_words = sorted({w.lower() for w in words if w.strip()} | set(PUNCTUATION) | set(ROLES))
    tokens = list(SPECIAL_TOKENS) + ["\n"] + vocab_words
    model = models.WordLevel(vocab={tok: i for i, tok in enumerate(tokens)}, unk_token=UNK_TOKEN)
    backend = Tokenizer(model)
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    # The newline of the chat template is a real token (not whitespace to drop), as in Qwen.
    backend.add_tokens([AddedToken("\n", normalized=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
    return tokenizer


def build_tiny_processor(
    tokenizer: PreTrainedTokenizerFast,
    *,
    image_size: int,
    patch_size: int,
    merge_size: int = 2,
    image_mean: tuple[float, float, float] | None = None,
    image_std: tuple[float, float, float] | None = None,
) -> Qwen2_5_VLProcessor:
    """A ``Qwen2_5_VLProcessor`` for ``image_size`` square images and a tiny vision tower.

    ``image_mean``/``image_std`` (in [0, 1] units) default to the processor's own (CLIP's).
    """
    factor = patch_size * merge_size
    if image_size % factor:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size*merge_size = {factor}")
    pixels = image_size * image_size
    kwargs = dict(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2, min_pixels=pixels, max_pixels=pixels)
    if image_mean is not None:
        kwargs.update(image_mean=list(image_mean), image_std=list(image_std or (0.25, 0.25, 0.25)))
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**kwargs),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**kwargs),
        chat_template=CHAT_TEMPLATE,
    )


def shapes_vocabulary() -> list[str]:
    """Every word the Shapes caption grammar writes, plus the tiny captioning instruction."""
    from unified_bench.tracks.shapes.captions import vocabulary

    prompt_words = TINY_CAPTION_PROMPT.lower().replace(".", " ").split()
    return sorted(set(vocabulary()) | set(prompt_words))
