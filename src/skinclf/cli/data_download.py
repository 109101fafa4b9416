"""`skinclf data download` (added to the `data` group): fetch a public dataset and check it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from skinclf.cli.data import app, out, print_check
from skinclf.data.download import CONNECT_TIMEOUT, SOURCES_ENV


@app.command("download")
def download(
    name: str | None = typer.Argument(
        None, help="Dataset to download: ham10000, pad-ufes-20 or isic2018 (see --list)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="New (or empty) folder for the dataset."
    ),
    part: str | None = typer.Option(
        None, "--part", help="isic2018 only: test (default) or validation."
    ),
    list_: bool = typer.Option(
        False, "--list", help="List the datasets: source, size, licence and citation."
    ),
    keep_archives: bool = typer.Option(
        False, "--keep-archives", help="Keep the verified archives in OUT.download/ afterwards."
    ),
    timeout: float = typer.Option(
        CONNECT_TIMEOUT, "--timeout", help="Seconds to wait for a server to connect and answer."
    ),
    sources: Path | None = typer.Option(
        None,
        "--sources",
        hidden=True,
        help=f"Source table (YAML) to use instead of the packaged one (or ${SOURCES_ENV}).",
    ),
) -> None:
    """Download a public dataset (resumable, verified), unpack it and run `data check` on it.

    Prints licence and citation first. Offline: names the URL and the manual steps, exit 1.

    Example: skinclf data download ham10000 --out data/ham10000
    """
    from skinclf.data.download import DownloadOptions, download_dataset, iter_rows, load_sources
    from skinclf.errors import ConfigError

    table = load_sources(sources)
    if list_:
        for title, rows in iter_rows(table):
            listing = Table(title=title, title_justify="left", show_header=False, box=None)
            listing.add_column(style="bold", no_wrap=True)
            listing.add_column(overflow="fold")
            for key, value in rows:
                listing.add_row(key, value)
            out.print(listing, "")
        unchecked = [n for n, s in table.items() if not s.verified_download]
        if unchecked:
            out.print(
                f"[dim]Not yet verified by a real download: {', '.join(unchecked)} (URLs, sizes "
                "and checksums come from the sources' pages, cited in the source table).[/]",
                soft_wrap=True,
            )
        return
    if name is None or out_dir is None:
        raise ConfigError("give a dataset and a folder: skinclf data download NAME --out DIR.")
    if timeout <= 0:
        raise ConfigError("--timeout must be a positive number of seconds.")
    result = download_dataset(
        name,
        out_dir,
        part=part,
        sources=table,
        console=out,
        options=DownloadOptions(keep_archives=keep_archives, timeout=timeout),
    )
    if result.already:
        out.print(f"Run `skinclf data check {result.root}` to check it again.", soft_wrap=True)
        return
    check = result.check
    print_check(check)
    n_err, n_warn = len(check.errors), len(check.warnings)
    if check.usable:
        out.print(f"[bold green]usable[/] ({n_warn} warning{'s' * (n_warn != 1)}): {result.root}")
        return
    out.print(
        f"[bold red]not usable[/]: the files match their source, but `data check` found "
        f"{n_err} error(s) and {n_warn} warning(s) in {result.root}",
        soft_wrap=True,
    )
    raise typer.Exit(1)
