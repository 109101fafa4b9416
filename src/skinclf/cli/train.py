"""`skinclf train`: fit a model from a dataset folder into a run folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)


def train(
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Dataset folder (any format `data check` knows). Required unless --print-config.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Run folder to create, e.g. runs/lite0-default. Required unless --print-config.",
    ),
    preset: str | None = typer.Option(
        None, help="Recipe: default (if not given), paper or sample; --resume: the run's own."
    ),
    backbone: str | None = typer.Option(
        None, help="Backbone name (see `skinclf models list`); shortcut for model.backbone=..."
    ),
    weights: Path | None = typer.Option(
        None, help="Local backbone checkpoint instead of downloading (model.weights=...)."
    ),
    split: Path | None = typer.Option(
        None, help="Split file (image_id,split) from `skinclf data split`; default: a new one."
    ),
    config: Path | None = typer.Option(None, help="YAML file of settings on top of the preset."),
    cache_dir: Path | None = typer.Option(
        None, help="Where decoded images and features are cached (default ~/.cache/skinclf)."
    ),
    resume: bool = typer.Option(
        False,
        help="Continue an interrupted run from its last epoch, with the settings of its "
        "config.yaml (only --threads, --num-workers, --logger may change).",
    ),
    accelerator: str | None = typer.Option(None, help="cpu, gpu, auto (trainer.accelerator)."),
    devices: str | None = typer.Option(None, help="Number of devices or 'auto'."),
    strategy: str | None = typer.Option(None, help="auto, ddp, ddp_spawn, ... (Lightning)."),
    num_nodes: int | None = typer.Option(None, help="Nodes for multi-node DDP."),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: all cores)."),
    num_workers: int | None = typer.Option(None, help="DataLoader workers (default 0)."),
    logger: str | None = typer.Option(None, help="csv (always), plus tensorboard or wandb."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved settings as YAML and exit; no training."
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="Settings as dotted key=value, e.g. train.epochs=12 loss.name=focal."
    ),
) -> None:
    """Train a classifier: head on frozen features, then fine-tuning (see the preset).

    Writes config.yaml, provenance.json, split.csv, checkpoints/, metrics.csv, curves.png,
    val/test_predictions.csv and metrics.json into --out.

    Every setting, its default and each preset's value: docs/settings.md.

    Example: skinclf train --data data/ham10000 --out runs/default --preset default train.epochs=6
    """
    from skinclf.config import config_yaml, load_config, load_resume_config
    from skinclf.errors import ConfigError

    extra = list(overrides or [])
    for key, value in (
        ("model.backbone", backbone),
        ("model.weights", str(weights) if weights else None),
        ("trainer.accelerator", accelerator),
        ("trainer.devices", devices),
        ("trainer.strategy", strategy),
        ("trainer.num_nodes", num_nodes),
        ("trainer.threads", threads),
        ("trainer.num_workers", num_workers),
        ("trainer.logger", logger),
    ):
        if value is not None:
            extra.append(f"{key}={value}")
    if resume and out is not None and (out / "config.yaml").is_file():
        # the run's own settings, then --config and the overrides; refused if results change
        cfg = load_resume_config(out, preset, config, extra)
    else:
        cfg = load_config(preset or "default", config, extra)
    if print_config:
        typer.echo(config_yaml(cfg), nl=False)
        raise typer.Exit()
    for name, value, what in (("--data", data, "dataset"), ("--out", out, "run folder")):
        if value is None:
            raise ConfigError(
                f"Missing option {name}: give the {what} (only --print-config works without it)."
            )
    assert data is not None and out is not None

    from skinclf.train.run import fit

    result = fit(
        data,
        out,
        cfg,
        split_file=split,
        cache_dir=cache_dir,
        resume=resume,
        progress=progress,
        log=console.print,
    )
    test = result.metrics.get("test")
    if test:
        console.print(
            f"[bold green]done[/] in {result.seconds / 60:.1f} min: test balanced accuracy "
            f"{test['balanced_accuracy']:.3f}, accuracy {test['accuracy']:.3f} "
            f"(tta: {result.metrics.get('tta')}); run folder {out}"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
