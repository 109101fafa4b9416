"""`skinclf data ...`: check, split, cache, sample."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
out = Console(highlight=False)

SHOWN_PER_KIND = 10


def _fmt_counts(counts: dict[str, int], limit: int = 4) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} ({v:,})" for k, v in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def print_check(result) -> None:  # result: skinclf.data.check.CheckResult
    s = result.summary
    if s["rows"]:
        _print_summary(result)
    _print_problems(result)


def _print_summary(result) -> None:
    from skinclf.classes import CLASS_NAMES

    s = result.summary
    summary = Table(title=f"{result.format} · {result.root}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("rows", f"{s['rows']:,}")
    found = f"{s['images_found']:,}"
    if "images_readable" in s:
        found += f" ({s['images_readable']:,} readable)"
    summary.add_row("images found", found)
    per_group = ", ".join(f"{k} img: {v:,}" for k, v in s["images_per_group"].items())
    summary.add_row(f"groups ({s['group_column']})", f"{s['groups']:,}  [dim]{per_group}[/]")
    if "image_sizes" in s:
        summary.add_row("image sizes", _fmt_counts(s["image_sizes"]))
        summary.add_row("image modes", _fmt_counts(s["image_modes"]))
    if s["semantic_ood"] or result.format == "pad-ufes-20":
        summary.add_row("semantic OOD (SCC)", f"{s['semantic_ood']:,} (no class: abstain)")
    out.print(summary)

    total = sum(s["class_counts"].values()) + s["unlabelled"]
    if total:
        classes = Table(title="Images per class")
        for name, justify in (("class", "left"), ("", "left"), ("images", "right"),
                              ("share", "right")):  # fmt: skip
            classes.add_column(name, justify=justify)
        for c, n in s["class_counts"].items():
            classes.add_row(c, f"[dim]{CLASS_NAMES[c]}[/]", f"{n:,}", f"{n / total:.1%}")
        if s["unlabelled"]:
            n = s["unlabelled"]
            what = "semantic OOD (e.g. SCC)" if s["semantic_ood"] == n else "no label"
            classes.add_row("(none)", f"[dim]{what}[/]", f"{n:,}", f"{n / total:.1%}")
        out.print(classes)


def _print_problems(result) -> None:
    by_kind = defaultdict(list)
    for p in result.problems:
        by_kind[(p.level, p.kind)].append(p)
    for (level, kind), problems in sorted(by_kind.items(), key=lambda kv: kv[0][0] != "error"):
        colour = "red" if level == "error" else "yellow"
        for p in problems[:SHOWN_PER_KIND]:
            out.print(f"[{colour}]{level}:[/] {p.message}", soft_wrap=True)
        if len(problems) > SHOWN_PER_KIND:
            more = len(problems) - SHOWN_PER_KIND
            out.print(f"[{colour}]{level}:[/] ... and {more:,} more of this kind ({kind})")


def _mention_max_pixels(result) -> None:
    """`data check` also takes --max-pixels: say so where a message names the variable."""
    from dataclasses import replace

    from skinclf.data.formats import PIXEL_LIMIT_REMEDY

    option = f"{PIXEL_LIMIT_REMEDY} or --max-pixels PIXELS"
    result.problems = [
        replace(p, message=p.message.replace(PIXEL_LIMIT_REMEDY, option)) for p in result.problems
    ]


@app.command("check")
def check(
    path: Path = typer.Argument(..., help="Dataset folder (or its metadata/labels CSV)."),
    format: str = typer.Option(
        "auto", "--format", "-f", help="auto, ham10000, pad-ufes-20, isic2018, folder or csv."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Also write the data report (one HTML page) to this file."
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Decode every image to catch broken files."
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        help="Largest image (width x height) accepted; larger ones are reported, never decoded. "
        "Default: $SKINCLF_MAX_IMAGE_PIXELS or 180000000.",
    ),
) -> None:
    """Validate a dataset (metadata, labels, every image) and summarise it; exit 1 if unusable.

    Example: skinclf data check data/ham10000 --report ham_eda.html
    """
    from skinclf.data.check import check_dataset

    result = check_dataset(
        path, format=format, verify_images=verify, progress=True, max_pixels=max_pixels
    )
    _mention_max_pixels(result)
    print_check(result)
    if report is not None and result.summary.get("images_found", 0):
        from skinclf.data.report import write_report

        table = result.table[result.table.path != ""]
        write_report(table, report, max_pixels=max_pixels)
        out.print(
            f"Wrote the data report to {report} (it embeds dataset images: never commit it)",
            soft_wrap=True,
        )
    n_err, n_warn = len(result.errors), len(result.warnings)
    if result.usable:
        out.print(f"[bold green]usable[/] ({n_warn} warning{'s' * (n_warn != 1)})")
        return
    if not n_err:
        out.print("[red]error:[/] no images found.")
    out.print(f"[bold red]not usable[/]: {n_err} error(s), {n_warn} warning(s)")
    raise typer.Exit(1)


@app.command("sample")
def sample(
    out_dir: Path = typer.Option(..., "--out", "-o", help="New (or empty) folder to write to."),
    format: str = typer.Option(
        "ham10000", "--format", "-f", help="ham10000, pad-ufes-20, isic2018, folder or csv."
    ),
    n: int = typer.Option(20, "--n", help="Images per class (per diagnostic for pad-ufes-20)."),
    seed: int = typer.Option(0, help="Random seed; the same seed writes the same files."),
    size: int = typer.Option(64, help="Image side in pixels."),
) -> None:
    """Write a generated sample dataset in a real format (synthetic lesions, no real data).

    Example: skinclf data sample --format pad-ufes-20 --out sample/pad
    """
    from skinclf.data.synthetic import SAMPLE_FORMATS, write_sample
    from skinclf.errors import ConfigError
    from skinclf.outputs import check_output

    if format not in SAMPLE_FORMATS:
        raise ConfigError(f"unknown format {format!r}; use one of {', '.join(SAMPLE_FORMATS)}.")
    if n < 1 or size < 8:
        raise ConfigError("--n must be at least 1 and --size at least 8.")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} exists and is not empty; give a new folder.")
    check_output(out_dir)
    root = write_sample(out_dir, format=format, n=n, seed=seed, size=size)
    out.print(f"Wrote a generated {format} sample to {root}; try `skinclf data check {root}`")
