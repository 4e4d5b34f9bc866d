"""Tiny random-initialised metric backbones, saved the way the real checkpoints are.

Each builder writes a checkpoint that loads through the same path as the real weights
(``from_pretrained`` on an HF directory, or ``torch.load`` of an OpenAI-format ``.pt``), with
an image processor whose settings resemble the real one (resize then crop, the right mean
and std) at 32 px. Weights are seeded, and layer norms and biases get a random nudge so that
no term of the forward pass is trivially identity or zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100, max_position_embeddings=16)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)


def _nudge(model: torch.nn.Module, seed: int) -> None:
    """Random layer-norm scales/shifts and biases: a fresh init leaves them at 1 and 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name or "embedding" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


#: The tiny text towers' context (the real ones: CLIP 77, SigLIP 64, LongCLIP 248).
TEXT_CONTEXT = _TEXT["max_position_embeddings"]


def tiny_clip_tokenizer(context: int = TEXT_CONTEXT):
    """A word-level tokenizer laid out like CLIP's: "<|startoftext|> words <|endoftext|>", padded
    with <|endoftext|>. (Not ids 1 and 2: CLIP's text model reads eos id 2 as a legacy checkpoint.)"""
    from tiny_hf_models import tiny_tokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    return tiny_tokenizer(["<|unused|>", bos, eos], bos=bos, eos=eos, pad=eos, model_max_length=context, wrap_bos_eos=True)


def tiny_siglip_tokenizer(context: int = TEXT_CONTEXT):
    """A word-level tokenizer laid out like SigLIP's: "words </s>", padded with <pad>."""
    from tiny_hf_models import tiny_tokenizer

    return tiny_tokenizer(["<pad>", "</s>"], eos="</s>", pad="<pad>", model_max_length=context, add_eos=True)


def _with_tokenizer(text_config: dict, tokenizer) -> dict:
    """The text config sized for ``tokenizer``'s vocabulary, with its special-token ids."""
    ids = {name: getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")}
    return {**text_config, "vocab_size": len(tokenizer), **{f"{k}_token_id": v for k, v in ids.items()}}


def tiny_clip(path: Path, seed: int = 0, *, tokenizer: bool = False) -> Path:
    """CLIPModel (vision + text) + CLIPImageProcessor: shortest side 40, crop 32, bicubic.
    ``tokenizer``: also a tokenizer, with the text tower sized for it (the text metrics)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    text = _TEXT
    if tokenizer:
        words = tiny_clip_tokenizer()
        text = _with_tokenizer(_TEXT, words)
        words.save_pretrained(path)
    config = CLIPConfig(text_config=text, vision_config={**_VISION, "image_size": 32}, projection_dim=24)
    model = CLIPModel(config).eval()
    _nudge(model, seed)
    model.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def tiny_dinov2(path: Path, seed: int = 0) -> Path:
    """Dinov2Model + BitImageProcessor as facebook/dinov2-* ships it (resize 256->crop 224, scaled)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**_VISION, image_size=32)).eval()
    _nudge(model, seed)
    model.save_pretrained(path)
    BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    ).save_pretrained(path)
    return path


def tiny_dinov3(path: Path, seed: int = 0) -> Path:
    """DINOv3 ViT with register tokens + its processor (resize to a square, bilinear)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    torch.manual_seed(seed)
    model = DINOv3ViTModel(DINOv3ViTConfig(**_VISION, image_size=32, num_register_tokens=2)).eval()
    _nudge(model, seed)
    model.save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(path)
    return path


def tiny_siglip(path: Path, seed: int = 0, *, tokenizer: bool = False) -> Path:
    """SiglipModel (the architecture of SigLIP and of SigLIP 2 fixed-resolution checkpoints).
    ``tokenizer``: also a tokenizer, with the text tower sized for it (the text metrics)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    text = _TEXT
    if tokenizer:
        words = tiny_siglip_tokenizer()
        text = _with_tokenizer(_TEXT, words)
        words.save_pretrained(path)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config={**_VISION, "image_size": 32})).eval()
    _nudge(model, seed)
    model.save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def tiny_siglip2_naflex(path: Path, seed: int = 0) -> Path:
    """Siglip2Model (NaFlex: aspect-preserving patch sequences) + its processor."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    torch.manual_seed(seed)
    vision = {**_VISION, "num_patches": 16}
    model = Siglip2Model(Siglip2Config(text_config=_TEXT, vision_config=vision)).eval()
    _nudge(model, seed)
    model.save_pretrained(path)
    Siglip2ImageProcessor(max_num_patches=16, patch_size=8).save_pretrained(path)
    return path


@dataclass(frozen=True)
class OpenClipSpec:
    """Arguments of the open_clip CLIP model a tiny OpenAI-format checkpoint came from."""

    embed_dim: int = 32
    vision_width: int = 128  # 2 heads under OpenAI's width // 64 rule
    vision_layers: int = 2
    patch_size: int = 8
    image_size: int = 32
    text_width: int = 64
    context_length: int = 16
    vocab_size: int = 100  # OpenAI's BPE (the text metrics) needs 49408

    def build(self):
        from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

        vision = CLIPVisionCfg(layers=self.vision_layers, width=self.vision_width, head_width=64, patch_size=self.patch_size, image_size=self.image_size)
        text = CLIPTextCfg(context_length=self.context_length, vocab_size=self.vocab_size, width=self.text_width, heads=1, layers=1)
        return CLIP(self.embed_dim, vision, text, quick_gelu=True).eval()


#: A LongCLIP-shaped text tower: OpenAI's BPE vocabulary and LongCLIP's 248 positions.
LONGCLIP_TEXT_SPEC = OpenClipSpec(context_length=248, vocab_size=49408)


def tiny_longclip_pt(
    path: Path, seed: int = 0, *, torchscript: bool = False, spec: OpenClipSpec = OpenClipSpec(), long_positions: bool = False
) -> Path:
    """An OpenAI-CLIP-format checkpoint like ``longclip-L.pt``: ``torch.save(model.state_dict())``
    of a full CLIP (image and text towers, OpenAI key names), or a TorchScript archive.
    ``long_positions``: also LongCLIP's second position table, ``positional_embedding_res``."""
    torch.manual_seed(seed)
    model = spec.build()
    _nudge(model, seed)
    if long_positions:
        generator = torch.Generator().manual_seed(seed + 1)
        model.positional_embedding_res = torch.nn.Parameter(0.1 * torch.randn(model.positional_embedding.shape, generator=generator))
    path.parent.mkdir(parents=True, exist_ok=True)
    if torchscript:

        class Holder(torch.nn.Module):
            def __init__(self, visual: torch.nn.Module) -> None:
                super().__init__()
                self.visual = visual

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.visual(x)

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(Holder(model.visual), torch.zeros(1, 3, spec.image_size, spec.image_size), check_trace=False)
            traced.save(str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


# --------------------------------------------------------------------------- images


def photo(name: str, scale: float = 1.0) -> Image.Image:
    """A real photo from scikit-image (astronaut, chelsea, coffee, rocket, ...), optionally scaled."""
    from skimage import data

    image = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
    if scale != 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
    return image


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
