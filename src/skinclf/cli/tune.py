"""`skinclf tune`: Optuna search on cached frozen features for validation balanced accuracy."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)


def tune(
    data: Path = typer.Option(..., "--data", help="Dataset folder (any format)."),
    out: Path = typer.Option(..., "--out", help="Study folder: study.db, trials.csv, best.yaml."),
    preset: str = typer.Option("default", help="Settings that are not searched come from here."),
    trials: int = typer.Option(30, help="Total trials in the study (an existing study resumes)."),
    split: Path | None = typer.Option(None, help="Split file; default: a new grouped split."),
    config: Path | None = typer.Option(None, help="YAML settings on top of the preset."),
    cache_dir: Path | None = typer.Option(None, help="Decode/feature cache folder."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    stage: str = typer.Option(
        "head",
        help="head: stage-1 settings on cached features (seconds per trial); finetune: whole "
        "training runs, pruned per epoch (minutes per trial with train.frozen_cache).",
    ),
    overrides: list[str] | None = typer.Argument(None, help="Fixed settings as key=value."),
) -> None:
    """Search training settings with Optuna (TPE) for validation balanced accuracy.

    --stage head (default) searches loss, sampler, head and stage-1 optimiser: each trial
    trains the head on cached frozen-backbone features, seconds on a CPU. --stage finetune
    searches the fine-tuning optimiser, regularisation and mixing: each trial is a whole
    training run in OUT/trials/NNNN (cached features and activations reused), stopped early
    when it trails the median of earlier trials. The test split is never used. Interrupt and
    rerun to continue. Then train with the winner: skinclf train --config OUT/best.yaml ...

    Example: skinclf tune --data D --out tune/ft --stage finetune --trials 12 train.epochs=6
    """
    from skinclf.config import load_config
    from skinclf.tune import SEARCH_SPACE_HELP
    from skinclf.tune import tune as run_tune

    cfg = load_config(preset, config, list(overrides or []))
    if stage in SEARCH_SPACE_HELP:  # an unknown stage: tune's one-line error below
        console.print(f"searching {SEARCH_SPACE_HELP[stage]}")
    study = run_tune(
        data, out, cfg, trials, split, cache_dir, progress, log=console.print, stage=stage
    )
    console.print(
        f"[bold green]best[/] val balanced accuracy {study.best_value:.4f} after "
        f"{len(study.trials)} trials: {study.best_params}\nwrote {out / 'best.yaml'}"
    )


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
