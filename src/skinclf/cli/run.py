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
        "OUT/data and use the sample preset: offline, about a minute on 2 cores.",
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
    str,
    typer.Option(
        help="Target risk of the selective classifier's confidence gate (SGR): a number in "
        "(0, 1], or auto (the default): the lowest of 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, "
        "0.4, 0.5 that SGR certifies on the calibration split while accepting at least 70 % of "
        "it (each fitted at delta/9, so the chosen one's guarantee holds at 1 - delta).",
    ),
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
    target_risk: RiskOpt = "auto",
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
    target_risk: str,
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
        target_risk=target_risk_option(target_risk),
        id_keep=id_keep,
        bootstrap=bootstrap,
    )


def target_risk_option(value: str) -> float | str:
    from skinclf.errors import ConfigError
    from skinclf.policy.sgr import parse_target_risk

    try:
        return parse_target_risk(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _print_result(result, sample: bool) -> None:
    from skinclf.contracts.metrics_report import read_metrics
    from skinclf.pipeline.summary import key_numbers

    redone = [o for o in result.outcomes if o.status != "skipped"]
    if not redone:
        console.print("[green]everything was up to date[/]: no step ran.")
    metrics = read_metrics(result.metrics_path)
    console.print(numbers_table(key_numbers(metrics)))
    warn_policy(metrics)
    if sample:
        console.print(
            "[yellow]These numbers are on generated (synthetic) images[/], not on skin lesions: "
            "they show that the job works, not how well a model does. On HAM10000: `skinclf "
            "data download ham10000 --out data/ham10000` (and pad-ufes-20), then `skinclf run "
            "--data data/ham10000 --ood data/pad-ufes-20 --out runs/default`."
        )
    console.print(f"report: {result.report_path}")


def numbers_table(rows: list[tuple[str, str]]) -> Table:
    """The key numbers: a value is never cut (`0.723 [0.681, 0.76…`); in a narrow terminal
    the label wraps instead."""
    table = Table(title="key numbers", show_header=False, box=None, title_justify="left")
    table.add_column(style="bold", overflow="fold")
    width = max((len(value) for _, value in rows), default=0)
    table.add_column(justify="right", no_wrap=True, min_width=width)
    for what, value in rows:
        table.add_row(escape(what), value)
    return table


def warn_policy(metrics) -> None:  # metrics: a MetricsReport (or metrics.json as a dict)
    """One yellow line when the fitted policy abstains on every image (the terminal says what
    the page and /health say of such a model)."""
    from skinclf.pipeline.summary import policy_warning

    note = policy_warning(metrics)
    if note:
        console.print(f"[yellow]warning[/] {escape(note)}", highlight=False)


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
