"""`skinclf data split` and `skinclf data cache` (added to the `data` group)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from skinclf.cli.data import app

console = Console()

FORMAT_HELP = "Dataset format: auto, ham10000, pad-ufes-20, isic2018, folder or csv."


@app.command("split")
def split(
    path: Path = typer.Argument(..., help="Dataset folder (or CSV for the csv format)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the split CSV."),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    val: float = typer.Option(0.15, help="Fraction of images for validation."),
    test: float = typer.Option(0.15, help="Fraction of images for the test set."),
    calib: float = typer.Option(0.0, help="Fraction for a calibration split (0: none)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same split."),
    merge_duplicates: Path | None = typer.Option(
        None,
        "--merge-duplicates",
        help="CSV of group pairs (e.g. lesion_id_a,lesion_id_b) known to be the same lesion.",
    ),
) -> None:
    """Split into train/val/test (and calib) by class, no lesion/patient in two splits.

    Example: skinclf data split data/ham10000 --out split.csv --calib 0.1
    """
    import pandas as pd

    from skinclf.data.formats import load_dataset
    from skinclf.data.split import (
        share_deviation,
        split_class_counts,
        split_dataset,
        write_split,
    )
    from skinclf.errors import DataError

    table = load_dataset(path, format=format)
    pairs = None
    if merge_duplicates is not None:
        try:
            pairs = pd.read_csv(merge_duplicates, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(
                f"Cannot read the merge-duplicates file {merge_duplicates} ({exc})."
            ) from None
    result = split_dataset(table, val=val, test=test, calib=calib, seed=seed, merge_pairs=pairs)
    write_split(result, out)

    counts = split_class_counts(table, result)
    grid = Table(title=f"Images per class and split ({path})")
    grid.add_column("class")
    for name in counts.columns:
        grid.add_column(name, justify="right")
    for cls, row in counts.iterrows():
        grid.add_row(str(cls), *(str(v) for v in row))
    grid.add_row("total", *(str(v) for v in counts.sum()), style="bold")
    console.print(grid)
    console.print(
        f"Largest deviation of a class share from the whole: "
        f"{share_deviation(table, result):.2f} points"
    )
    console.print(f"Wrote {out}")


@app.command("cache")
def cache(
    path: Path = typer.Argument(..., help="Dataset folder (or CSV for the csv format)."),
    size: int = typer.Option(224, help="Side of the square images, in pixels."),
    resize: str = typer.Option(
        "squash", help="squash (plain resize) or center-crop (centred square, then resize)."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Cache folder (default $SKINCLF_CACHE_DIR or ~/.cache/skinclf)."
    ),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    workers: int | None = typer.Option(None, help="Decoding threads (default: CPU count, <= 8)."),
) -> None:
    """Decode and resize every image once into a memory-mapped cache that training reads.

    Example: skinclf data cache data/ham10000 --size 224
    """
    from skinclf.data.cache import build_cache
    from skinclf.data.formats import load_dataset

    table = load_dataset(path, format=format)
    start = time.perf_counter()
    decoded = build_cache(table, size, resize=resize, cache_dir=cache_dir, workers=workers)
    seconds = time.perf_counter() - start
    n = len(decoded)
    if decoded.build_seconds is None:
        console.print(f"Reused the cache of {n} images ({size}px, {resize}) in {seconds:.2f} s")
    else:
        rate = n / max(decoded.build_seconds, 1e-9)
        console.print(
            f"Decoded {n} images ({size}px, {resize}) in {decoded.build_seconds:.1f} s "
            f"({rate:.0f} images/s)"
        )
    console.print(f"Cache: {decoded.path}")
