"""`skinclf predict`: run trained models on images, with confidence scores and abstention."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from skinclf.contracts.score_registry import DEFAULT_SCORES, describe_scores

console = Console(soft_wrap=True)

_SCORES = typer.Option(
    ",".join(DEFAULT_SCORES),
    help=f"Confidence scores (conf_<name> columns), {describe_scores()}. knn is at "
    "k = 10, knn_k<k> at other ranks; mahalanobis_block<i> reads "
    "one stage's pooled output, mahalanobis_stages every stage's, standardised and averaged. "
    "The feature and stage scores read RUN/feature_stats.npz, fitted by `skinclf calibrate RUN "
    "[--features-only]` (a `skinclf run` or `cv` fits its own).",
)
_CORRUPT = typer.Option(
    None,
    "--corrupt",
    help="Predict after a synthetic corruption, one family per image, seeded: mix (ImageNet-C "
    "at severity 3: gaussian_noise, gaussian_blur, contrast, brightness, saturate, "
    "jpeg_compression, pixelate), clinical (white_balance, exposure, defocus, "
    "phone_processing, vignetting, field_of_view), all (both), or comma-separated family "
    "names. For `skinclf evaluate --shifted`: e.g. --split val --corrupt all.",
)


def predict(
    runs: list[Path] = typer.Argument(
        ...,
        help="A model: a run folder, a `skinclf run` output folder, a `skinclf cv` or `skinclf "
        "cv-ensemble` folder (its fold models form an ensemble, its logit offsets are added), "
        "or an exported model folder (MODEL_DIR of `skinclf export`: abstain and "
        "abstain_reason are always written); each with its own selective.json. Several form "
        "an ensemble (without offsets: make one cv-ensemble folder of cvs to have them "
        "refitted).",
    ),
    out: Path = typer.Option(..., "--out", help="Predictions CSV to write."),
    data: Path | None = typer.Option(
        None, help="Dataset folder (any format) or plain image files/folder (no labels)."
    ),
    split: str | None = typer.Option(None, help="Predict the run's own split: val, test, calib."),
    tta: str | None = typer.Option(None, help="none or d4 (mean over the 8 D4 views)."),
    scores: str = _SCORES,
    mc_dropout: int = typer.Option(0, help="K stochastic passes of the head (0: off)."),
    selective: Path | None = typer.Option(
        None,
        help="A selective.json (`skinclf evaluate`'s): adds `abstain` and `abstain_reason` "
        "(unfamiliar: the OOD gate; uncertain: the confidence gate). Default for one model "
        "folder: its own (a package's; FOLDER/eval/selective.json of a `skinclf run` output, cv "
        "or evaluated run folder), as `skinclf export` and `skinclf.load` take it.",
    ),
    output_format: str = typer.Option(
        "predictions", "--format", help="predictions or isic2018-submission."
    ),
    cache_dir: Path | None = typer.Option(None, help="Decode/feature cache folder."),
    batch_size: int | None = typer.Option(None, help="Images per batch."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    corrupt: str | None = _CORRUPT,
    offsets: bool = typer.Option(True, help="Add a cv folder's logit_offsets.json to the logits."),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 1 when an image is unreadable (the others are still predicted and written).",
    ),
) -> None:
    """Predict images with trained runs and write the predictions file (or ISIC submission).

    Example: skinclf predict runs/lite0 --data ../pad-ufes-20 --scores msp,knn --out pad.csv
    (or an exported model: skinclf predict models/lite0 --data new_images/ --out p.csv)
    """
    from skinclf.predict import PredictOptions, predict_file

    options = PredictOptions(
        tta=tta,
        scores=[s.strip() for s in scores.split(",") if s.strip()],
        mc_dropout=mc_dropout,
        selective=selective if selective else ("auto" if len(runs) == 1 else None),
        output_format=output_format,
        batch_size=batch_size,
        corrupt=corrupt,
        apply_offsets=offsets,
    )
    frame = predict_file(runs, out, data, split, options, cache_dir, progress)
    _report(frame, out, strict)


def _report(frame, out: Path, strict: bool) -> None:
    """What was written, the logit offsets left out, and the images skipped (exit 1 with
    --strict)."""
    from rich.markup import escape

    extra = ""
    if "abstain" in frame:
        extra = f", abstained on {int(frame['abstain'].sum())} ({frame['abstain'].mean():.0%})"
    console.print(f"[green]wrote[/] {out}: {len(frame)} images{extra}")
    unused = frame.attrs.get("unused_offsets") or []
    if unused:
        console.print(
            f"[yellow]note[/] the logit offsets of {escape(', '.join(unused))} were not added: "
            "they were fitted for one model, not for this average; `skinclf cv-ensemble` "
            "averages cvs and refits them.",
            highlight=False,
        )
    skipped = frame.attrs.get("skipped") or []
    if skipped:
        from skinclf.predict import errors_file

        names = escape(", ".join(Path(p).name for p, _ in skipped[:5]))
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        colour = "red" if strict else "yellow"
        console.print(
            f"[{colour}]skipped[/] {len(skipped)} unreadable image(s) ({names}{more}); each with "
            f"its reason in {escape(str(errors_file(out)))}",
            highlight=False,
        )
        if strict:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
