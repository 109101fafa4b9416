"""`skinclf compare`: two models on the same images, paired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console(soft_wrap=True, highlight=False)


def _rows(result: dict, name: str = "") -> list[tuple[str, dict]]:
    """(set name, comparison) for every paired comparison in `result`, nested ones included."""
    if "paired_bootstrap_balanced_accuracy" in result:
        return [(name or "compared", result)]
    return [row for key, value in result.items() for row in _rows(value, f"{name} {key}".strip())]


def _line(side: str, summary: dict) -> str:
    lo, hi = summary["balanced_accuracy_ci95"]
    return (
        f"  {side}  balanced accuracy {summary['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}], "
        f"AURC (MSP) {summary['aurc_msp']:.3f}  ({escape(summary['file'])})"
    )


def print_result(result: dict) -> None:
    """For each paired comparison: each model's balanced accuracy with its interval and AURC,
    then A - B with its paired interval and P(A > B)."""
    for name, r in _rows(result):
        diff = r["paired_bootstrap_balanced_accuracy"]
        lo, hi = diff["difference_ci95"]
        console.print(f"[bold]{escape(name)}[/] ({r['a']['n']:,} images, paired)")
        console.print(_line("A", r["a"]))
        console.print(_line("B", r["b"]))
        console.print(
            f"  A - B {diff['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}], P(A > B) "
            f"{diff['p_a_greater']:.3f} ({diff['n_resamples']:,} resamples)"
        )


def compare(
    a: Annotated[
        Path,
        typer.Argument(
            help="The candidate: a predictions CSV, a `skinclf run`/`train` folder or a "
            "`skinclf cv` folder.",
            show_default=False,
        ),
    ],
    b: Annotated[
        Path, typer.Argument(help="What A is compared with, of the same kind.", show_default=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Write the comparison as JSON to this file.", show_default=False),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Runs: the split compared (their eval/SPLIT.csv).")
    ] = "test",
    external: Annotated[
        str | None,
        typer.Option(
            help="Runs and cvs: also compare their predictions of this --test set "
            "(OUT/eval/NAME.csv; a cv's ensemble, with its own offsets).",
            show_default=False,
        ),
    ] = None,
    offsets: Annotated[
        bool,
        typer.Option(
            "--offsets",
            help="cvs: compare both out of fold after cross-fitted logit offsets (each "
            "fold's fitted on the other folds).",
        ),
    ] = False,
    ood: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            metavar="A_OOD B_OOD",
            help="Files: each model's predictions of an out-of-distribution set (A's, then "
            "B's): adds the OOD detection AUROC and FPR at 95 % TPR of the MSP.",
            show_default=False,
        ),
    ] = None,
    resamples: Annotated[
        int,
        typer.Option(
            min=100, help="Paired-bootstrap resamples (10,000 for a decision near a threshold)."
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the paired bootstrap.")] = 0,
) -> None:
    """Compare two models on the same images: balanced accuracy of each with a
    stratified-bootstrap 95 % interval, a paired bootstrap of A - B (interval and P(A > B)),
    accuracy, macro-F1, recall per class, and AURC/AUGRC of the maximum softmax probability.
    Two cvs are compared out of fold (on the folds both finished while either runs); they
    must use the same folds. Pass the candidate as A.

    Example: skinclf compare runs/cv5-pair runs/cv5-default --external isic2018-test-dev
    --resamples 10000 --out pair_vs_default.json
    """
    from skinclf import atomic
    from skinclf.compare import compare as compare_models
    from skinclf.outputs import check_output

    if out is not None:
        check_output(out, kind="file")
    result = compare_models(a, b, split, external, offsets, ood, resamples, seed)
    print_result(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out, json.dumps(result, indent=2) + "\n")
        console.print(f"[green]wrote[/] {escape(str(out))}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
