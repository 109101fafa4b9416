"""`skinclf serve`: an exported model over HTTP (FastAPI + uvicorn; the `serve` extra)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from skinclf.cli import app
from skinclf.errors import ConfigError

console = Console(stderr=True, soft_wrap=True)


@app.command("serve")
def serve(
    model_dir: Path = typer.Argument(
        ..., help="A model: a package written by `skinclf export`, a run or a cv folder."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, help="Worker processes, each with its own copy of the model."),
    max_upload_mb: float = typer.Option(
        20.0, help="Largest request body in MB (2**20 bytes), enforced while it streams in."
    ),
    max_files: int = typer.Option(16, help="Most images in one request."),
) -> None:
    """Serve an exported model over HTTP, with a page to try images (research, not diagnosis).

    POST /predict (multipart field `files`), GET /health, GET /model (the model card), a page
    at / and the API docs at /docs.

    Example: skinclf serve models/lite0 --port 8000, then open http://127.0.0.1:8000/
    """
    from skinclf.serve import require_serve_extra

    require_serve_extra()
    if workers < 1 or max_files < 1 or not max_upload_mb > 0 or not 0 <= port <= 65535:
        raise ConfigError(
            "--workers and --max-files must be at least 1, --max-upload-mb above 0 and --port "
            f"0-65535 (got {workers}, {max_files}, {max_upload_mb:g}, {port})."
        )
    from skinclf.predictor import load
    from skinclf.serve.app import run_server

    _check_port(host, port)  # one sentence, before anything listens
    model = load(model_dir)  # a bad folder is one sentence here, before anything listens
    model_id, note = model.model_id, model.policy_note
    if note:  # the page and /health say it too
        console.print(f"[yellow]warning[/] {model_dir}: {note}.", highlight=False)
    if workers > 1:
        model = None  # each worker process loads its own copy; this one is not needed
    console.print(
        f"serving {model_id} on http://{host}:{port}/ (API docs: /docs); "
        "a research tool, not a diagnosis",
        highlight=False,
    )
    run_server(
        model_dir,
        model=model,
        host=host,
        port=port,
        workers=workers,
        max_bytes=max(1, int(max_upload_mb * 2**20)),
        max_files=max_files,
    )


def _check_port(host: str, port: int) -> None:
    """ConfigError when `host:port` cannot be bound (another server listens there)."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--port {port}: {host}:{port} cannot be used ({exc.strerror}); another server "
                "may listen there: give another --port."
            ) from None
