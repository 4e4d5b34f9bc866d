"""The paper preset, sized on the meta device: published parameter counts, LoRA counts, memory plan."""

from __future__ import annotations

import pytest

from uae_reference.accounting import GB, dry_run, vae_decode_activation_bytes
from uae_reference.presets import PAPER_DECODER_CONFIG, PAPER_ENCODER_CONFIG


@pytest.fixture(scope="module")
def report():
    return dry_run(gpus=8)


@pytest.mark.slow
def test_parameter_counts_match_the_published_sizes(report):
    by_name = {c.name.split(":")[0]: c for c in report.components}
    encoder, decoder = by_name["encoder"], by_name["decoder"]
    assert abs(encoder.deviation) < 0.02 and abs(decoder.deviation) < 0.02
    # exact values of these architectures (tied embeddings counted once)
    assert encoder.params == 3_754_622_976
    assert decoder.params == 8_056_627_520
    assert by_name["  of which vision tower"].params == 668_684_288


@pytest.mark.slow
def test_lora_counts_follow_r_times_in_plus_out(report):
    t = PAPER_ENCODER_CONFIG["text_config"]
    d, kv, f = t["hidden_size"], t["num_key_value_heads"] * (t["hidden_size"] // t["num_attention_heads"]), t["intermediate_size"]
    per_layer = 32 * (2 * (d + d) + 2 * (d + kv) + 3 * (d + f))  # q, o; k, v; gate, up, down
    assert report.lora["encoder"] == t["num_hidden_layers"] * per_layer == 59_867_136
    w, layers = PAPER_DECODER_CONFIG["caption_projection_dim"], PAPER_DECODER_CONFIG["num_layers"]
    # 8 attention projections per block, 7 in the last one (it has no text output)
    assert report.lora["decoder"] == (8 * layers - 1) * 32 * (w + w)


@pytest.mark.slow
def test_memory_plan_is_sane(report):
    plans = {p.stage: p for p in report.plans}
    assert set(plans) == {"decoder", "sft", "coldstart"}
    dec = plans["decoder"]
    # a full fine-tune of the 8B decoder: bf16 weights of everything + Adam shards
    assert dec.memory_terms["weights (bf16, replicated)"] == pytest.approx(
        2 * sum(c.params for c in report.components if not c.name.startswith("  ")), rel=1e-6
    )
    assert dec.trainable_total > 8e9 and plans["coldstart"].trainable_total < 0.2e9
    for plan in plans.values():
        assert 20 * GB < plan.total_bytes < 80 * GB, plan.stage
    # more GPUs shard the optimiser: the decoder stage needs less memory per GPU on 16 than on 8
    assert dry_run(gpus=16).plans[0].total_bytes < dec.total_bytes
    assert 1 * GB < vae_decode_activation_bytes(1024) < 8 * GB


@pytest.mark.slow
def test_dry_run_cli_prints_the_counts():
    from typer.testing import CliRunner

    from uae_reference.cli import app

    result = CliRunner().invoke(app, ["train", "--preset", "paper", "--dry-run"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "3,754,622,976" in result.output and "8,056,627,520" in result.output
    assert "59,867,136" in result.output and "fits an 80 GB GPU" in result.output
    bad = CliRunner().invoke(app, ["train", "--preset", "tiny", "--dry-run"])
    assert bad.exit_code != 0


def test_accelerate_configs_describe_the_plans():
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[1] / "uae_reference" / "configs"
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml")}
    assert configs["deepspeed_zero2"]["deepspeed_config"]["zero_stage"] == 2
    assert configs["deepspeed_zero2_multinode"]["num_machines"] == 2
    assert configs["deepspeed_zero2_multinode"]["num_processes"] == 16
    assert configs["fsdp"]["distributed_type"] == "FSDP"
    assert {"JointTransformerBlock", "Qwen2_5_VLDecoderLayer"} <= set(
        configs["fsdp"]["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(",")
    )
    assert configs["cpu_2proc"]["num_processes"] == 2
    for config in configs.values():
        assert config["mixed_precision"] in ("bf16", "no")
