"""The round-trip runner in process: run directory, failures per sample, resume, datasets."""

from __future__ import annotations

import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from runner_helpers import caption_ids_in_file, essentials, make_images, read_captions, run_cli

from unified_bench.datasets.base import Sample
from unified_bench.datasets.registry import load_eval_dataset
from unified_bench.core.errors import ConfigError, DatasetError
from unified_bench.metrics import MetricInfo, PairMetric, PairScore
from unified_bench.metrics import _BUILTIN as METRIC_TABLE
from unified_bench.metrics import MetricSpec
from unified_bench.results import load_results
from unified_bench.runner.eval import EvalConfig, run_eval
from unified_bench.core.protocol import OFFICIAL_CAPTION_PROMPT
from unified_bench.core.seeds import seed_for
from unified_bench.runner.store import CAPTIONS_FILE, CaptionRecord, RunStore


def config(data, out, **kw) -> EvalConfig:
    base = dict(model="mock", data=str(data), out=out, metrics=["toy-pair"], model_args={"size": 32}, progress=False)
    base.update(kw)
    return EvalConfig(**base)


def test_run_directory_and_record(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    out = tmp_path / "run"
    outcome = run_eval(config(data, out, seed=3, model_args={"size": 32}))
    assert outcome.ok and outcome.finished == 4
    rows = read_captions(out)
    assert sorted(rows) == ["img00", "img01", "img02", "img03"]
    for sid, row in rows.items():
        assert row["seed"] == seed_for(3, sid)
        assert row["image"] == f"images/{sid}.png" and (out / row["image"]).is_file()
        assert Path(row["reference"]) == (data / f"{sid}.png").resolve()
        assert "quadrant colours" in row["caption"]
    results = load_results(out)  # validates against the schema
    run = results["run"]
    assert run["model"]["name"] == "mock" and run["model"]["args"] == {"size": 32}
    assert run["model"]["adapter"]["describe"]["kind"] == "mock"
    assert run["protocol"]["caption_prompt"] == OFFICIAL_CAPTION_PROMPT
    assert run["protocol"]["generation"]["width"] == 32  # mock's native size, recorded
    # what ran, as the adapter reports it: the mock ignores the instruction and samples nothing
    executed = run["protocol_executed"]
    assert executed["caption"]["prompt"] == "" and executed["caption"]["do_sample"] is False
    assert executed["generation"]["width"] == 32 and executed["generation"]["num_inference_steps"] == 0
    assert executed["varied"] == [] and run["record_version"] == 2
    assert run["seeds"]["global_seed"] == 3 and run["seeds"]["per_sample"]["img01"] == seed_for(3, "img01")
    assert len(run["dataset"]["reference_sha256"]) == 4 and all(len(h) == 64 for h in run["dataset"]["reference_sha256"].values())
    assert run["timings"]["runner.total_s"] > 0 and "toy-pair.score_s" in run["timings"]
    assert set(results["similarities_by_model"]["toy-pair"]) == set(rows)
    assert not results["errors"]


def test_each_kind_of_adapter_failure_fails_only_its_sample(toys, tmp_path):
    data = make_images(tmp_path / "data", 8)
    out = tmp_path / "run"
    args = {
        "size": 32,
        "fail_caption_ids": ("img01",),
        "fail_generate_ids": ("img02",),
        "bad_type_ids": ("img03",),
        "empty_caption_ids": ("img04",),
        "nan_image_ids": ("img05",),
    }
    outcome = run_eval(config(data, out, model_args=args, batch_size=8))
    assert not outcome.ok
    stages = {e.sample_id: (e.stage, e.message) for e in outcome.errors}
    assert stages["img01"] == ("caption", "RuntimeError: mock caption failure (fail_caption_ids)")
    assert stages["img02"] == ("generate", "RuntimeError: mock generate failure (fail_generate_ids)")
    assert stages["img03"] == ("caption", "caption is int, expected str")
    assert stages["img04"] == ("caption", "empty caption")
    assert stages["img05"][0] == "generate" and "NaN" in stages["img05"][1]
    assert set(read_captions(out)) == {"img00", "img06", "img07"}  # batch-mates survived
    results = load_results(out)
    assert sorted((e["sample_id"], e["stage"]) for e in results["errors"]) == sorted(
        (sid, stage) for sid, (stage, _) in stages.items()
    )
    assert set(results["similarities_by_model"]["toy-pair"]) == {"img00", "img06", "img07"}


def test_unreadable_reference_is_a_per_sample_error(toys, tmp_path):
    data = make_images(tmp_path / "data", 2)
    (data / "img01.png").write_bytes(b"not a png")
    outcome = run_eval(config(data, tmp_path / "run"))
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [("img01", "reference")]
    assert outcome.finished == 1


@pytest.mark.slow
def test_exit_code_and_cli_flags(tmp_path):
    data = make_images(tmp_path / "data", 3)
    ok = run_cli(["eval", "--model", "mock", "--data", str(data), "--out", str(tmp_path / "a"), "--metrics", "toy-pair",
                  "--model-arg", "size=32", "--no-progress", "--batch-size", "2"], tmp_path)
    assert "toy-pair" in ok.stdout
    failed = run_cli(["eval", "--model", "mock", "--data", str(data), "--out", str(tmp_path / "b"), "--metrics", "toy-pair",
                      "--model-arg", "size=32", "--model-arg", "fail_generate_ids=img00", "--no-progress"], tmp_path, check_codes=(1,))
    assert "img00" in failed.stderr and "mock generate failure" in failed.stderr
    usage = run_cli(["eval", "--model", "mock", "--data", str(data), "--out", str(tmp_path / "a"), "--metrics", "toy-pair"], tmp_path, check_codes=(2,))
    assert "already holds a run; pass --resume" in usage.stderr and "Traceback" not in usage.stderr


def test_resume_skips_finished_samples_and_retries_failed_ones(toys, tmp_path):
    data = make_images(tmp_path / "data", 5)
    reference = tmp_path / "ref"
    run_eval(config(data, reference))
    out = tmp_path / "run"
    first = run_eval(config(data, out, limit=3, model_args={"size": 32, "fail_caption_ids": ("img01",)}))
    assert first.finished == 2 and [e.sample_id for e in first.errors] == ["img01"]
    images_before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    # a resumed run must use the same adapter settings...
    with pytest.raises(ConfigError, match="cannot resume, model_args differs"):
        run_eval(config(data, out, resume=True))
    # ...so the failure switch is a model arg; a different adapter instance fixes it
    from unified_bench.adapters.mock import MockAdapter, MockConfig

    second = run_eval(config(data, out, resume=True, model_args={"size": 32, "fail_caption_ids": ("img01",)}),
                      adapter=MockAdapter(MockConfig(size=32)))
    assert second.ok and second.finished == 5
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png") if p.name in images_before} == images_before
    assert sorted(caption_ids_in_file(out)) == sorted(set(caption_ids_in_file(out)))  # no duplicate rows
    assert essentials(out) == essentials(reference)
    assert not load_results(out)["errors"]  # the retried failure is gone


def test_resume_repairs_torn_line_and_redoes_image_without_line(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    reference = tmp_path / "ref"
    run_eval(config(data, reference))
    out = tmp_path / "run"
    run_eval(config(data, out, limit=2))
    # killed between rename and append: an image without its line
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out / "images" / "img02.png")
    # killed mid-append: a torn last line
    with open(out / CAPTIONS_FILE, "ab") as handle:
        handle.write(b'{"sample_id": "img03", "capt')
    state = RunStore(out).read_state()
    assert set(state.finished) == {"img00", "img01"}
    run_eval(config(data, out, resume=True))
    assert caption_ids_in_file(out) == ["img00", "img01", "img02", "img03"]
    assert essentials(out) == essentials(reference)


def test_line_without_image_is_not_finished(toys, tmp_path):
    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    run_eval(config(data, out))
    (out / "images" / "img01.png").unlink()
    assert set(RunStore(out).read_state().finished) == {"img00"}
    run_eval(config(data, out, resume=True))
    assert set(read_captions(out)) == {"img00", "img01"}
    assert sorted(s["sample_id"] for s in load_results(out)["samples"]) == ["img00", "img01"]


def test_store_reads_last_line_per_sample(tmp_path):
    store = RunStore(tmp_path)
    with store:
        for caption in ("old", "new"):
            store.finish(CaptionRecord("a", caption, 1, "images/a.png", "/r.png"), Image.new("RGB", (4, 4)))
    assert store.read_state().finished["a"].caption == "new"


class MetaProbe(PairMetric):
    """Scores 1 when the pair carries the dataset's ground truth, else an error."""

    name = "meta-probe"

    def __init__(self, checkpoint=None, device="cpu", dtype=None):
        pass

    @property
    def info(self):
        return MetricInfo(self.name, self.kind)

    def score_pairs(self, pairs):
        return [PairScore(1.0) if p.meta and p.meta.get("truth") == p.sample_id else PairScore(None, error=f"meta {p.meta}") for p in pairs]


def test_sample_meta_and_in_memory_images_reach_the_metric(toys, tmp_path, monkeypatch):
    monkeypatch.setitem(METRIC_TABLE, "meta-probe", MetricSpec("meta-probe", f"{__name__}:MetaProbe", None, "probe", offline=True))
    from unified_bench.datasets import registry as data_registry
    from unified_bench.datasets.base import EvalDataset

    def loader(options, cache_dir):
        samples = [Sample(f"s{i}", image=Image.new("RGB", (24, 24), (40 * i, 0, 0)), meta={"truth": f"s{i}"}) for i in range(3)]
        return EvalDataset("probe", samples, ("meta-probe",))

    monkeypatch.setattr(data_registry, "_load_probe", loader, raising=False)
    monkeypatch.setitem(data_registry.DATASETS, "probe", data_registry.DatasetSpec(
        "probe", "unified_bench.datasets.registry:_load_probe", "test", ("meta-probe",)))
    out = tmp_path / "run"
    outcome = run_eval(config("probe", out, metrics=None))
    assert outcome.ok, outcome.score.report.errors
    results = load_results(out)
    assert results["model_types"] == ["meta-probe"]  # the dataset's default metrics
    assert results["similarities_by_model"]["meta-probe"] == {"s0": 1.0, "s1": 1.0, "s2": 1.0}
    assert read_captions(out)["s1"]["reference"] == "refs/s1.png" and (out / "refs" / "s1.png").is_file()
    assert read_captions(out)["s1"]["meta"] == {"truth": "s1"}


def test_hf_dataset_saved_to_disk_and_imagefolder(toys, tmp_path):
    import datasets

    images = [Image.new("RGB", (20, 20), (i * 50, 10, 200)) for i in range(3)]
    table = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "image": images, "label": [0, 1, 2]})
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": table}).save_to_disk(str(saved))
    dataset = load_eval_dataset(str(saved))
    assert [s.sample_id for s in dataset.samples] == ["a", "b", "c"]
    assert dataset.samples[1].meta == {"label": 1}
    out = tmp_path / "run"
    assert run_eval(config(str(saved), out)).ok
    row = read_captions(out)["b"]
    assert row["reference"].startswith("refs/b.") and row["meta"] == {"label": 1}
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_eval_dataset(str(saved), {"split": "dev"})

    folder = make_images(tmp_path / "imagefolder" / "test", 2)
    (folder / "metadata.jsonl").write_text('{"file_name": "img00.png", "caption": "x"}\n{"file_name": "img01.png", "caption": "y"}\n')
    hub_style = load_eval_dataset("hf:" + str(tmp_path / "imagefolder"))
    assert len(hub_style) == 2 and hub_style.samples[0].meta == {"caption": "x"}


def test_folder_dataset_ids_and_errors(tmp_path):
    root = make_images(tmp_path / "d", 2)
    (root / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(root / "sub" / "x y.jpg")
    ids = [s.sample_id for s in load_eval_dataset(str(root)).samples]
    assert ids == ["img00", "img01", "sub_x_y"]
    Image.new("RGB", (8, 8)).save(root / "img00.jpg")
    with pytest.raises(DatasetError, match="same sample id"):
        load_eval_dataset(str(root))
    with pytest.raises(DatasetError, match="neither a dataset name"):
        load_eval_dataset(str(tmp_path / "missing"))


def _zip_server(directory: Path):
    handler = partial(SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_official_set_downloads_caches_and_fails_clearly_offline(tmp_path, monkeypatch):
    from unified_bench.datasets.official import load_manifest, official_dataset, pin_hashes
    import dataclasses

    monkeypatch.delenv("UNIFIED_BENCH_OFFICIAL_DIR", raising=False)
    images = make_images(tmp_path / "Image", 12, size=8)
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "Image.zip", "w") as archive:
        for path in sorted(images.glob("*.png")):
            archive.write(path, f"Image/{path.name}")
    server = _zip_server(served)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/Image.zip"
        manifest = dataclasses.replace(load_manifest(), url=url, count=12)  # the real one has 100
        dataset = official_dataset(cache_dir=tmp_path / "cache", manifest=manifest)
        assert len(dataset) == 12 and dataset.source["origin"] == "downloaded"
        assert dataset.default_metrics == ("clip", "dinov2", "dinov3", "longclip", "siglip")
        assert [s.sample_id for s in dataset.samples[:3]] == ["img00", "img01", "img02"]
        pinned = dataclasses.replace(manifest, files=pin_hashes(images))
        again = official_dataset(cache_dir=tmp_path / "cache", manifest=pinned)  # cached + hashes verified
        assert again.source["origin"] == "cache" and again.source["hashes_pinned"]
        wrong = dataclasses.replace(manifest, files={**pinned.files, "img07.png": "0" * 64})
        with pytest.raises(DatasetError, match="differ from the pinned hashes: img07.png"):
            official_dataset(cache_dir=tmp_path / "cache", manifest=wrong)
    finally:
        server.shutdown()
        server.server_close()  # the port now refuses connections, as offline
    closed = dataclasses.replace(manifest, url=url)  # server gone: as offline
    with pytest.raises(DatasetError, match="cannot download the official Unified-Bench images.*--data-arg dir=PATH"):
        official_dataset(cache_dir=tmp_path / "other", manifest=closed, timeout_s=5)
    real = load_manifest()
    assert real.url == "https://github.com/PKU-YuanGroup/UAE/releases/download/v1.0/Image.zip" and real.count == 100
    # a local copy is used as is (and checked against the real manifest's count)
    monkeypatch.setenv("UNIFIED_BENCH_OFFICIAL_DIR", str(images))
    assert len(official_dataset(manifest=manifest)) == 12
    with pytest.raises(DatasetError, match="found 3 images, the official set has 100"):
        load_eval_dataset("official", {"dir": str(make_images(tmp_path / "few", 3))})


@pytest.mark.slow
def test_acceptance_mock_on_offline_photos_with_effnet_and_ssim(tmp_path):
    """Acceptance 1: the real CLI, offline, on the packaged photo set, with offline metrics."""
    import subprocess
    import sys

    from runner_helpers import cli_env

    from unified_bench.datasets.photos import photo_set

    env = cli_env(tmp_path)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "unified_bench", "eval", "--model", "mock", "--data", "photos",
         "--metrics", "effnet,ssim", "--out", str(out), "--batch-size", "4", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = load_results(out)  # schema-valid
    count = len(photo_set())
    assert len(results["samples"]) == count and not results["errors"]
    assert set(results["statistics_by_model"]) == {"effnet", "ssim"}
    assert all(stats["valid_pairs"] == count for stats in results["statistics_by_model"].values())
    run = results["run"]
    assert run["dataset"]["name"] == "photos" and len(run["dataset"]["reference_sha256"]) == count
    assert (out / "scores.csv").is_file() and len(list((out / "images").glob("*.png"))) == count
    assert all((out / "refs" / f"{s['sample_id']}.png").is_file() for s in results["samples"])
