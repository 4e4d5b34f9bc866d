"""Real run directories for the leaderboard tests and benchmark.

Each run has real PNG files on disk (shared references, per-run reconstructions), a
captions.jsonl, and a results.json + scores.csv written through the real
``ScoreReport`` -> ``write_report`` path. Scores are synthetic but deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unified_bench.core.images import file_sha256
from unified_bench.core.protocol import OFFICIAL_CAPTION_PROMPT, as_executed
from unified_bench.core.provenance import new_run_record
from unified_bench.results import MetricScores, SampleError, SampleRecord, ScoreReport, write_report

REPO = Path(__file__).resolve().parents[1]
# The reported row only: stored calibration runs under leaderboard/entries/ would change the counts.
REPORTED_ENTRIES = REPO / "leaderboard" / "entries" / "uae-reported-arxiv-2509.09666.json"
PAYLOAD_NAME = 'evil <script>window.__pwned=1;document.title="pwned"</script>'
PAYLOAD_CAPTION = "<img src=x onerror=\"window.__pwned=2;document.title='pwned'\"> a cat"

PAPER = ("clip", "dinov2", "dinov3", "longclip")
EXTENDED = PAPER + ("siglip",)
SHAPES = ("effnet", "ssim", "shapes-attr")
ATTRIBUTES = ("shape", "color", "size", "position", "count")


def paper_protocol(**changes: Any) -> dict[str, Any]:
    """The paper protocol as the runner records it, with optional dotted overrides."""
    protocol: dict[str, Any] = {
        "caption_prompt": OFFICIAL_CAPTION_PROMPT,
        "caption": {"do_sample": True, "temperature": 0.7, "max_new_tokens": 512},
        "generation": {"width": 1024, "height": 1024, "num_inference_steps": 40, "guidance_scale": 5.0},
        "source": "test",
        "name": "uae-paper",
    }
    for dotted, value in changes.items():
        node = protocol
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return protocol


def write_references(folder: Path, count: int, size: int = 32, seed: int = 0) -> list[Path]:
    """``count`` small, distinct PNG images (smooth gradients plus a square)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size]
    for index in range(count):
        base = rng.integers(0, 256, size=3)
        image = np.empty((size, size, 3), dtype=np.uint8)
        for c in range(3):
            image[..., c] = (base[c] + (xx * (c + 1) + yy * (index % 5 + 1)) * 3) % 256
        x0, y0 = rng.integers(0, size // 2, size=2)
        image[y0 : y0 + size // 4, x0 : x0 + size // 4] = rng.integers(0, 256, size=3)
        path = folder / f"{index:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def make_run(
    out: Path,
    refs: Sequence[Path],
    *,
    model: str,
    run_id: str,
    metrics: Sequence[str] = PAPER,
    quality: float = 0.7,
    seed: int = 0,
    protocol: Mapping[str, Any] | None = None,
    executed: Mapping[str, Any] | None | str = "as requested",
    dataset: str = "official",
    captions: Mapping[str, str] | None = None,
    model_args: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    missing: Mapping[str, Sequence[int]] | None = None,
    copy_refs: bool = False,
) -> Path:
    """Write a run directory whose scores are ``quality`` +- noise for every metric.

    ``missing`` maps a metric to sample indices that failed (None scores plus an error).
    ``copy_refs`` writes the references into ``out/refs`` too (as the runner does for
    in-memory datasets). ``executed`` is the protocol the adapter reported running (default:
    what was requested; None: a version-1 record, which predates executed settings).
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    samples: list[SampleRecord] = []
    caption_lines = []
    for index, ref in enumerate(refs):
        sample_id = ref.stem
        pixels = np.asarray(Image.open(ref).convert("RGB"), dtype=np.int16)
        noise = rng.integers(-40, 41, size=pixels.shape) * (1.0 - quality)
        recon = np.clip(pixels + noise, 0, 255).astype(np.uint8)
        recon_path = out / "images" / f"{sample_id}.png"
        Image.fromarray(recon).save(recon_path)
        reference = ref
        if copy_refs:
            (out / "refs").mkdir(exist_ok=True)
            reference = out / "refs" / ref.name
            reference.write_bytes(ref.read_bytes())
        samples.append(SampleRecord(sample_id, str(reference), str(recon_path), file_sha256(reference)))
        words = 5 + (index * 7 + seed) % 40
        caption = (captions or {}).get(sample_id) or " ".join(["word"] * words)
        caption_lines.append(json.dumps({"sample_id": sample_id, "caption": caption, "seed": 1000 + index}))
    (out / "captions.jsonl").write_text("\n".join(caption_lines) + "\n", encoding="utf-8")

    errors: list[SampleError] = []
    scores: list[MetricScores] = []
    for metric in metrics:
        values: list[float | None] = [float(np.clip(quality + rng.normal(0, 0.05), 0, 1)) for _ in refs]
        for index in (missing or {}).get(metric, ()):
            values[index] = None
            errors.append(SampleError(samples[index].sample_id, "metric", "synthetic failure", metric))
        subs = {}
        if metric == "shapes-attr":
            subs = {
                a: [None if v is None else float(np.clip(v + rng.normal(0, 0.05), 0, 1)) for v in values]
                for a in ATTRIBUTES
            }
        scores.append(MetricScores(metric, "cosine" if metric != "shapes-attr" else "f1", values, subs))

    run = new_run_record(command=f"unified-bench eval --model {model} --out {out.name}", device="cpu")
    run.update(
        run_id=run_id,
        created="2026-01-02T03:04:05+00:00",
        git_commit="0" * 40,
        metrics=[{"name": m, "kind": "embedding", "checkpoint": f"test/{m}", "revision": "abc123"} for m in metrics],
        model={"name": model, "args": dict(model_args or {}), "adapter": {"name": "synthetic"}},
        protocol=dict(protocol) if protocol is not None else paper_protocol(),
        dataset={"name": dataset},
        seeds={"global_seed": seed},
    )
    if executed == "as requested":
        run.update(record_version=2, protocol_executed=as_executed(run["protocol"]))
    elif executed is not None:
        run.update(record_version=2, protocol_executed=dict(executed))
    # keep the record independent of the machine so two builders make the same site
    run["package_versions"] = {"unified-bench": "0.1.0"}
    run["hardware"] = {"machine": "test"}
    if training is not None:
        run["training"] = dict(training)
    report = ScoreReport(samples=samples, metrics=scores, errors=errors, run=run)
    write_report(report, out)
    return out


def make_world(root: Path) -> dict[str, Any]:
    """The tests' leaderboard: runs on every track, an injection payload, the reported entry.

    Default order on Unified-Bench is by score (UAE reported, zeta, delta, beta, evil, mu);
    by model name it differs, which the browser test relies on.
    """
    from unified_bench.leaderboard import build_site

    refs = write_references(root / "refs", 6)
    other_refs = write_references(root / "other-refs", 6, seed=9)
    shape_refs = write_references(root / "shape-refs", 5, seed=3)
    runs = root / "runs"
    make_run(
        runs / "zeta",
        refs,
        model="zeta",
        run_id="run-zeta",
        metrics=EXTENDED,
        quality=0.85,
        seed=1,
        model_args={"temperature": 0.7, "note": "<b>bold?</b>"},
    )
    make_run(
        runs / "beta",
        refs,
        model="beta",
        run_id="run-beta",
        metrics=PAPER,
        quality=0.6,
        seed=2,
        protocol=paper_protocol(**{"caption.temperature": 1.0}),
        missing={"clip": [1]},
    )
    make_run(runs / "mu", refs, model="mu", run_id="run-mu", metrics=("clip", "dinov2"), quality=0.9, seed=3)
    make_run(runs / "delta", other_refs, model="delta", run_id="run-delta", metrics=PAPER, quality=0.7, seed=4)
    make_run(
        runs / "evil",
        refs,
        model=PAYLOAD_NAME,
        run_id="run-evil",
        metrics=PAPER,
        quality=0.5,
        seed=5,
        captions={"000": PAYLOAD_CAPTION},
        model_args={"prompt": "<script>window.__pwned=3</script>"},
    )
    curve = runs / "shapes-a" / "train" / "curve.csv"
    curve.parent.mkdir(parents=True)
    curve.write_text("step,reward,caption_length\n0,0.10,12\n10,0.25,30\n20,nan,41\n30,0.40,55\n", encoding="utf-8")
    make_run(
        runs / "shapes-a",
        shape_refs,
        model="shapes-a",
        run_id="run-shapes-a",
        metrics=SHAPES,
        quality=0.8,
        seed=6,
        dataset="shapes",
        training={"trainer": "uae_reference", "curve_csv": "train/curve.csv"},
        copy_refs=True,
    )
    make_run(
        runs / "shapes-b",
        shape_refs,
        model="shapes-b",
        run_id="run-shapes-b",
        metrics=SHAPES,
        quality=0.5,
        seed=7,
        dataset="shapes",
        training={"curve": {"step": [0, 1, 2], "reward": [0.1, None, 0.3], "caption_length": [5, 6, 7]}},
    )
    site = root / "site"
    result = build_site([runs], [REPORTED_ENTRIES], site)
    return {"root": root, "runs": runs, "site": site, "result": result, "refs": refs}


#: every reported entry shipped under leaderboard/entries (the published record), as files
RECORD_ENTRIES = sorted(p for p in REPORTED_ENTRIES.parent.glob("*.json") if "reported" in json.loads(p.read_text(encoding="utf-8")))


def make_record_world(root: Path) -> dict[str, Any]:
    """The published record beside a reproduced run: a run made with the ``janus-pro-7b`` preset
    (which targets two of the record's rows) and an unrelated run, with every shipped reported entry."""
    from unified_bench.leaderboard import build_site

    refs = write_references(root / "refs", 6)
    runs = root / "runs"
    make_run(runs / "janus", refs, model="janus-pro-7b", run_id="run-janus-pro-7b", metrics=PAPER, quality=0.82, seed=11)
    make_run(runs / "other", refs, model="mock", run_id="run-mock", metrics=PAPER, quality=0.55, seed=12)
    site = root / "site"
    result = build_site([runs], RECORD_ENTRIES, site)
    return {"root": root, "runs": runs, "site": site, "result": result}


def make_verified_run(out: Path, refs: Sequence[Path], **kwargs: Any) -> str:
    """``make_run`` on the paper protocol, recorded as the Unified-Bench tracks verify it: the
    registry's default checkpoints and every reference's SHA-256. Returns the dataset fingerprint,
    which a test pins (``tracks.official_pins``) for the run to be verified."""
    from unified_bench.metrics import get_spec
    from unified_bench.results.record import dataset_fingerprint

    make_run(out, refs, **kwargs)
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for metric in data["run"]["metrics"]:
        metric["checkpoint"] = get_spec(metric["name"]).default_checkpoint
    hashes = {s["sample_id"]: s["reference_sha256"] for s in data["samples"]}
    data["run"]["dataset"]["reference_sha256"] = hashes
    (out / "results.json").write_text(json.dumps(data), encoding="utf-8")
    return dataset_fingerprint(hashes)


# --- trips and cycles: real runs of the runner on Shapes ------------------------------------------

#: the sample whose last-cycle drawing make_trip_runs prunes from the long oracle's image-trip run
PRUNED_SAMPLE = "shapes-test-00001"
TRIP_METRICS = ("shapes-attr", "ssim")
#: run directory -> (model, adapter args, display label): the bundled Shapes oracle with its long
#: captions (keeps every attribute) and with its short ones (loses sizes and positions, so the
#: object F1 is 0 and the drawings drift), one model each, as its args differ
TRIP_MODELS = {
    "long": ("shapes-oracle", {}, None),
    "short": ("shapes-oracle", {"detail": "short"}, "shapes-oracle (short captions)"),
}


def make_trip_runs(runs: Path, *, limit: int = 6, cycles: int = 3) -> dict[str, Path]:
    """The real runner on the Shapes track with the bundled offline oracle, long and short
    captions, each on the image trip and on the text trip, ``cycles`` cycles each: run
    directories ``<long|short>-<image|text>``.

    Then, as an entry kept in a repository may do, the long oracle's image-trip run drops its last
    cycle's drawing of ``PRUNED_SAMPLE``, and the short text-trip run's cycle-2 caption of the first
    sample is replaced by an injection payload (captions are untrusted)."""
    from unified_bench.runner.eval import EvalConfig, run_eval
    from unified_bench.runner.store import cycle_dir

    out = {}
    for key, (model, args, label) in TRIP_MODELS.items():
        for trip in ("image", "text"):
            name = f"{key}-{trip}"
            config = EvalConfig(model=model, model_args=dict(args), data="shapes", out=runs / name, metrics=list(TRIP_METRICS),
                                limit=limit, batch_size=limit, trip=trip, cycles=cycles, progress=False, name=label)
            assert run_eval(config).ok, name
            out[name] = runs / name
    (cycle_dir(out["long-image"], cycles) / "images" / f"{PRUNED_SAMPLE}.png").unlink()
    captions = cycle_dir(out["short-text"], 2) / "captions.jsonl"
    lines = captions.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "caption": PAYLOAD_CAPTION})
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
