"""`skinclf tune`: Optuna search for validation balanced accuracy, and `--show` of a study."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)


def tune(
    data: Path | None = typer.Option(None, "--data", help="Dataset folder (any format)."),
    out: Path | None = typer.Option(
        None, "--out", help="Study folder: study.db, split.csv, trials.csv, best.yaml."
    ),
    preset: str = typer.Option(
        "default",
        help="Settings that are not searched, and the search space (tune:), come from here.",
    ),
    trials: int = typer.Option(
        30, help="Finished trials the study should have, over all workers (a study resumes)."
    ),
    split: Path | None = typer.Option(None, help="Split file; default: a new grouped split."),
    config: Path | None = typer.Option(
        None,
        help="YAML settings on top of the preset (its tune: section replaces a stage's space).",
    ),
    cache_dir: Path | None = typer.Option(None, help="Decode/feature cache folder."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    stage: str = typer.Option(
        "head",
        help="head: stage-1 settings on cached features (seconds per trial); finetune: whole "
        "training runs, pruned per epoch (minutes per trial with train.frozen_cache).",
    ),
    storage: str | None = typer.Option(
        None,
        help="Optuna storage URL shared by all workers: sqlite:///FILE, "
        "postgresql+psycopg://USER@HOST/DB (pip install 'skinclf\\[postgres]'), journal:FILE; "
        "default: sqlite OUT/study.db.",
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study name (default: skinclf, or skinclf-finetune)."
    ),
    workers: int = typer.Option(1, help="Worker processes here, all on the same study."),
    timeout: float | None = typer.Option(None, help="Stop starting trials after S seconds."),
    pruner: str = typer.Option(
        "median",
        help="Stop trials that trail the others, on each epoch's validation balanced accuracy: "
        "median (default; the head from its 6th epoch), hyperband, or none.",
    ),
    heartbeat: int = typer.Option(
        60,
        help="Seconds between a running trial's heartbeats; after 3 missed ones it is failed and retried.",  # noqa: E501
    ),
    baseline: bool = typer.Option(
        True, help="A new study's first trial is the preset's own values (the untuned baseline)."
    ),
    show: str | None = typer.Option(
        None, "--show", help="Show the study in DIR_OR_URL (leaderboard, plots) and exit."
    ),
    plots: Path | None = typer.Option(None, help="--show: folder for the PNG plots."),
    overrides: list[str] | None = typer.Argument(None, help="Fixed settings as key=value."),
) -> None:
    """Search training settings with Optuna (TPE) for validation balanced accuracy.

    --stage head (default) searches loss, sampler, head and stage-1 optimiser: each trial
    trains the head on cached frozen-backbone features, seconds on a CPU. --stage finetune
    searches the fine-tuning optimiser, regularisation and mixing: each trial is a whole
    training run in OUT/trials/NNNN (cached features and activations reused), pruned when it
    trails earlier trials. What is searched is the preset's tune: section. The test split is
    never used. Interrupt and rerun to continue; several processes or machines with the same
    --storage and --study share the study. Then: skinclf train --config OUT/best.yaml ...

    Example: skinclf tune --data D --out tune/ft --stage finetune --trials 12 train.epochs=6
    """
    if show is not None:
        _show(show, study, plots)
        return
    _search(
        data, out, preset, trials, split, config, cache_dir, progress, stage, list(overrides or []),
        storage=storage, study_name=study, workers=workers, timeout=timeout, pruner=pruner,
        heartbeat=heartbeat, baseline=baseline,
    )  # fmt: skip


def _search(data, out, preset, trials, split, config, cache_dir, progress, stage, overrides, **kw):
    from skinclf.config import load_config, load_search_space, search_space_origin
    from skinclf.errors import ConfigError
    from skinclf.tune import STAGES, TuneOptions
    from skinclf.tune import tune as run_tune
    from skinclf.tune.search import baseline_trial
    from skinclf.tune.space import describe, without_fixed

    if data is None or out is None:
        raise ConfigError("skinclf tune needs --data and --out (or --show DIR_OR_URL).")
    cfg = load_config(preset, config, overrides)
    space, fixed = without_fixed(load_search_space(preset, config), overrides)
    if stage in STAGES:  # an unknown stage: tune's one-line error below
        console.print(f"searching {describe(getattr(space, stage))}")
    if fixed:
        console.print(f"fixed on the command line, not searched: {', '.join(fixed)}")
    origin = search_space_origin(preset, config, stage)
    options = TuneOptions(
        trials=trials, stage=stage, split_file=split, cache_dir=cache_dir, space=space,
        space_origin=origin, **kw,
    )  # fmt: skip
    result = run_tune(data, out, cfg, options, progress, log=console.print)
    console.print(
        f"[bold green]best[/] val balanced accuracy {result.best_value:.4f} after "
        f"{len(result.trials)} trials: {result.best_params}\nwrote {out / 'best.yaml'}"
    )
    base = baseline_trial(result)
    if base is not None:
        console.print(f"the preset's own settings (trial {base.number}): {base.value:.4f}")


def _show(target: str, study: str | None, plots: Path | None) -> None:
    from skinclf.tune.show import show

    board = show(target, study, plots)
    words = {"FAIL": "failed"}
    counts = ", ".join(f"{n} {words.get(s, s.lower())}" for s, n in board.counts.items())
    table = Table(title=f"study {board.study}: {counts}", title_justify="left")
    for name in ("trial", "val balanced accuracy", "minutes", "settings"):
        table.add_column(name, justify="right" if name != "settings" else "left")
    for row in board.best:
        minutes = f"{row['seconds'] / 60:.1f}" if row["seconds"] is not None else ""
        settings = "\n".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        number = f"{row['number']} (baseline)" if row["baseline"] else str(row["number"])
        table.add_row(number, f"{row['value']:.4f}", minutes, settings)
    console.print(table)
    for note in board.notes:
        console.print(f"[yellow]{note}[/]")
    for path in board.plots:
        console.print(f"wrote {path}")


def _short(value) -> str:
    """A searched value for the leaderboard: 4 significant digits for floats."""
    from skinclf.tune.space import value_text

    return f"{value:.4g}" if isinstance(value, float) else value_text(value)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
