"""The Shapes oracle: a small CNN that parses an image into a scene, and the ``shapes-attr`` metric.

Network: the image is resized to 64x64 (bilinear), then four conv blocks (stride 2, 2, 1, 2)
give an 8x8x96 map, a 1x1 conv squeezes it to 48 channels and one linear layer predicts,
for each of the 9 grid cells, an occupancy logit and shape (5), colour (8) and size (2)
logits. A cell holds an object when its occupancy probability is above 0.5.

Training (:func:`train_oracle`, one command, fixed seed, CPU, a few minutes): scenes of the
train split rendered at a random resolution with jitter, scale and JPEG augmentation, then
blur, noise and brightness/colour shifts on the fly, so the oracle also reads imperfect
reconstructions. Its accuracy is measured by :func:`evaluate_oracle` on val/test renders
(held out: the splits share no scene).

Metric: :class:`ShapesAttrMetric` compares the ground-truth scene of the *original*
(``PairInput.meta["scene"]``) with the scene the oracle parses from the *reconstruction*;
see :mod:`unified_bench.tracks.shapes.compare` for the exact definitions. When a pair has
no meta, the oracle parses the reference image too (the score is then oracle vs oracle).
In text mode (the text trip) it compares the same ground truth with the scene the track's
caption grammar (:func:`unified_bench.tracks.shapes.captions.parse`) reads from a caption,
with the same F1 and sub-scores; with no meta it parses the reference text instead.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from unified_bench.tracks.shapes.captions import parse as parse_caption
from unified_bench.tracks.shapes.compare import SUB_SCORES, compare_scenes
from unified_bench.tracks.shapes.render import render
from unified_bench.tracks.shapes.scene import COLOR_NAMES, POSITIONS, SHAPES, SIZES, Scene, ShapeObject
from unified_bench.tracks.shapes.splits import iter_samples, sample_seed, split_scene
from unified_bench.core.errors import ConfigError, WeightsNotFoundError
from unified_bench.core.images import file_sha256
from unified_bench.metrics.base import MetricInfo, PairInput, PairMetric, PairScore, TextInput

INPUT_SIZE = 64
N_CELLS = len(POSITIONS)
#: per-cell output layout: occupancy | shape logits | colour logits | size logits
HEAD = (1, len(SHAPES), len(COLOR_NAMES), len(SIZES))
BUNDLED_CHECKPOINT = Path(__file__).with_name("oracle.safetensors")
CHECKPOINT_FORMAT = "shapes-oracle-v1"
TRAIN_COMMAND = "unified-bench shapes train-oracle --out unified_bench/tracks/shapes/oracle.safetensors"


# --- network -----------------------------------------------------------------------------


def _block(c_in: int, c_out: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class OracleNet(nn.Module):
    """64x64 RGB in [0, 1] -> logits [N, 9 cells, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 24, 2, kernel=5), _block(24, 48, 2), _block(48, 48, 1), _block(48, 96, 2), _block(96, 48, 1, kernel=1)
        )
        self.head = nn.Linear(48 * (INPUT_SIZE // 8) ** 2, N_CELLS * sum(HEAD))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.features((pixels - 0.5) / 0.25)
        return self.head(x.flatten(1)).view(-1, N_CELLS, sum(HEAD))


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """[N, 9, 16] -> occupancy [N, 9], shape [N, 9, 5], colour [N, 9, 8], size [N, 9, 2]."""
    occupancy, shape, color, size = torch.split(logits, HEAD, dim=-1)
    return occupancy.squeeze(-1), shape, color, size


def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
    """Images -> float tensor [N, 3, 64, 64] in [0, 1] (RGB, bilinear resize)."""
    arrays = [
        np.asarray(img.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
        for img in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def decode(logits: torch.Tensor) -> list[Scene]:
    """Logits [N, 9, 16] -> one scene per image."""
    occupancy, shape, color, size = split_logits(logits.float().cpu())
    scenes = []
    for n in range(logits.shape[0]):
        objects = [
            ShapeObject(
                SHAPES[int(shape[n, c].argmax())],
                COLOR_NAMES[int(color[n, c].argmax())],
                SIZES[int(size[n, c].argmax())],
                POSITIONS[c],
            )
            for c in range(N_CELLS)
            if occupancy[n, c] > 0
        ]
        scenes.append(Scene(tuple(objects)))
    return scenes


def scene_targets(scene: Scene) -> np.ndarray:
    """[4, 9] int targets: occupancy, shape, colour, size per cell (-100 = no object)."""
    targets = np.full((4, N_CELLS), -100, dtype=np.int64)
    targets[0] = 0
    for obj in scene.objects:
        c = obj.cell
        targets[:, c] = (1, SHAPES.index(obj.shape), COLOR_NAMES.index(obj.color), SIZES.index(obj.size))
    return targets


def oracle_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE on occupancy + cross-entropy on the attributes of occupied cells."""
    occupancy, shape, color, size = split_logits(logits)
    loss = F.binary_cross_entropy_with_logits(occupancy, targets[:, 0].float())
    for logit, target in ((shape, targets[:, 1]), (color, targets[:, 2]), (size, targets[:, 3])):
        loss = loss + F.cross_entropy(logit.reshape(-1, logit.shape[-1]), target.reshape(-1), ignore_index=-100)
    return loss


class ShapesOracle:
    """A loaded oracle network: ``parse(images) -> scenes``."""

    def __init__(self, checkpoint: str | Path | None = "bundled", device: str = "cpu") -> None:
        path = resolve_checkpoint(checkpoint)
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{path} is not a Shapes oracle checkpoint (format {metadata.get('format')!r})")
        self.path = path
        self.metadata = metadata
        self.device = torch.device(device)
        self.net = OracleNet()
        self.net.load_state_dict(load_file(str(path)))
        self.net.to(self.device).eval()

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image], batch_size: int = 256) -> torch.Tensor:
        out = [
            self.net(preprocess(images[i : i + batch_size]).to(self.device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, N_CELLS, sum(HEAD))

    def parse(self, images: Sequence[Image.Image]) -> list[Scene]:
        return decode(self.logits(images))


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """'bundled' (or None) -> the checkpoint shipped in the package; else a file path."""
    path = BUNDLED_CHECKPOINT if checkpoint in (None, "bundled") else Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Shapes oracle checkpoint {path} not found; rebuild it with `{TRAIN_COMMAND}` "
            "or pass a checkpoint file"
        )
    return path


# --- training ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleTrainConfig:
    """Everything that determines the trained oracle (stored in the checkpoint's metadata)."""

    seed: int = 0
    n_train: int = 16_000  # train-split scenes, indices 0..n_train-1
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 1  # fixed: the thread count changes float summation order
    render_sizes: tuple[int, ...] = (64, 80, 96, 128, 160)
    scale_range: tuple[float, float] = (0.88, 1.12)
    wide_jitter: float = 0.06  # larger in-cell shift, for half of the renders
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (35, 90)
    blur_prob: float = 0.3
    noise_prob: float = 0.5
    noise_std: float = 0.03
    shift_prob: float = 0.5
    shift: float = 0.04  # brightness / per-channel colour shift
    contrast: float = 0.08


def augmented_render(scene: Scene, seed: int, config: OracleTrainConfig) -> Image.Image:
    """One training image of ``scene``: random resolution, jitter, scale and JPEG (from ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA06]))
    size = int(rng.choice(config.render_sizes))
    scale = float(rng.uniform(*config.scale_range))
    max_jitter = config.wide_jitter if rng.random() < 0.5 else 0.02
    image = render(scene, size, jitter_seed=seed, scale=scale, max_jitter=max_jitter)
    if rng.random() < config.jpeg_prob:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(*config.jpeg_quality)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def build_training_set(config: OracleTrainConfig, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 3, 64, 64] and int targets [N, 4, 9] from the train split."""
    images = torch.empty(config.n_train, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)
    targets = torch.empty(config.n_train, 4, N_CELLS, dtype=torch.int64)
    for index in range(config.n_train):
        scene = split_scene("train", index)
        image = augmented_render(scene, sample_seed("train", index) ^ config.seed, config)
        images[index] = (preprocess([image])[0] * 255.0).round().to(torch.uint8)
        targets[index] = torch.from_numpy(scene_targets(scene))
        if progress and (index + 1) % 500 == 0:
            progress(500)
    return images, targets


def gaussian_kernel(sigma: float, radius: int = 2) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def augment_batch(pixels: torch.Tensor, config: OracleTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """On-the-fly degradations of a float batch in [0, 1]: blur, noise, brightness/colour."""
    n = pixels.shape[0]
    blur = torch.rand(n, generator=gen) < config.blur_prob
    if blur.any():
        sigma = 0.4 + 0.6 * float(torch.rand(1, generator=gen))
        k = gaussian_kernel(sigma)
        sel = pixels[blur]
        sel = F.conv2d(F.pad(sel, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        sel = F.conv2d(F.pad(sel, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
        pixels = pixels.clone()
        pixels[blur] = sel
    shift = (torch.rand(n, 1, 1, 1, generator=gen) < config.shift_prob).float()
    contrast = 1 + config.contrast * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1) * shift
    offset = config.shift * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1) * shift
    pixels = (pixels - 0.5) * contrast + 0.5 + offset
    noisy = (torch.rand(n, 1, 1, 1, generator=gen) < config.noise_prob).float()
    std = config.noise_std * torch.rand(n, 1, 1, 1, generator=gen) * noisy
    pixels = pixels + std * torch.randn(pixels.shape, generator=gen)
    return pixels.clamp(0.0, 1.0)


@dataclass
class TrainReport:
    config: dict[str, Any]
    seconds: float
    data_seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)
    val_accuracy: dict[str, float] = field(default_factory=dict)


def train_oracle(
    out: str | Path,
    config: OracleTrainConfig = OracleTrainConfig(),
    *,
    log: Callable[[str], None] = print,
    val_samples: int = 500,
) -> TrainReport:
    """Train the oracle from scratch on CPU and write ``out`` (safetensors with metadata)."""
    from safetensors.torch import save_file

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    images, targets = build_training_set(config)
    data_seconds = time.perf_counter() - started
    log(f"rendered {config.n_train} training images in {data_seconds:.0f}s")
    val_images = [s.image for s in iter_samples("val", 256, val_samples)]
    val_scenes = [s.scene for s in iter_samples("val", 256, val_samples)]

    net = OracleNet().to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(config.n_train / config.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps_per_epoch * config.epochs, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    for epoch in range(config.epochs):
        net.train()
        order = torch.randperm(config.n_train, generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            pixels = augment_batch(images[idx].float() / 255.0, config, gen).contiguous(memory_format=torch.channels_last)
            loss = oracle_loss(net(pixels), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach())
        losses.append(running / steps_per_epoch)
        net.eval()
        with torch.inference_mode():
            predicted = decode(torch.cat([net(preprocess(val_images[i : i + 250])) for i in range(0, len(val_images), 250)]))
        accuracy = object_accuracy(val_scenes, predicted)
        log(
            f"epoch {epoch + 1}/{config.epochs} loss {losses[-1]:.4f} "
            + " ".join(f"{k} {v:.4f}" for k, v in accuracy.items())
            + f" ({time.perf_counter() - started:.0f}s)"
        )
    seconds = time.perf_counter() - started
    net = net.to(memory_format=torch.contiguous_format)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(asdict(config), sort_keys=True),
        "command": TRAIN_COMMAND,
        "input_size": str(INPUT_SIZE),
        "train_seconds": f"{seconds:.1f}",
        "torch": torch.__version__,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=metadata)
    log(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB) in {seconds:.0f}s")
    return TrainReport(asdict(config), seconds, data_seconds, losses[-1], losses, accuracy)


# --- evaluation --------------------------------------------------------------------------


def object_accuracy(truths: Sequence[Scene], preds: Sequence[Scene]) -> dict[str, float]:
    """Per-attribute accuracy of predicted scenes against the truth.

    shape / color / size: fraction of true objects whose cell holds a predicted object with
    that value; position: fraction of true objects whose cell holds a predicted object;
    empty: fraction of empty cells predicted empty; count: fraction of images with the
    right number of objects; object: fraction of true objects entirely right.
    """
    hits = dict.fromkeys(("shape", "color", "size", "position", "object"), 0)
    n_objects = empty_right = n_empty = count_right = 0
    for truth, pred in zip(truths, preds, strict=True):
        by_cell = {obj.cell: obj for obj in pred.objects}
        for obj in truth.objects:
            n_objects += 1
            found = by_cell.get(obj.cell)
            if found is None:
                continue
            hits["position"] += 1
            hits["shape"] += found.shape == obj.shape
            hits["color"] += found.color == obj.color
            hits["size"] += found.size == obj.size
            hits["object"] += found == obj
        true_cells = {obj.cell for obj in truth.objects}
        n_empty += N_CELLS - len(true_cells)
        empty_right += sum(1 for c in range(N_CELLS) if c not in true_cells and c not in by_cell)
        count_right += len(pred) == len(truth)
    out = {name: value / max(n_objects, 1) for name, value in hits.items()}
    out["empty"] = empty_right / max(n_empty, 1)
    out["count"] = count_right / max(len(truths), 1)
    return out


def degrade(image: Image.Image, seed: int) -> Image.Image:
    """A fixed, mild degradation (blur + noise + JPEG q=60) for the robustness check."""
    from PIL import ImageFilter

    rng = np.random.default_rng(seed)
    blurred = image.filter(ImageFilter.GaussianBlur(radius=0.6 * image.width / INPUT_SIZE))
    noisy = np.asarray(blurred, dtype=np.float32) + rng.normal(0.0, 6.0, size=(image.height, image.width, 3))
    out = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def evaluate_oracle(
    oracle: ShapesOracle,
    split: str = "test",
    n: int = 1000,
    size: int = 64,
    *,
    degraded: bool = False,
) -> dict[str, float]:
    """Per-attribute accuracy (see :func:`object_accuracy`) on the first ``n`` renders of ``split``."""
    samples = list(iter_samples(split, size, n))
    images = [s.image for s in samples]
    if degraded:
        images = [degrade(img, s.seed) for img, s in zip(images, samples)]
    return object_accuracy([s.scene for s in samples], oracle.parse(images))


# --- metric ------------------------------------------------------------------------------


def meta_scene(meta: Any) -> Scene | None:
    """The ground-truth scene in ``PairInput.meta`` ({"scene": dict or JSON string}), if any."""
    if not meta or meta.get("scene") is None:
        return None
    return Scene.from_dict(meta["scene"])


def _truth(meta: Any) -> tuple[Scene | None, str | None]:
    """(ground-truth scene or None when meta has none, error when meta's scene is malformed)."""
    try:
        return meta_scene(meta), None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return None, f"meta['scene'] is not a Shapes scene: {err}"


def _verdict(truth: Scene, pred: Scene) -> PairScore:
    comparison = compare_scenes(truth, pred)
    return PairScore(comparison.f1, comparison.sub_scores())


class ShapesAttrMetric(PairMetric):
    """Object-level F1 of the oracle's parse of the reconstruction against the true scene.

    Sub-scores: shape, color, size, position (per-attribute F1) and count. Unit: F1 in [0, 1].
    ``dtype`` is accepted for the common constructor and ignored (the network is float32).
    Reads images (the oracle parses the reconstruction) and texts (the caption grammar parses
    a caption); "image" first, so the image trip is what it always was.
    """

    name: ClassVar[str] = "shapes-attr"
    unit: ClassVar[str] = "f1"
    reads: ClassVar[tuple[str, ...]] = ("image", "text")
    needs_meta: ClassVar[bool] = True
    reference_optional: ClassVar[bool] = True
    sub_score_names: ClassVar[tuple[str, ...]] = SUB_SCORES

    def __init__(self, checkpoint: str | None = "bundled", device: str = "cpu", dtype: str | None = None) -> None:
        self.oracle = ShapesOracle(checkpoint, device=device)
        self._info = MetricInfo(
            name=self.name,
            kind=self.kind,
            checkpoint="bundled" if self.oracle.path == BUNDLED_CHECKPOINT else str(self.oracle.path),
            revision=file_sha256(self.oracle.path),
            preprocessing={"resize": [INPUT_SIZE, INPUT_SIZE], "resample": "bilinear", "occupancy_threshold": 0.5},
            dtype="float32",
        )

    @property
    def info(self) -> MetricInfo:
        return self._info

    def score_pairs(self, pairs: Sequence[PairInput]) -> list[PairScore]:
        found = [_truth(pair.meta) for pair in pairs]
        truths = [truth for truth, _ in found]
        errors = [error for _, error in found]
        missing = [i for i, (t, e) in enumerate(zip(truths, errors)) if t is None and e is None]
        for i in missing:
            if pairs[i].reference is None:
                errors[i] = "no ground-truth scene in meta and no reference image to parse"
        missing = [i for i in missing if errors[i] is None]
        if missing:  # no ground truth: the oracle reads the reference as well
            for i, scene in zip(missing, self.oracle.parse([pairs[i].reference for i in missing])):
                truths[i] = scene
        predictions = self.oracle.parse([pair.reconstruction for pair in pairs])
        scores = []
        for truth, pred, error in zip(truths, predictions, errors):
            if error is not None or truth is None:
                scores.append(PairScore(None, error=error or "no ground-truth scene"))
                continue
            scores.append(_verdict(truth, pred))
        return scores

    def score_texts(self, inputs: Sequence[TextInput]) -> list[PairScore]:
        """Each caption, parsed by the track's caption grammar, against the true scene (or,
        with no meta, against the scene the reference text describes)."""
        scores = []
        for item in inputs:
            truth, error = _truth(item.meta)
            if error is None and truth is None:
                if item.reference_text is None:
                    error = "no ground-truth scene in meta and no reference text to parse"
                else:
                    truth = parse_caption(item.reference_text)
            if error is not None:
                scores.append(PairScore(None, error=error))
                continue
            scores.append(_verdict(truth, parse_caption(item.text)))
        return scores

    def close(self) -> None:
        self.oracle = None  # type: ignore[assignment]
