"""`skinclf models list`: the backbone registry as a table."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(no_args_is_help=True, help="Backbones: names, weights, size and cost.")


def _norm(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    from skinclf.models.registry import IMAGENET_MEAN, IMAGENET_STD

    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        return "ImageNet"
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return f"{mean[0] * 255:g}/{std[0] * 255:g} (of 255)"
    return f"mean {mean} std {std}"


@models_app.command("list")
def list_command(
    size: int | None = typer.Option(
        None, "--size", min=32, help="Count GFLOPs at this input size instead of each native one."
    ),
) -> None:
    """Show each backbone: timm architecture, offline weights, input size, parameters, GFLOPs.

    Example: skinclf models list --size 224
    """
    from skinclf.models import backbone_costs

    costs = backbone_costs(image_size=size, progress=True)
    table = Table(title="Backbones (any other timm model name is accepted when online)")
    table.add_column("name", no_wrap=True)
    table.add_column("timm architecture", no_wrap=True)
    table.add_column("weights offline")
    for column in ("input", "params (M)", "GFLOPs"):
        table.add_column(column, justify="right")
    table.add_column("normalisation, resize")
    for cost in costs:
        info = cost.info
        packaged = info.weights_source.startswith("package:")
        kind = "yes (pip package)" if packaged else "yes (cached)"
        table.add_row(
            info.name,
            info.timm_name,
            kind if info.offline_available else "no",
            str(cost.image_size),
            f"{cost.parameters / 1e6:.1f}",
            "too small" if cost.forward_flops is None else f"{cost.forward_flops / 1e9:.2f}",
            f"{_norm(info.mean, info.std)}, {info.interpolation}",
        )
    console = Console()
    console.print(table)
    console.print(
        "GFLOPs: one forward pass of one image, a multiply-accumulate counted as 2 (torch "
        "FlopCounterMode), backbone only. 'no': downloaded from the hub on first use."
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(models_app, name="models", help="Backbones: names, weights, size and cost.")
