"""LongCLIP-L image features, from the original OpenAI-format file or an HF conversion.

The official scorer (``LongCLIP.py``) calls ``longclip.load("longclip-L.pt")``: a torch state
dict in OpenAI CLIP's key layout, rebuilt into OpenAI's CLIP model, with the transform

    Resize(n_px, bicubic) on the shortest side -> CenterCrop(n_px) -> RGB -> ToTensor
    -> Normalize(CLIP mean, CLIP std)

and ``encode_image`` as the embedding. Only the image tower matters for image-to-image
similarity, so we build just that tower from the ``visual.*`` weights (shapes give its size,
heads = width // 64 as in OpenAI's ``build_model``) and load it strictly. The text tower, with
LongCLIP's 248-token positions, is built only by the ``longclip-text`` metric
(:mod:`unified_bench.metrics.text`), from the same file.

A checkpoint may also be an HF-format conversion (a directory or hub repository with
``config.json``): it is then loaded like ``clip`` (projected image features) with its own
image processor. Accepted checkpoints: a ``.pt``/``.pth`` file (state dict or TorchScript
archive), a directory holding one, an HF directory, a hub id ``org/name`` (either layout) or
``org/name/file.pt``.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from unified_bench.core.errors import ConfigError
from unified_bench.metrics.base import EmbeddingMetric, MetricInfo, PixelNormalization
from unified_bench.metrics.device_resize import DeviceResize, PackedImages, torchvision_geometry
from unified_bench.metrics.graph import FusedForward, can_fuse
from unified_bench.metrics.hf import ClipMetric
from unified_bench.metrics.runtime import dtype_name, resolve_dtype
from unified_bench.metrics.weights import ResolvedCheckpoint, resolve_checkpoint

#: OpenAI CLIP's normalisation constants (LongCLIP's transform uses the same).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: OpenAI's rule for the number of attention heads of a ViT image tower.
HEAD_WIDTH = 64


# --------------------------------------------------------------------------- the image tower


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back, as OpenAI CLIP does for fp16 weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNormFp32(width)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))])
        )
        self.ln_2 = LayerNormFp32(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # x: [L, N, D]
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


@dataclass(frozen=True)
class VisionShape:
    width: int
    layers: int
    heads: int
    patch_size: int
    resolution: int
    output_dim: int


class OpenAIVisionTransformer(nn.Module):
    """OpenAI CLIP's ViT image tower; parameter names match ``visual.*`` of its checkpoints."""

    def __init__(self, shape: VisionShape) -> None:
        super().__init__()
        self.shape = shape
        width, grid = shape.width, shape.resolution // shape.patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=shape.patch_size, stride=shape.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = LayerNormFp32(width)
        self.transformer = Transformer(width, shape.layers, shape.heads)
        self.ln_post = LayerNormFp32(width)
        self.proj = nn.Parameter(torch.zeros(width, shape.output_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, R, R] -> ``ln_post(CLS) @ proj`` [N, output_dim] (OpenAI's encode_image)."""
        x = self.conv1(pixels.to(self.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x.transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0, :]) @ self.proj


def vision_shape(visual: Mapping[str, torch.Tensor]) -> VisionShape:
    """Read the tower's size from its weights (as OpenAI's ``build_model`` does)."""
    if "conv1.weight" not in visual or "proj" not in visual:
        if any(key.startswith("layer1.") for key in visual):
            raise ConfigError("ResNet CLIP image towers are not supported; LongCLIP checkpoints are ViTs")
        raise ConfigError("checkpoint has no ViT image tower (visual.conv1.weight / visual.proj missing)")
    width, _, patch, _ = visual["conv1.weight"].shape
    block = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$")
    layers = len([key for key in visual if block.match(key)])
    grid = round((visual["positional_embedding"].shape[0] - 1) ** 0.5)
    if width % HEAD_WIDTH:
        raise ConfigError(f"image tower width {width} is not a multiple of {HEAD_WIDTH} (OpenAI's head width)")
    return VisionShape(
        width=int(width),
        layers=layers,
        heads=int(width) // HEAD_WIDTH,
        patch_size=int(patch),
        resolution=int(patch) * grid,
        output_dim=int(visual["proj"].shape[1]),
    )


# --------------------------------------------------------------------------- checkpoint files


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def load_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.pt`` state dict (plain, or nested under 'state_dict') or a TorchScript archive."""
    if _is_torchscript(path):
        # OpenAI's released CLIP .pt files are TorchScript archives; the weights are what we need.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still works
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ConfigError(
                f"{path}: not a plain tensor state dict ({str(err).splitlines()[0]}); "
                "re-save it with torch.save(model.state_dict(), path)"
            ) from err
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ConfigError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}


def visual_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len("visual.") :]: value for key, value in state.items() if key.startswith("visual.")}


def openai_clip_transform(resolution: int, *, normalize: bool = True):
    """LongCLIP's / OpenAI CLIP's image transform for a tower of input size ``resolution``;
    ``normalize=False`` stops at uint8 pixels (:data:`OPENAI_CLIP_NORMALIZATION` finishes them)."""
    from torchvision import transforms

    resize_crop = [
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(resolution),
        lambda image: image.convert("RGB"),
    ]
    if not normalize:
        return transforms.Compose([*resize_crop, transforms.PILToTensor()])
    return transforms.Compose([*resize_crop, transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])


#: ``ToTensor`` + ``Normalize`` of the transform above, for pixels normalised on the device
OPENAI_CLIP_NORMALIZATION = PixelNormalization("torchvision", 255.0, CLIP_MEAN, CLIP_STD)


def load_openai_tower(
    metric: str,
    weights_file: Path,
    requested: str,
    *,
    part: str,
    fits: str,
    select: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
    build: Callable[[dict[str, torch.Tensor]], nn.Module],
) -> nn.Module:
    """One tower of an OpenAI-format file: its weights (``select``), a module sized from them
    (``build``), loaded strictly; each way it can fail is one ConfigError naming the file."""
    try:
        weights = select(load_openai_state_dict(weights_file))
    except (OSError, RuntimeError, EOFError) as err:
        raise ConfigError(f"metric {metric!r}: cannot read {weights_file} ({str(err).splitlines()[0]})") from err
    if not weights:
        raise ConfigError(f"metric {metric!r}: {requested!r} has no {part} weights; not an OpenAI-format CLIP checkpoint")
    tower = build(weights)
    try:
        tower.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ConfigError(
            f"metric {metric!r}: {requested!r} {part} weights do not fit {fits} ({str(err).splitlines()[0]})"
        ) from err
    return tower


def is_hf_checkpoint(resolved: ResolvedCheckpoint) -> bool:
    """An HF-format conversion (a directory with config.json), not an OpenAI-format file."""
    return resolved.path.is_dir() and (resolved.path / "config.json").exists()


def openai_weights_file(metric: str, resolved: ResolvedCheckpoint) -> Path:
    """The ``.pt``/``.pth`` file of an OpenAI-format checkpoint: the path itself, or the one in its directory."""
    path = resolved.path
    if path.is_file():
        return path
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".pt", ".pth"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ConfigError(
            f"metric {metric!r}: {resolved.requested!r} has no config.json and not exactly one .pt/.pth file "
            f"(found: {found}); name the file, e.g. --checkpoint {metric}={path / 'longclip-L.pt'}"
        )
    return candidates[0]


# --------------------------------------------------------------------------- the metric


class _HFLongClip(ClipMetric):
    """An HF-format LongCLIP conversion: CLIP vision tower + projection, its own processor."""

    name = "longclip"


class LongClipMetric(EmbeddingMetric):
    """LongCLIP image features (``encode_image``), L2-normalised by the engine."""

    name = "longclip"
    unit = "cosine"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        super().__init__(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        resolved = resolve_checkpoint(self.name, checkpoint)
        self._hf: _HFLongClip | None = None
        self.tower: OpenAIVisionTransformer | None = None
        if is_hf_checkpoint(resolved):
            self._hf = _HFLongClip(checkpoint, device, dtype, resolved=resolved)
            self._info = self._hf.info
            return
        weights = openai_weights_file(self.name, resolved)
        self.tower = self._build_tower(weights, resolved.requested)
        self.transform = openai_clip_transform(self.tower.shape.resolution)
        self._info = MetricInfo(
            name=self.name,
            kind=self.kind,
            checkpoint=resolved.recorded,
            revision=resolved.revision,
            preprocessing={
                "format": "openai-clip",
                "resize_shortest_side": self.tower.shape.resolution,
                "interpolation": "bicubic (PIL)",
                "center_crop": self.tower.shape.resolution,
                "image_mean": list(CLIP_MEAN),
                "image_std": list(CLIP_STD),
                "pooling": "ln_post(CLS) @ proj",
            },
            dtype=dtype_name(self.torch_dtype),
        )

    def _build_tower(self, weights: Path, requested: str) -> OpenAIVisionTransformer:
        tower = load_openai_tower(
            self.name, weights, requested, part="visual.*", fits="an OpenAI ViT",
            select=visual_weights, build=lambda visual: OpenAIVisionTransformer(vision_shape(visual)),
        )
        return tower.to(self.device, self.torch_dtype).eval()

    @property
    def info(self) -> MetricInfo:
        return self._info

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor | PackedImages:
        if self._hf is not None:
            return self._hf.preprocess(images)
        if self.device_resize is not None and self.device_resize.supports(images):
            return self.device_resize.pack(images)
        return torch.stack([self.transform(image) for image in images])

    def preprocess_on_device(self, resize: bool = True) -> str:
        if self._hf is None:
            return super().preprocess_on_device(resize)
        self._hf.preprocess_on_device(resize)
        self.normalization, self.device_resize = self._hf.normalization, self._hf.device_resize
        return self.device_steps

    def defer_normalization(self) -> bool:  # the OpenAI format; the HF one delegates above
        self.transform = openai_clip_transform(self.tower.shape.resolution, normalize=False)
        self.normalization = OPENAI_CLIP_NORMALIZATION
        return True

    def resize_plan(self) -> DeviceResize:
        resolution = self.tower.shape.resolution
        return DeviceResize(int(Image.Resampling.BICUBIC), torchvision_geometry(resolution, resolution))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._hf is not None:
            return self._hf.forward(pixels)
        pixels = pixels.to(self.device, self.torch_dtype)
        return self.fused(pixels) if self.fused is not None else self.tower(pixels)

    def enable_fusion(self) -> bool:
        if self._hf is not None:
            return self._hf.enable_fusion()
        if not can_fuse(self.device, self.torch_dtype):
            return False
        if self.fused is None:
            self.fused = FusedForward(self.tower, keyword=None, label="metric 'longclip'")
        return True

    @property
    def execution(self) -> str:
        return self._hf.execution if self._hf is not None else super().execution

    def close(self) -> None:
        if self._hf is not None:
            self._hf.close()
        self._hf = None
        self.tower = None
        self.fused = None
        self.normalization = None
        self.device_resize = None
