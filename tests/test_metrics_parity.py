"""Numeric parity with the official UAE scoring scripts (issue 2, acceptance 4).

For the same tiny checkpoint, each test recomputes every pair the way the official
``Score_i2i.py`` does through ``CLIP.py`` / ``DINO_v2.py`` / ``DINO_v3.py`` / ``LongCLIP.py``:
one pair at a time, batch 1, ``Image.open(path).convert('RGB')``, the checkpoint's own
processor (the PIL "slow" class transformers 4.x used by default), the official pooling,
``F.normalize`` and ``torch.cosine_similarity``. That code is written here independently of
``unified_bench.metrics`` (for LongCLIP: the transform re-derived with PIL and numpy, and
open_clip's model class loaded from the same ``.pt``). Our batched engine must agree per
pair to 1e-4 on real photos of different sizes, with batches that mix sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import tiny_models
from unified_bench.scoring import ScoringConfig, match_pairs, score

pytestmark = pytest.mark.slow  # each test loads its backbone twice and embeds ~20 photos

#: The issue asks for 1e-4. We hold 1e-6 (measured: ~2e-7): both sides run the same fp32
#: operations, and at 1e-4 a wrong resize backend (transformers' torchvision processors instead
#: of the PIL ones, which moves these tiny models' cosines by ~1e-5) would pass unnoticed.
TOLERANCE = 1e-6
#: Embeddings themselves are compared too (measured: ~1e-7; the wrong backend moves them ~1e-4).
EMBEDDING_TOLERANCE = 1e-6
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Five pairs of real photos: identical, JPEG copy, other photo, rescaled, blurred crop."""
    root = tmp_path_factory.mktemp("pairs")
    refs, recons = root / "refs", root / "images"
    refs.mkdir()
    recons.mkdir()
    cat, coffee, rocket, astronaut = (tiny_models.photo(n) for n in ("chelsea", "coffee", "rocket", "astronaut"))
    cat.save(refs / "same.png")
    cat.save(recons / "same.png")
    cat.save(refs / "jpeg.png")
    cat.save(recons / "recon_jpeg.jpg", quality=40)
    coffee.save(refs / "other.png")
    rocket.save(recons / "other.png")
    rocket.save(refs / "rescaled.png")
    rocket.resize((384, 256), Image.Resampling.BILINEAR).save(recons / "rescaled.png")
    astronaut.save(refs / "crop.png")
    astronaut.filter(ImageFilter.GaussianBlur(3)).crop((40, 0, 512, 400)).save(recons / "crop.png")
    return refs, recons


def engine_scores(
    name: str,
    checkpoint: Path,
    pair_dirs,
    cache_dir: Path | None = None,
    *,
    fuse: bool | None = None,
    device_preprocessing: str | None = None,
    prefetch: bool | None = None,
) -> dict[str, float]:
    """Our batched engine (batch 2, so batches mix image sizes), per sample id."""
    refs, recons = pair_dirs
    pairing = match_pairs(recons, refs)
    config = ScoringConfig(
        metrics=[name],
        checkpoints={name: str(checkpoint)},
        batch_size=2,
        use_cache=cache_dir is not None,
        cache_dir=cache_dir,
        progress=False,
        fuse=fuse,
        device_preprocessing=device_preprocessing,
        prefetch=prefetch,
    )
    report, failures, _ = score(pairing.pairs, config)
    assert not failures and not report.errors, (failures, report.errors)
    execution = report.run["metrics"][0]["execution"]
    assert execution == ("fused graph (oneDNN)" if fuse else "eager"), execution
    if device_preprocessing is None:  # on a CPU all preprocessing stays on the threads by default
        assert report.run["metrics"][0]["device_preprocessing"] == "none"
    values = report.metric(name).values
    return {sample.sample_id: value for sample, value in zip(report.samples, values)}


def official_scores(encode, pair_dirs) -> dict[str, float]:
    """Score_i2i.py's loop: each reconstruction against its reference, one pair at a time."""
    refs, recons = pair_dirs
    out = {}
    for recon in sorted(recons.iterdir()):
        stem = recon.stem.removeprefix("recon_")
        ref = next(refs.glob(f"{stem}.*"))
        with torch.no_grad():
            first = encode(Image.open(recon).convert("RGB"))
            second = encode(Image.open(ref).convert("RGB"))
            out[stem] = torch.cosine_similarity(first, second, dim=1).item()
    return out


def assert_parity(ours: dict[str, float], official: dict[str, float]) -> None:
    assert set(ours) == set(official)
    for sample_id, value in official.items():
        assert abs(ours[sample_id] - value) < TOLERANCE, (sample_id, ours[sample_id], value)
    assert official["same"] == pytest.approx(1.0, abs=1e-5)
    assert official["other"] < 1.0 - 1e-3  # the pairs really differ


def assert_embedding_parity(name: str, checkpoint: Path, encode, pair_dirs) -> None:
    """Every image embedded in one mixed-size batch by us == one at a time the official way."""
    from unified_bench.core.images import load_image
    from unified_bench.metrics import build_metric

    files = sorted(p for folder in pair_dirs for p in folder.iterdir())
    metric = build_metric(name, checkpoint=str(checkpoint))
    ours = metric.embed([load_image(p) for p in files])
    with torch.no_grad():
        official = torch.cat([encode(Image.open(p).convert("RGB")) for p in files])
    assert (ours - official).abs().max().item() < EMBEDDING_TOLERANCE


def check(name: str, checkpoint: Path, encode, pair_dirs, cache_dir: Path | None = None) -> dict[str, float]:
    official = official_scores(encode, pair_dirs)
    assert_parity(engine_scores(name, checkpoint, pair_dirs, cache_dir), official)
    assert_embedding_parity(name, checkpoint, encode, pair_dirs)
    return official


# --------------------------------------------------------------------------- official recipes


def official_clip_encoder(model_dir: Path):
    """CLIP.py: processor(images=...) -> CLIPModel.get_image_features -> F.normalize."""
    from transformers import CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPImageProcessorPil.from_pretrained(model_dir)

    def encode(image):
        inputs = processor(images=image, return_tensors="pt")
        features = model.get_image_features(**inputs)
        features = getattr(features, "pooler_output", features)  # an output object in transformers 5
        return F.normalize(features, p=2, dim=1)

    return encode


def official_dino_encoder(model_dir: Path, processor_cls):
    """DINO_v2.py / DINO_v3.py: AutoModel, last_hidden_state[:, 0, :], F.normalize."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = processor_cls.from_pretrained(model_dir)

    def encode(image):
        inputs = processor(images=image, return_tensors="pt")
        return F.normalize(model(**inputs).last_hidden_state[:, 0, :], p=2, dim=1)

    return encode


def openai_transform(image: Image.Image, size: int) -> torch.Tensor:
    """LongCLIP's _transform re-derived: shortest side -> size (PIL bicubic), center crop,
    RGB, /255, CLIP mean/std; the same size and crop arithmetic torchvision uses."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / np.float32(255.0)).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0)


def official_longclip_encoder(pt_file: Path, spec: tiny_models.OpenClipSpec):
    """LongCLIP.py: longclip.load(path) -> model.encode_image(tform(image)) -> F.normalize (fp32 on CPU)."""
    model = spec.build()
    model.load_state_dict(torch.load(pt_file, map_location="cpu", weights_only=True), strict=True)
    model = model.float().eval()

    def encode(image):
        return F.normalize(model.encode_image(openai_transform(image, spec.image_size)), p=2, dim=1)

    return encode


def official_siglip_encoder(checkpoint: Path):
    """Not in the paper; the same recipe with SiglipModel.get_image_features (pooled)."""
    from transformers import SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    model = SiglipModel.from_pretrained(checkpoint).eval()
    processor = SiglipImageProcessorPil.from_pretrained(checkpoint)

    def encode(image):
        features = model.get_image_features(**processor(images=image, return_tensors="pt"))
        return F.normalize(getattr(features, "pooler_output", features), p=2, dim=1)

    return encode


def checkpoint_and_official(name: str, root: Path):
    """(tiny checkpoint, official per-image encoder) for a parametrised metric name, with
    LongCLIP as 'longclip-openai' (the original .pt format) or 'longclip-hf'."""
    from transformers import DINOv3ViTImageProcessor
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    if name == "longclip-openai":
        spec = tiny_models.OpenClipSpec()
        checkpoint = tiny_models.tiny_longclip_pt(root / "longclip-L.pt", spec=spec)
        return checkpoint, official_longclip_encoder(checkpoint, spec)
    if name in ("clip", "longclip-hf"):
        checkpoint = tiny_models.tiny_clip(root / name)
        return checkpoint, official_clip_encoder(checkpoint)
    if name == "siglip":
        checkpoint = tiny_models.tiny_siglip(root / name)
        return checkpoint, official_siglip_encoder(checkpoint)
    if name == "dinov2":
        checkpoint = tiny_models.tiny_dinov2(root / name)
        return checkpoint, official_dino_encoder(checkpoint, BitImageProcessorPil)
    checkpoint = tiny_models.tiny_dinov3(root / name)
    return checkpoint, official_dino_encoder(checkpoint, DINOv3ViTImageProcessor)


# --------------------------------------------------------------------------- tests


def test_clip_parity(tmp_path, pair_dirs):
    checkpoint = tiny_models.tiny_clip(tmp_path / "clip")
    cache = tmp_path / "cache"
    official = check("clip", checkpoint, official_clip_encoder(checkpoint), pair_dirs, cache_dir=cache)
    # A warm reference cache changes the work, not the numbers.
    assert_parity(engine_scores("clip", checkpoint, pair_dirs, cache_dir=cache), official)


def test_dinov2_parity(tmp_path, pair_dirs):
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    checkpoint = tiny_models.tiny_dinov2(tmp_path / "dinov2")
    check("dinov2", checkpoint, official_dino_encoder(checkpoint, BitImageProcessorPil), pair_dirs)


def test_dinov3_parity(tmp_path, pair_dirs):
    from transformers import DINOv3ViTImageProcessor

    checkpoint = tiny_models.tiny_dinov3(tmp_path / "dinov3")
    check("dinov3", checkpoint, official_dino_encoder(checkpoint, DINOv3ViTImageProcessor), pair_dirs)


def test_longclip_openai_format_parity(tmp_path, pair_dirs):
    spec = tiny_models.OpenClipSpec()
    checkpoint = tiny_models.tiny_longclip_pt(tmp_path / "longclip-L.pt", spec=spec)
    check("longclip", checkpoint, official_longclip_encoder(checkpoint, spec), pair_dirs)


def test_longclip_hf_format_parity(tmp_path, pair_dirs):
    checkpoint = tiny_models.tiny_clip(tmp_path / "longclip-hf", seed=3)
    check("longclip", checkpoint, official_clip_encoder(checkpoint), pair_dirs)


def test_siglip_parity(tmp_path, pair_dirs):
    checkpoint, encode = checkpoint_and_official("siglip", tmp_path)
    check("siglip", checkpoint, encode, pair_dirs)


#: The fused CPU graph (unified_bench.metrics.graph) reorders float operations: it is held to
#: 1e-5 (measured: ~1e-7 on these tiny models), still 10x inside the issue's 1e-4.
FUSED_TOLERANCE = 1e-5


@pytest.mark.parametrize("name", ["clip", "dinov2", "dinov3", "longclip-openai", "longclip-hf"])
def test_fused_graph_keeps_parity(tmp_path, pair_dirs, name):
    """The traced, oneDNN-fused forward scores every pair as the official computation does,
    including the last, partial batch (5 images at batch 2), which runs eagerly. (SigLIP is
    not fused: it moved by up to 6e-5; see SiglipMetric.fusable.)"""
    checkpoint, encode = checkpoint_and_official(name, tmp_path)
    official = official_scores(encode, pair_dirs)
    ours = engine_scores(name.split("-")[0], checkpoint, pair_dirs, fuse=True)
    assert set(ours) == set(official)
    for sample_id, value in official.items():
        assert abs(ours[sample_id] - value) < FUSED_TOLERANCE, (sample_id, ours[sample_id], value)


#: what each checkpoint's preprocessing can move to the device: DINOv3 has only a torchvision
#: processor, which folds rescale into normalise (other arithmetic), so it keeps all of it
ON_DEVICE = {
    "clip": "resize, crop, normalise",
    "dinov2": "resize, crop, normalise",
    "dinov3": "none",
    "siglip": "resize, crop, normalise",
    "longclip-openai": "resize, crop, normalise",
    "longclip-hf": "resize, crop, normalise",
}


@pytest.mark.parametrize("mode", ["normalize", "resize"])
@pytest.mark.parametrize("name", sorted(ON_DEVICE))
def test_preprocessing_on_device_keeps_parity(tmp_path, pair_dirs, name, mode):
    """The GPU default: threads only decode (resize) or stop at uint8 pixels (normalize); the
    device does the rest with Pillow's and the processor's own arithmetic. Forced on here on
    the CPU: every pixel is bit-identical to the processor's, so embeddings are equal, and
    scores keep the official parity."""
    from unified_bench.core.images import load_image
    from unified_bench.metrics import build_metric
    from unified_bench.metrics.device_resize import PackedImages

    checkpoint, encode = checkpoint_and_official(name, tmp_path)
    metric_name = name.split("-")[0]
    expected = ON_DEVICE[name] if mode == "resize" or ON_DEVICE[name] == "none" else "normalise"

    images = [load_image(p) for folder in pair_dirs for p in sorted(folder.iterdir())]
    plain = build_metric(metric_name, checkpoint=str(checkpoint))
    moved = build_metric(metric_name, checkpoint=str(checkpoint))
    assert moved.preprocess_on_device(resize=mode == "resize") == expected
    assert moved.device_steps == expected
    pixels, raw = plain.preprocess(images), moved.preprocess(images)
    if expected == "resize, crop, normalise":
        assert isinstance(raw, PackedImages) and len(raw) == len(images)
        assert torch.equal(moved.normalization(raw.resize(moved.device)), pixels)
    elif expected == "normalise":
        assert raw.dtype == torch.uint8 and raw.shape == pixels.shape
        assert torch.equal(moved.normalization(raw), pixels)
    else:
        assert moved.normalization is None and torch.equal(raw, pixels)
    assert torch.equal(moved.embed_pixels(raw), plain.embed_pixels(pixels))
    with pytest.raises(ValueError, match="uint8"):
        plain.embed_pixels(pixels.to(torch.uint8))

    official = official_scores(encode, pair_dirs)
    assert_parity(engine_scores(metric_name, checkpoint, pair_dirs, device_preprocessing=mode), official)
    # the GPU's whole path: decoding streamed into the pipeline, which packs on its thread
    assert_parity(engine_scores(metric_name, checkpoint, pair_dirs, device_preprocessing=mode, prefetch=True), official)
