"""The `skinclf` command: a thin Typer app; each command group lives in its own module.

Commands import their heavy dependencies (torch, timm, lightning) lazily, inside the command,
so `skinclf --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# On 2 shared cores, OpenMP's default busy-waiting collapses 2-thread training about 8x as soon
# as another process runs (measured: 62 -> 4 img/s); passive waiting costs ~13 % when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from rich.console import Console
from rich.markup import escape

from skinclf import __version__
from skinclf.errors import SkinclfError

# soft_wrap: an error is one sentence on one line, never broken or cut at the terminal width.
console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="skinclf",
    help=(
        "Train skin-lesion classifiers that know when not to answer.\n\n"
        "Typical flow: `skinclf data check` -> `skinclf data split` -> `skinclf train` -> "
        "`skinclf predict` -> `skinclf evaluate`. Try it without data: `skinclf data sample "
        "--format ham10000 --out sample/`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skinclf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train skin-lesion classifiers that know when not to answer."""


def _register() -> None:
    import skinclf.cli.data_download  # noqa: F401 (adds `data download` to the data group)
    import skinclf.cli.export  # noqa: F401 (adds `export`)
    from skinclf.cli import (  # noqa: F401
        calibrate,
        compare,
        cv,
        data,
        data_prep,
        evaluate,
        models,
        predict,
        run,
        train,
        tune,
    )

    app.add_typer(data.app, name="data", help="Download, check, split, cache and generate data.")
    for module in (models, run, cv, train, calibrate, tune, predict, evaluate, compare):
        module.register(app)
    import skinclf.cli.serve  # noqa: F401 (adds `serve`, after the commands above)
    from skinclf.cli.help_text import flags_without_a_type, unwrap_commands

    unwrap_commands(app)
    flags_without_a_type()


_register()


def main() -> None:
    """Console-script entry point: user errors, and a full disk anywhere, become one red
    sentence and exit code 1."""
    try:
        app()
    except SkinclfError as exc:
        _fail(exc)
    except OSError as exc:
        from skinclf import atomic

        if exc.errno not in atomic.NO_SPACE:
            raise
        name = exc.filename if isinstance(exc.filename, (str, os.PathLike)) else "a file"
        _fail(atomic.disk_full(Path(name)))


def _fail(exc: SkinclfError) -> None:
    # escaped: a message such as `pip install "skinclf[wandb]"` is not rich markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    sys.exit(1)
