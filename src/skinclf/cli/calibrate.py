"""`skinclf calibrate`: the selective classifier (policy) of a run trained by `skinclf train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from skinclf.cli.run import BootstrapOpt, CacheDirOpt, IdKeepOpt, ProgressOpt, RiskOpt

console = Console(soft_wrap=True, highlight=False)


def calibrate(
    run: Annotated[
        Path, typer.Argument(help="A run folder written by `skinclf train`.", show_default=False)
    ],
    target_risk: RiskOpt = "auto",
    id_keep: IdKeepOpt = 0.95,
    bootstrap: BootstrapOpt = 1000,
    cache_dir: CacheDirOpt = None,
    progress: ProgressOpt = True,
    features_only: Annotated[
        bool,
        typer.Option(
            "--features-only",
            help="Only fit the feature statistics (RUN/feature_stats.npz) that the feature "
            "scores need, to predict and evaluate by hand.",
        ),
    ] = False,
) -> None:
    """Fit a run's policy as `skinclf run` fits its own: fit its feature statistics on the
    training split (RUN/feature_stats.npz), predict its val, calib (when its split
    has one) and test images, and val after synthetic corruption, with every confidence score
    (RUN/eval/<set>.csv); fit the temperature on val, choose the OOD gate without OOD labels by
    the silent failures on the corrupted val images, and fit the confidence gate on calib (else
    val) at --target-risk. Writes RUN/eval/selective.json, metrics.json and report.html; then
    `skinclf predict RUN`, `skinclf export RUN`, `skinclf serve` and `skinclf.load(RUN)` abstain
    by that policy. With --features-only, only the feature statistics.

    Example: skinclf train --data data/ham10000 --out runs/lite0 && skinclf calibrate runs/lite0
    """

    from skinclf.cli.run import target_risk_option, warn_policy
    from skinclf.pipeline.calibrate import CalibrateOptions
    from skinclf.pipeline.calibrate import calibrate as fit_policy
    from skinclf.pipeline.summary import key_numbers

    if features_only:
        from skinclf.predict import fit_feature_statistics

        stats = fit_feature_statistics(run, cache_dir, progress)
        console.print(f"[green]wrote[/] {escape(str(stats))}")
        return
    risk = target_risk_option(target_risk)
    opts = CalibrateOptions(run, risk, id_keep, bootstrap, cache_dir, progress)
    result = fit_policy(opts, log=lambda m: console.print(f"  [dim]·[/] {escape(m)}"))
    metrics = result.report
    for what, value in key_numbers(metrics):
        console.print(f"{escape(what)}: {value}")
    warn_policy(metrics)
    wrote, report = escape(str(result.selective_path)), escape(str(result.report_path))
    console.print(f"[green]wrote[/] {wrote}; report: {report}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
