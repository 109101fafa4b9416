"""`skinclf run`: the whole job, from a dataset folder to report.html, in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(soft_wrap=True, highlight=False)

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Dataset folder (any format `data check` knows).")
]
OodOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--ood", help="Out-of-distribution dataset folder, e.g. PAD-UFES-20 (repeatable)."
    ),
]
TestOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--test",
        help="External labelled test set, e.g. the ISIC 2018 test images (repeatable): "
        "evaluated like the internal test (`evaluate --external`).",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder, e.g. runs/default.")]
SampleOpt = Annotated[
    bool,
    typer.Option(
        "--sample",
        help="Generate the data (a HAM10000-format set, a PAD-UFES-20-format OOD set) into "
        "OUT/data and use the sample preset: offline, about 2 minutes on 2 cores.",
    ),
]
PresetOpt = Annotated[
    str | None, typer.Option(help="Recipe: default, paper or sample (--sample: sample).")
]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML file of settings on top of the preset.")]
CalibOpt = Annotated[
    float,
    typer.Option(
        help="Share of images in the lesion-grouped calibration split, taken from the "
        "training share (data.calib); the gates and SGR are fitted on it.",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(help="Where decoded images and features are cached (default ~/.cache/skinclf)."),
]
RiskOpt = Annotated[
    float | None,
    typer.Option(help="SGR target risk of the selective classifier (default 0.10; --sample 0.30)."),
]
IdKeepOpt = Annotated[
    float, typer.Option(help="Share of in-distribution calibration images the OOD gate keeps.")
]
BootstrapOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the 95 % intervals.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads (default: all cores).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Settings as dotted key=value, e.g. train.epochs=12 loss.name=focal."),
]


def run(
    out: OutOpt,
    data: DataOpt = None,
    ood: OodOpt = None,
    test: TestOpt = None,
    sample: SampleOpt = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    calib: CalibOpt = 0.10,
    cache_dir: CacheDirOpt = None,
    target_risk: RiskOpt = None,
    id_keep: IdKeepOpt = 0.95,
    bootstrap: BootstrapOpt = 1000,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    overrides: OverridesArg = None,
) -> None:
    """Check the data, split it (lesion-grouped, with a calibration split), decode it, train
    (head, then fine-tuning), predict every set with every confidence score, fit the
    temperature (on val), the OOD gate and the selective classifier (on calib), evaluate, and
    write OUT/eval/report.html.

    Each step is skipped when its outputs exist and its inputs and settings are unchanged, and
    redone (saying why) otherwise; interrupted (Ctrl-C, kill), the same command continues where
    it stopped. OUT holds split.csv, run/ (the training run), eval/ (predictions, metrics.json,
    selective.json, report.html) and run_state.json.

    Example: skinclf run --data data/ham10000 --ood data/pad-ufes-20 --test data/isic2018-test
    --out runs/default
    """
    from skinclf.pipeline import run_job

    opts = run_options(
        out, data, ood, test, sample, preset, config, cache_dir, target_risk, id_keep,
        bootstrap, threads, [f"data.calib={calib}", *(overrides or [])],
    )  # fmt: skip
    try:
        result = run_job(opts, RichReporter(), progress=progress)
    except (KeyboardInterrupt, SystemExit):  # (Lightning turns Ctrl-C into sys.exit(1))
        console.print("[yellow]interrupted[/]: run the same command again to continue.")
        raise typer.Exit(130) from None
    _print_result(result, sample)


def run_options(
    out: Path,
    data: Path | None,
    ood: list[Path] | None,
    test: list[Path] | None,
    sample: bool,
    preset: str | None,
    config: Path | None,
    cache_dir: Path | None,
    target_risk: float | None,
    id_keep: float,
    bootstrap: int,
    threads: int | None,
    overrides: list[str],
):
    """The `RunOptions` of `skinclf run` and `skinclf cv` from their shared options."""
    from skinclf.config import load_config
    from skinclf.errors import ConfigError
    from skinclf.pipeline import RunOptions, SampleData

    if sample and data is not None:
        raise ConfigError("Give --data or --sample, not both (--sample generates its own data).")
    extra = list(overrides)
    if threads is not None:
        extra.append(f"trainer.threads={threads}")
    cfg = load_config(preset or ("sample" if sample else "default"), config, extra)
    return RunOptions(
        out=out,
        cfg=cfg,
        data=data,
        ood=list(ood or []),
        tests=list(test or []),
        sample=SampleData() if sample else None,
        cache_dir=cache_dir,
        target_risk=target_risk if target_risk is not None else (0.30 if sample else 0.10),
        id_keep=id_keep,
        bootstrap=bootstrap,
    )


def _print_result(result, sample: bool) -> None:
    import json

    from skinclf.pipeline.summary import key_numbers

    redone = [o for o in result.outcomes if o.status != "skipped"]
    if not redone:
        console.print("[green]everything was up to date[/]: no step ran.")
    table = Table(title="key numbers", show_header=False, box=None, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    for what, value in key_numbers(json.loads(result.metrics_path.read_text())):
        table.add_row(escape(what), value)
    console.print(table)
    if sample:
        console.print(
            "[yellow]These numbers are on generated (synthetic) images[/], not on skin lesions: "
            "they show that the job works, not how well a model does. On HAM10000: `skinclf "
            "data download ham10000 --out data/ham10000` (and pad-ufes-20), then `skinclf run "
            "--data data/ham10000 --ood data/pad-ufes-20 --out runs/default`."
        )
    console.print(f"report: {result.report_path}")


class RichReporter:
    """skinclf.pipeline.Reporter drawn with rich: a rule per step that runs, a tick per step
    skipped or done; the steps draw their own progress bars."""

    def step_start(self, index: int, total: int, step, reason: str) -> None:
        console.rule(f"[bold cyan]{index}/{total} {step.name}", align="left")
        console.print(f"{escape(step.title)}  [dim]{escape(reason)}[/]")

    def step_skip(self, index: int, total: int, step) -> None:
        console.print(f"[green]✓[/] {index}/{total} {step.name} [dim]up to date, skipped[/]")

    def step_done(self, index: int, total: int, step, seconds: float) -> None:
        console.print(f"[green]✓[/] {index}/{total} {step.name} done in {seconds:.1f} s")

    def log(self, message: str) -> None:
        console.print(f"  {message}")

    def sub(self, message: str) -> None:
        console.print(f"  [dim]·[/] {escape(message)}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
