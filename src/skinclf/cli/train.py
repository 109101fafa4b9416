"""`skinclf train`: fit a model from a dataset folder into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(soft_wrap=True)

# The options of `skinclf train` (defaults in the signature of `train`).
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Dataset folder (any format `data check` knows). Required unless --print-config.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Run folder to create, e.g. runs/lite0-default. Required unless --print-config.",
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(help="Recipe: default (if not given), paper or sample; --resume: the run's own."),
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(help="Backbone name (see `skinclf models list`); shortcut for model.backbone=..."),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(help="Local backbone checkpoint instead of downloading (model.weights=...)."),
]
SplitOpt = Annotated[
    Path | None,
    typer.Option(help="Split file (image_id,split) from `skinclf data split`; default: a new one."),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML file of settings on top of the preset.")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(help="Where decoded images and features are cached (default ~/.cache/skinclf)."),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        help="Continue an interrupted run from its last epoch, with the settings of its "
        "config.yaml (only --threads, --num-workers, --logger may change)."
    ),
]
AcceleratorOpt = Annotated[str | None, typer.Option(help="cpu, gpu, auto (trainer.accelerator).")]
DevicesOpt = Annotated[str | None, typer.Option(help="Number of devices or 'auto'.")]
StrategyOpt = Annotated[str | None, typer.Option(help="auto, ddp, ddp_spawn, ... (Lightning).")]
NumNodesOpt = Annotated[int | None, typer.Option(help="Nodes for multi-node DDP.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores).")]
NumWorkersOpt = Annotated[int | None, typer.Option(help="DataLoader workers (default 0).")]
LoggerOpt = Annotated[str | None, typer.Option(help="csv (always), plus tensorboard or wandb.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]
PrintConfigOpt = Annotated[
    bool,
    typer.Option(
        "--print-config", help="Print the resolved settings as YAML and exit; no training."
    ),
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Settings as dotted key=value, e.g. train.epochs=12 loss.name=focal."),
]


def train(
    data: DataOpt = None,
    out: OutOpt = None,
    preset: PresetOpt = None,
    backbone: BackboneOpt = None,
    weights: WeightsOpt = None,
    split: SplitOpt = None,
    config: ConfigOpt = None,
    cache_dir: CacheDirOpt = None,
    resume: ResumeOpt = False,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    strategy: StrategyOpt = None,
    num_nodes: NumNodesOpt = None,
    threads: ThreadsOpt = None,
    num_workers: NumWorkersOpt = None,
    logger: LoggerOpt = None,
    progress: ProgressOpt = True,
    print_config: PrintConfigOpt = False,
    overrides: OverridesArg = None,
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
    if data is None or out is None:
        name, what = ("--data", "dataset") if data is None else ("--out", "run folder")
        raise ConfigError(
            f"Missing option {name}: give the {what} (only --print-config works without it)."
        )

    result = _fit(data, out, cfg, split, cache_dir, resume, progress)
    test = result.metrics.get("test")
    if test:
        console.print(
            f"[bold green]done[/] in {result.seconds / 60:.1f} min: test balanced accuracy "
            f"{test['balanced_accuracy']:.3f}, accuracy {test['accuracy']:.3f} "
            f"(tta: {result.metrics.get('tta')}); run folder {out}"
        )


def _fit(data, out, cfg, split, cache_dir, resume, progress):  # -> TrainResult
    """`fit`, after checking --out; Ctrl-C says how to continue."""
    from skinclf.outputs import check_output
    from skinclf.train.training import FitOptions, fit

    check_output(out)  # one sentence now, not a traceback after stage 1
    try:
        return fit(
            data,
            out,
            cfg,
            cache_dir=cache_dir,
            resume=resume,
            progress=progress,
            log=console.print,
            options=FitOptions(split_file=split),
        )
    except (KeyboardInterrupt, SystemExit):  # (Lightning turns Ctrl-C into sys.exit(1))
        console.print(
            f"[yellow]interrupted[/]: run the same command with --resume to continue {out} "
            "from its last checkpoint."
        )
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("train")(train)
