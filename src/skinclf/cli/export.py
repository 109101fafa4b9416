"""`skinclf export`: a trained run (or a cross-validation folder of runs) as a model folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console(soft_wrap=True)

_SOURCE = typer.Argument(
    ...,
    help="A `skinclf run` output folder (its run/ and eval/selective.json), a run folder "
    "(RUN/), a cross-validation folder whose fold_*/ run folders form a fold ensemble (mean "
    "probabilities, its logit_offsets.json added), or a `skinclf cv-ensemble` folder (every "
    "member cv's fold runs, its refitted offsets).",
)
_OUT = typer.Option(
    ..., "--out", help="The model folder to write (MODEL_DIR; replaced if it is one)."
)
_ONNX = typer.Option(
    False,
    "--onnx",
    help="Also write model.onnx (uint8 RGB pixels NCHW -> logits, features, the stages' "
    "pooled outputs); needs the "
    'onnx extra (pip install "skinclf\\[onnx]").',
)
_SELECTIVE = typer.Option(
    None,
    "--selective",
    help="The selective.json to include (default: SOURCE/eval/selective.json when there; "
    "without one the model never abstains, and export says so).",
)


def export(
    source: Path = _SOURCE,
    out: Path = _OUT,
    onnx: bool = _ONNX,
    selective: Path | None = _SELECTIVE,
) -> None:
    """Export a trained run as one model folder (for predict, skinclf.load and serve).

    The folder holds the checkpoints, preprocessing, selective classifier, model card (and
    with --onnx an ONNX graph); `skinclf predict MODEL_DIR` and `skinclf.load(MODEL_DIR)` read it.

    Example: skinclf export runs/lite0 --out models/lite0 --onnx
    """
    from skinclf.predictor.export import export_model

    with console.status("exporting"):
        manifest = export_model(source, out, onnx=onnx, selective=selective)
    parts = [f"{len(manifest.members)} member(s)"]
    parts.append("selective classifier" if manifest.selective else "no selective classifier")
    if manifest.onnx is not None:
        parts.append(f"ONNX opset {manifest.onnx.opset}")
    console.print(
        f"[green]wrote[/] {escape(str(out))}: {manifest.model_id} ({', '.join(parts)})",
        highlight=False,
    )
    _warn_policy(out)


def _warn_policy(out: Path) -> None:
    """One yellow line when the package cannot abstain, or abstains on every image."""
    from skinclf.contracts.selective import load_selective
    from skinclf.predictor.decisions import ABSTAINS_ALWAYS_MESSAGE, policy_note
    from skinclf.predictor.manifest import package_selective

    path = package_selective(out)
    note = policy_note(load_selective(path) if path is not None else None)
    if note:
        hint = (
            "fit it again with a reachable --target-risk (or --target-risk auto)"
            if note == ABSTAINS_ALWAYS_MESSAGE
            else "evaluate the run with --val/--calib (or export a `skinclf run` output folder)"
        )
        console.print(f"[yellow]warning[/] {note}: {hint}.", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def _register_on_import() -> None:
    """`import skinclf.cli.export` (in skinclf.cli) adds the command to the app."""
    from skinclf.cli import app

    register(app)


_register_on_import()
