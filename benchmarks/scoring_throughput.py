"""Scoring throughput: ours (cold and warm reference cache) vs the official per-pair loop.

Measured in one run on the same backbone and the same 100 (reference, reconstruction) pairs:

- bare forward: the backbone's eager forward passes alone on the already-preprocessed 200
  images (batched) -- the limit of this machine for this model in eager PyTorch (on a CPU
  ours runs a fused oneDNN graph of the same model, unified_bench.metrics.graph, so it can
  beat this row);
- official loop: what the official scorer does per pair -- open both files, run the image
  processor on each, ``get_image_features`` with batch 1, normalise, cosine; the reference is
  re-encoded for every pair and every metric;
- ours cold: ``unified_bench.scoring.score_folders`` with an empty reference cache
  (decode, batched preprocessing + forward, results.json + scores.csv with bootstrap CIs);
- ours warm: the same call again; reference embeddings come from the on-disk cache;
- ours cold, eager (CPU): the cold call with the fused graph turned off (``fuse=False``),
  to show what the fusion itself contributes.

The backbone is a ViT-B/16-sized CLIP vision tower at 224 px, randomly initialised (weights
do not change the cost). Model loading is timed separately and excluded from every row.

    python benchmarks/scoring_throughput.py [--pairs 100] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def build_checkpoint(root: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=224, patch_size=16,
        ),
        text_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
            vocab_size=128, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        projection_dim=512,
    )
    path = root / "clip-vit-b16"
    CLIPModel(config).eval().save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(path)
    return path


def make_pairs(root: Path, count: int) -> tuple[Path, Path]:
    """Real PNG files: smooth random fields at 256-384 px, reconstructions are perturbed copies."""
    rng = np.random.default_rng(0)
    refs, recons = root / "refs", root / "recons"
    refs.mkdir()
    recons.mkdir()
    for i in range(count):
        side = int(rng.integers(256, 385))
        base = rng.random((side // 16, side // 16, 3))
        image = Image.fromarray((base * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
        image.save(refs / f"{i:03d}.png")
        noisy = np.clip(np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (side, side, 3)), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(recons / f"{i:03d}.png")
    return refs, recons


def official_loop(model, processor, refs: Path, recons: Path, device: str) -> list[float]:
    """The official per-pair computation: batch 1, reference re-encoded for every pair."""
    scores = []
    for recon_path in sorted(recons.iterdir()):
        ref_path = refs / recon_path.name
        features = []
        for path in (recon_path, ref_path):
            image = Image.open(path).convert("RGB")
            with torch.no_grad():
                inputs = processor(images=image, return_tensors="pt").to(device)
                out = model.get_image_features(**inputs)
                feat = out.pooler_output if hasattr(out, "pooler_output") else out
                features.append(torch.nn.functional.normalize(feat, p=2, dim=1))
        scores.append(torch.cosine_similarity(features[0], features[1], dim=1).item())
    return scores


def bare_forward(model, pixels: torch.Tensor, batch_size: int, device: str) -> None:
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            model.get_image_features(pixel_values=pixels[start : start + batch_size].to(device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the engine's for the device (8 CPU, 64 CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prefetch", choices=("auto", "on", "off"), default="auto",
                        help="ours: preprocess the next batch on threads while the backbone runs (auto: CUDA only)")
    parser.add_argument("--dtype", default=None, help="metric dtype for ours (default: fp32 CPU, fp16 CUDA)")
    parser.add_argument("--fuse", choices=("auto", "on", "off"), default="auto",
                        help="ours: fused oneDNN graph of the backbone (auto: CPU float32 from 64 images)")
    parser.add_argument("--device-preprocessing", choices=("auto", "none", "normalize", "resize"), default="auto",
                        help="ours: preprocessing steps run on the device (auto: resize on a GPU, none on a CPU)")
    parser.add_argument("--workers", type=int, default=None,
                        help="ours: decoding and preprocessing threads (default: the engine's)")
    args = parser.parse_args()

    from transformers import CLIPImageProcessorPil, CLIPModel

    from unified_bench.core.images import load_image
    from unified_bench.scoring import ScoringConfig, score_folders
    from unified_bench.scoring.engine import default_batch_size

    if args.batch_size is None:
        args.batch_size = default_batch_size(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = build_checkpoint(root)
        refs, recons = make_pairs(root, args.pairs)
        device = args.device
        torch_dtype = torch.float16 if device.startswith("cuda") and args.dtype != "float32" else torch.float32

        model = CLIPModel.from_pretrained(checkpoint).to(device).eval()
        processor = CLIPImageProcessorPil.from_pretrained(checkpoint)
        images = [load_image(p) for p in sorted(refs.iterdir())] + [load_image(p) for p in sorted(recons.iterdir())]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        half = model.to(torch_dtype)

        breakdown: dict[str, dict[str, float]] = {}
        execution: dict[str, str] = {}
        results: dict[str, list[float]] = {"bare forward": [], "official loop": [], "ours cold": [], "ours warm": []}
        bare_forward(half, pixels[: args.batch_size].to(torch_dtype), args.batch_size, device)  # warm-up
        official_model = CLIPModel.from_pretrained(checkpoint).to(device).eval()  # fp32, as the script
        for repeat in range(args.repeats):
            results["bare forward"].append(timed(lambda: bare_forward(half, pixels.to(torch_dtype), args.batch_size, device)))
            results["official loop"].append(timed(lambda: official_loop(official_model, processor, refs, recons, device)))
            cache = root / f"cache-{repeat}"
            config = ScoringConfig(
                metrics=["clip"], checkpoints={"clip": str(checkpoint)}, device=device, dtype=args.dtype,
                batch_size=args.batch_size, cache_dir=cache, progress=False,
                prefetch={"auto": None, "on": True, "off": False}[args.prefetch],
                fuse={"auto": None, "on": True, "off": False}[args.fuse],
                device_preprocessing=None if args.device_preprocessing == "auto" else args.device_preprocessing,
                workers=args.workers,
            )
            runs = [("ours cold", config), ("ours warm", config)]
            if device == "cpu" and args.fuse == "auto":
                # the same cold run without the fused graph: what fusion itself is worth here
                runs.append(("ours cold, eager", dataclasses.replace(config, fuse=False, cache_dir=root / f"cache-eager-{repeat}")))
            for label, run_config in runs:
                outcome = score_folders(recons, refs, root / f"out-{repeat}-{label.replace(' ', '').replace(',', '')}", run_config)
                timings = outcome.results["run"]["timings"]
                # Exclude the backbone load, as for the other rows.
                results.setdefault(label, []).append(timings["total_s"] - timings.get("clip.load_s", 0.0))
                breakdown[label] = {k: round(v, 3) for k, v in timings.items()}
                execution[label] = outcome.results["run"]["metrics"][0].get("execution", "eager")

        medians = {label: statistics.median(values) for label, values in results.items()}
        official = medians["official loop"]
        bare = medians["bare forward"]
        print(f"device={device} pairs={args.pairs} batch={args.batch_size} repeats={args.repeats} "
              f"torch_threads={torch.get_num_threads()}")
        print(f"{'path':<18}{'median s':>10}{'pairs/s':>10}{'vs official':>13}{'vs bare':>10}")
        for label, seconds in medians.items():
            print(f"{label:<18}{seconds:>10.2f}{args.pairs / seconds:>10.1f}{official / seconds:>12.2f}x"
                  f"{seconds / bare:>9.2f}x")
        for label, parts in breakdown.items():
            print(f"{label} breakdown (last repeat, s; backbone {execution[label]}): {parts}")
        print(f"targets (CPU): cold >= 1.1x official: {official / medians['ours cold']:.2f}x; "
              f"cold within 1.25x of bare: {medians['ours cold'] / bare:.2f}x; "
              f"warm >= 2x official: {official / medians['ours warm']:.2f}x")


if __name__ == "__main__":
    main()
