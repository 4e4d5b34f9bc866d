"""The round-trip commands: ``eval``, ``merge``, ``serve``, ``models``.

Each parses its flags and calls one library function (:func:`run_eval`,
:func:`merge_shards`, :func:`serve`, :func:`list_adapters`). :func:`register` attaches them
to the app; heavy modules are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from unified_bench.cli.common import (
    DEVICE_PREPROCESSING_HELP,
    FUSE_HELP,
    SCORING_PANEL,
    DevicePreprocessing,
    console,
    err_console,
    check_name,
    finish,
    parse_key_values,
    parse_size,
    scoring_config,
)


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``merge``, ``serve`` and ``models`` to ``app``."""

    @app.command("eval")
    def eval_cmd(
        model: Annotated[str, typer.Option("--model", help="Adapter name, alias or preset (see `unified-bench models`), or an adapter class: path/to/file.py:Class or package.module:Class.")],
        data: Annotated[str, typer.Option("--data", help="official, photos, shapes, prompts, prompts:FILE (.txt or .jsonl), hf:NAME, or a folder of images.")],
        out: Annotated[Path, typer.Option("--out", help="Run directory (images/, captions.jsonl, results.json).")],
        model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", help="KEY=VALUE adapter argument (repeatable).")] = None,
        data_arg: Annotated[Optional[list[str]], typer.Option("--data-arg", help="KEY=VALUE dataset option, e.g. split=test (repeatable).")] = None,
        metrics: Annotated[Optional[str], typer.Option("--metrics", help="Comma-separated metrics (default: the dataset's).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Global seed; each sample's seed derives from it and the sample id.")] = 0,
        limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N samples (in id order).")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per adapter call (capped by the adapter).")] = 1,
        shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: run only shard I of N (no process group); merge later.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue a run in --out, skipping finished samples.")] = False,
        size: Annotated[Optional[str], typer.Option("--size", help="Generation size N or WxH (default: the adapter's native, else 1024).")] = None,
        device: Annotated[str, typer.Option("--device", help="Device for the metrics.", rich_help_panel=SCORING_PANEL)] = "cpu",
        dtype: Annotated[Optional[str], typer.Option("--dtype", help="Metric dtype.", rich_help_panel=SCORING_PANEL)] = None,
        metric_batch_size: Annotated[Optional[int], typer.Option("--metric-batch-size", min=1, rich_help_panel=SCORING_PANEL, help="Images per metric forward (default: 8 on CPU, 64 on CUDA).")] = None,
        checkpoint: Annotated[Optional[list[str]], typer.Option("--checkpoint", help="METRIC=PATH_OR_HUB_ID (repeatable).", rich_help_panel=SCORING_PANEL)] = None,
        cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache for datasets and reference embeddings.", rich_help_panel=SCORING_PANEL)] = None,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the reference-embedding cache.", rich_help_panel=SCORING_PANEL)] = False,
        fuse: Annotated[Optional[bool], typer.Option("--fuse/--no-fuse", help=FUSE_HELP, rich_help_panel=SCORING_PANEL)] = None,
        device_preprocessing: Annotated[Optional[DevicePreprocessing], typer.Option("--device-preprocessing", help=DEVICE_PREPROCESSING_HELP, rich_help_panel=SCORING_PANEL)] = None,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
        name: Annotated[Optional[str], typer.Option("--name", help="Display label stored in the run record and shown on the leaderboard (default: the model's name).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve adapter, dataset, metric weights, devices and shards, print the plan and exit (0, or 2 with the fix); loads no model and writes nothing.")] = False,
        captions_from: Annotated[Optional[Path], typer.Option("--captions-from", help="RUN_DIR: take each sample's caption from that earlier run instead of calling a captioner (compare generators on one captioner's captions); recorded in the run.")] = None,
        trip: Annotated[str, typer.Option("--trip", help="image: image -> caption -> image (the paper's protocol); text: prompt -> image -> caption, the final caption scored against the prompt.")] = "image",
        cycles: Annotated[int, typer.Option("--cycles", min=1, help="Chain the round trip N times (cycle k starts from cycle k-1's output); cycle 1 is the plain run, later cycles go to OUT/cycles/<k>/. Extend a finished run with a larger N and --resume.")] = 1,
    ) -> None:
        """Round-trip a model over a dataset (caption, regenerate), then score the run."""
        from unified_bench.adapters.registry import parse_model_args
        from unified_bench.core.errors import ConfigError
        from unified_bench.metrics import parse_metric_list
        from unified_bench.core.provenance import command_line
        from unified_bench.runner.config import check_trip
        from unified_bench.runner.distributed import parse_shard
        from unified_bench.runner.eval import EvalConfig, run_eval

        check_trip(trip, cycles, captions_from)
        checkpoints = parse_key_values(checkpoint, "--checkpoint")
        names = parse_metric_list(metrics) if metrics else None
        if names is not None:
            unknown = sorted(set(checkpoints) - set(names))
            if unknown:
                raise ConfigError(f"--checkpoint names metrics that are not in --metrics: {', '.join(unknown)}")
        config = EvalConfig(
            model=model,
            data=data,
            out=out,
            model_args=parse_model_args(model_arg),
            data_args=parse_key_values(data_arg, "--data-arg"),
            metrics=names,
            seed=seed,
            limit=limit,
            batch_size=batch_size,
            shard=parse_shard(shard) if shard else None,
            resume=resume,
            size=parse_size(size),
            scoring=scoring_config(
                (),
                checkpoints=checkpoints,
                device=device,
                dtype=dtype,
                batch_size=metric_batch_size,
                cache_dir=cache_dir,
                no_cache=no_cache,
                fuse=fuse,
                device_preprocessing=device_preprocessing,
            ),
            progress=not no_progress,
            command=command_line(),
            name=check_name(name),
            captions_from=captions_from,
            trip=trip,
            cycles=cycles,
        )
        if dry_run:
            from unified_bench.runner.plan import plan_eval

            print_plan(plan_eval(config))
            return
        outcome = run_eval(config, console=err_console)
        finish(outcome)

    @app.command("doctor", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def doctor_cmd(ctx: typer.Context) -> None:
        """`eval ... --dry-run` under its own name (--out optional): check a run before spending GPU hours."""
        args = list(ctx.args)
        if "--out" not in args and not any(a.startswith("--out=") for a in args):
            args += ["--out", "(dry run)"]  # never written: the dry run writes nothing
        app(["eval", *args, "--dry-run"], standalone_mode=False)

    @app.command("merge")
    def merge_cmd(
        shard_dirs: Annotated[list[Path], typer.Argument(help="Shard run directories (from --shard I/N or a launch).")],
        out: Annotated[Path, typer.Option("--out", help="Merged run directory.")],
        metrics: Annotated[Optional[str], typer.Option("--metrics", help="Comma-separated metrics (default: the dataset's).")] = None,
        device: Annotated[str, typer.Option("--device")] = "cpu",
        dtype: Annotated[Optional[str], typer.Option("--dtype")] = None,
        metric_batch_size: Annotated[Optional[int], typer.Option("--metric-batch-size", min=1, help="Images per metric forward (default: 8 on CPU, 64 on CUDA).")] = None,
        checkpoint: Annotated[Optional[list[str]], typer.Option("--checkpoint", help="METRIC=PATH_OR_HUB_ID (repeatable).")] = None,
        cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir")] = None,
        no_cache: Annotated[bool, typer.Option("--no-cache")] = False,
        fuse: Annotated[Optional[bool], typer.Option("--fuse/--no-fuse", help=FUSE_HELP)] = None,
        device_preprocessing: Annotated[Optional[DevicePreprocessing], typer.Option("--device-preprocessing", help=DEVICE_PREPROCESSING_HELP)] = None,
        no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    ) -> None:
        """Merge shard directories of one run (dedupe, check same protocol/seed) and score."""
        from unified_bench.metrics import parse_metric_list
        from unified_bench.core.provenance import command_line
        from unified_bench.runner.eval import EvalConfig
        from unified_bench.runner.merge import merge_shards

        config = EvalConfig(
            model="(from shards)",
            data="(from shards)",
            out=out,
            metrics=parse_metric_list(metrics) if metrics else None,
            scoring=scoring_config(
                (),
                checkpoints=parse_key_values(checkpoint, "--checkpoint"),
                device=device,
                dtype=dtype,
                batch_size=metric_batch_size,
                cache_dir=cache_dir,
                no_cache=no_cache,
                fuse=fuse,
                device_preprocessing=device_preprocessing,
            ),
            progress=not no_progress,
            command=command_line(),
        )
        outcome = merge_shards(shard_dirs, out, config, console=err_console)
        finish(outcome)

    @app.command("serve")
    def serve_cmd(
        model: Annotated[str, typer.Option("--model", help="Any registered adapter or preset.")],
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0 picks a free port (printed).")] = 8765,
        host: Annotated[str, typer.Option("--host", help="Interface to bind; keep 127.0.0.1 unless behind a firewall.")] = "127.0.0.1",
        model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", help="KEY=VALUE adapter argument (repeatable).")] = None,
    ) -> None:
        """Serve a model over the remote-adapter HTTP protocol (docs/remote-protocol.md)."""
        from unified_bench.adapters.registry import build, parse_model_args
        from unified_bench.adapters.serve import serve

        built = build(model, parse_model_args(model_arg))
        serve(built, host=host, port=port)

    @app.command("models")
    def models_cmd(
        name: Annotated[Optional[str], typer.Argument(help="Show one model's (or preset's) arguments.")] = None,
    ) -> None:
        """List adapters and presets, with what each needs installed."""
        from rich.table import Table

        from unified_bench.adapters.registry import list_adapters, list_presets, need_satisfied, plugin_problems, unavailable

        if name is not None:
            _print_arguments(name)
            return

        table = Table(title="models")
        table.add_column("name")
        table.add_column("source")
        table.add_column("needs")
        table.add_column("description")
        # plugins whose package is gone, or whose entry point conflicts, get one line each
        # below the table instead of a row (nothing is imported to find out)
        broken = [p.line() for p in plugin_problems()]
        for spec in list_adapters():
            why = unavailable(spec) if spec.source != "builtin" else None
            if why is not None:
                broken.append(f"{spec.name} ({spec.source}, {spec.target}): {why}")
                continue
            needs = []
            for need in spec.needs:
                ok = need_satisfied(need)
                mark = {True: "[green]ok[/]", False: "[red]missing[/]", None: ""}[ok]
                needs.append(f"{need} {mark}".strip())
            aliases = f" (alias: {', '.join(spec.aliases)})" if spec.aliases else ""
            table.add_row(spec.name + aliases, spec.source, "\n".join(needs) or "-", spec.description)
        console.print(table)
        presets = Table(title="presets")
        presets.add_column("name")
        presets.add_column("adapter")
        presets.add_column("arguments")
        presets.add_column("description")
        presets.add_column("targets (published rows)")
        for preset in list_presets():
            args = " ".join(f"{k}={v}" for k, v in preset.args.items()) or "(defaults)"
            targets = "\n".join(target.row for target in preset.targets) or "-"
            presets.add_row(preset.name, preset.adapter, args, preset.description, targets)
        console.print(presets)
        console.print(
            "A preset's targets are reported rows under leaderboard/entries; `unified-bench models PRESET` says how "
            "the preset departs from what the source ran. Reproduce one with: unified-bench eval --model PRESET --data official --out DIR",
            highlight=False,
            soft_wrap=True,
        )
        from rich.markup import escape

        for line in broken:
            console.print(f"[yellow]not available:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _print_arguments(name: str) -> None:
    """``unified-bench models NAME``: the --model-arg keys, defaults (preset values) and help."""
    from rich.table import Table

    from unified_bench.adapters.registry import declared_args, load_adapter_class, resolve

    spec, preset_args = resolve(name)
    cls = load_adapter_class(spec)  # imports the adapter module, not its weights
    from rich.text import Text

    # a Text title: a path:Class name is shown as typed (no emoji codes, no markup)
    table = Table(title=Text(f"{name}: --model-arg KEY=VALUE ({spec.target})"))
    table.add_column("argument")
    table.add_column("default")
    table.add_column("help")
    for arg in declared_args(cls):
        default = preset_args.get(arg.name, "(required)" if arg.required else arg.default)
        table.add_row(arg.name, repr(default), arg.help)
    console.print(table)
    from unified_bench.adapters.registry import preset_targets

    for target in preset_targets(name):
        console.print(f"targets {target.row} [{target.entry}]", highlight=False, soft_wrap=True, markup=False)
        if target.note:
            console.print(f"  {target.note}", highlight=False, soft_wrap=True, markup=False)




def print_plan(plan) -> None:  # noqa: ANN001 (an EvalPlan; imported lazily)
    """The dry run's summary: one table of what ``eval`` would do."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="eval plan (dry run: nothing loaded, nothing written)")
    table.add_column("item")
    table.add_column("value")
    args = " ".join(f"{k}={v}" for k, v in plan.adapter_args.items()) or "(defaults)"
    table.add_row("adapter", escape(f"{plan.model} -> {plan.adapter}  {args}"))
    table.add_row("protocol", escape(plan.protocol))
    table.add_row("trip", escape(f"{plan.trip}, {plan.cycles} cycle(s)" + (f" (cycles 2..{plan.cycles} in OUT/cycles/<k>/)" if plan.cycles > 1 else "")))
    table.add_row("dataset", escape(f"{plan.dataset}: {plan.samples} samples at {plan.dataset_location}"))
    table.add_row("fingerprint", escape(f"{plan.fingerprint[:12] if plan.fingerprint else '-'}: {plan.fingerprint_status}"))
    layout = "/".join(str(n) for n in plan.layout)
    table.add_row("shards", escape(f"{plan.shards_planned}; samples per shard {layout}; this command runs {sum(s.samples for s in plan.shards)}"))
    table.add_row(
        "adapter calls",
        f"{plan.caption_calls} caption + {plan.caption_calls} generate (batch {plan.adapter_batch})"
        + (f", over {plan.cycles} cycles" if plan.cycles > 1 else ""),
    )
    for metric in plan.metrics:
        table.add_row(f"metric {metric.name}", escape(f"{metric.checkpoint or '-'} @ {metric.location}; {metric.forwards} forwards"))
    table.add_row("metric forwards", f"{plan.metric_forwards} (batch {plan.metric_batch} on {plan.metric_device})")
    table.add_row("devices", f"cuda: {'yes, ' + str(plan.gpus) + ' GPU(s)' if plan.cuda else 'no'}")
    for note in plan.notes:
        table.add_row("note", escape(note))
    console.print(table)
