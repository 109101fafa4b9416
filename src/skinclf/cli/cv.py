"""`skinclf cv`: K-fold lesion-grouped cross-validation, out-of-fold predictions and the fold
ensemble, in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinclf.cli.run import (
    BootstrapOpt,
    CacheDirOpt,
    ConfigOpt,
    DataOpt,
    IdKeepOpt,
    OodOpt,
    OverridesArg,
    PresetOpt,
    ProgressOpt,
    RichReporter,
    RiskOpt,
    SampleOpt,
    TestOpt,
    ThreadsOpt,
    console,
    numbers_table,
    run_options,
    warn_policy,
)

FoldsOpt = Annotated[int, typer.Option("--folds", "-k", help="Number of folds (K >= 2).")]
CvCalibOpt = Annotated[
    float,
    typer.Option(
        help="Share of images in a lesion-grouped calibration part outside every fold (0: "
        "none); the ensemble's temperature, OOD gate and selective classifier are fitted on it.",
    ),
]
MergeOpt = Annotated[
    Path | None,
    typer.Option(
        "--merge-duplicates",
        help="CSV of group pairs (e.g. lesion_id_a,lesion_id_b) known to be the same lesion: "
        "kept in one fold.",
    ),
]


def cv(
    out: Annotated[Path, typer.Option("--out", help="Output folder, e.g. runs/cv-default.")],
    data: DataOpt = None,
    folds: FoldsOpt = 5,
    ood: OodOpt = None,
    test: TestOpt = None,
    sample: SampleOpt = False,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    calib: CvCalibOpt = 0.0,
    merge_duplicates: MergeOpt = None,
    cache_dir: CacheDirOpt = None,
    target_risk: RiskOpt = "auto",
    id_keep: IdKeepOpt = 0.95,
    bootstrap: BootstrapOpt = 1000,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    overrides: OverridesArg = None,
) -> None:
    """Cross-validate a recipe: K lesion-grouped, class-stratified folds, one training run per
    fold (OUT/fold_<k>/, trained on the other folds for the recipe's fixed epoch counts, the
    last epoch kept), and OUT/oof_predictions.csv, in which every image is predicted once, by
    the fold model that did not train on it. OUT/cv_summary.json gives the per-fold and pooled
    out-of-fold balanced accuracy with a stratified-bootstrap 95 % interval, per-class recall,
    and the same with per-class logit offsets (fitted to maximise balanced accuracy; the
    reported numbers cross-fitted, each fold's offsets fitted on the other folds).

    The K fold models form an ensemble (mean probabilities, offsets added): each --ood and
    --test set is predicted by it into OUT/eval/, and `skinclf predict OUT --data ...` predicts
    with it. Its logit offsets (OUT/logit_offsets.json) are fitted on the out-of-fold
    predictions; with --calib, a calibration part lies outside every fold and the ensemble's
    offsets, then its temperature, OOD gate and selective classifier are fitted on its
    predictions of that part (OUT/eval/selective.json, report.html); the OOD gate is chosen,
    without OOD labels, by the silent failures on that part after synthetic corruption, and
    the report's test set is the out-of-fold images, each with the feature scores of the fold
    model that did not train on it.

    Decoded images, stage-1 features and frozen-stage activations are cached per image for all
    folds at once. Finished folds are skipped; interrupted (Ctrl-C, kill), the same command
    continues where it stopped.

    Example: skinclf cv --data data/ham10000 --folds 5 --test data/isic2018-test
    --out runs/cv-default
    """
    from skinclf.pipeline import CvOptions, run_cv

    run = run_options(
        out, data, ood, test, sample, preset, config, cache_dir, target_risk, id_keep,
        bootstrap, threads, list(overrides or []),
    )  # fmt: skip
    opts = CvOptions(run, folds=folds, calib=calib, merge_duplicates=merge_duplicates)
    try:
        result = run_cv(opts, RichReporter(), progress=progress)
    except (KeyboardInterrupt, SystemExit):  # (Lightning turns Ctrl-C into sys.exit(1))
        console.print("[yellow]interrupted[/]: run the same command again to continue.")
        raise typer.Exit(130) from None
    _print_summary(result)


def _ba(entry: dict) -> str:
    lo, hi = entry["balanced_accuracy_ci95"]
    return f"{entry['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"


def _print_summary(result) -> None:
    import json

    if all(o.status == "skipped" for o in result.outcomes):
        console.print("[green]everything was up to date[/]: no step ran.")
    _print_numbers(json.loads(result.summary_path.read_text()))
    console.print(f"summary: {result.summary_path}")
    metrics = result.summary_path.parent / "eval" / "metrics.json"
    if metrics.is_file():  # (with --calib: the ensemble's policy)
        from skinclf.contracts.metrics_report import read_metrics

        warn_policy(read_metrics(metrics))


def _print_numbers(summary: dict) -> None:
    oof = summary["out_of_fold"]
    rows = [("out-of-fold balanced accuracy [95 % CI]", _ba(oof["pooled"]))]
    rows.append(("  with cross-fitted logit offsets", _ba(oof["pooled_offsets"])))
    for fold, entry in oof["folds"].items():
        rows.append((f"  fold {fold} (n {entry['n']:,})", f"{entry['balanced_accuracy']:.3f}"))
    for name, entry in summary["ensemble"].items():
        rows.append((f"{name}: ensemble balanced accuracy", _ba(entry["offsets"])))
        rows.append(("  without logit offsets", _ba(entry["no_offsets"])))
    console.print(numbers_table(rows))


def cv_ensemble(
    cvs: Annotated[
        list[Path],
        typer.Argument(
            help="Two or more finished `skinclf cv` folders on the same folds (same data, "
            "--folds and seed), e.g. one per backbone.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The ensemble's folder, e.g. runs/cv-ab.")],
    bootstrap: BootstrapOpt = 1000,
) -> None:
    """Average several cross-validations into one model, measured like a cv: their
    out-of-fold probabilities averaged image by image (each image still predicted only by
    models that did not train on it), the logit offsets refitted on that average (on the
    calibration part when the cvs have one), and each set every cv predicted (its eval/NAME.csv)
    averaged likewise. OUT/cv_summary.json has the out-of-fold balanced accuracy [95 % CI] and
    each labelled set's; compare it with a member by `skinclf compare`.

    With a calibration part (cvs run with the same --calib), the ensemble's temperature, OOD
    gate and selective classifier are fitted on its averaged calibration predictions as `skinclf
    cv` fits a cv's (OUT/eval/selective.json, report.html), so its export abstains.

    OUT names its members (cv_members.json) instead of copying them: `skinclf predict OUT`
    predicts with every member's fold models (mean probabilities) and OUT's offsets, and
    `skinclf export OUT` packs them into one model folder.

    Example: skinclf cv-ensemble runs/cv-lite2 runs/cv-lite0 --out runs/cv-lite0-lite2
    """
    from skinclf.contracts.metrics_report import read_metrics
    from skinclf.pipeline.cv_ensemble import ensemble_cvs, evaluate_cv_ensemble

    summary = ensemble_cvs(cvs, out, n_bootstrap=bootstrap)
    _print_numbers(summary)
    console.print(f"summary: {out / 'cv_summary.json'}")
    if evaluate_cv_ensemble(cvs, out, n_bootstrap=bootstrap):
        console.print(f"selective classifier and report: {out / 'eval'}")
        warn_policy(read_metrics(out / "eval" / "metrics.json"))
    else:
        console.print(
            "no selective classifier: it is fitted on a calibration part, and not every member "
            "has one evaluated (`skinclf cv --calib F`; rerun a cv made before this version to "
            "add its corrupted calibration predictions)."
        )


def register(app: typer.Typer) -> None:
    app.command("cv")(cv)
    app.command("cv-ensemble")(cv_ensemble)
