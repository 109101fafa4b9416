"""The README is the user's first page: at most 250 lines, and every command of its quickstart
(the command line, then Python) runs as written on generated data.

The only changes to the commands: `skinclf run` gets small settings appended (32 px, two
epochs, one thread) so the suite stays fast, `data sample` fewer images per class, and
`serve` a free port; each is otherwise run as the README writes it, in a fresh folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinclf.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
MAX_LINES = 250
FAST_RUN = ["data.image_size=32", "transfer.epochs=3", "train.epochs=1", "train.batch_size=8",
            "trainer.precision=32", "trainer.threads=1", "--bootstrap", "50",
            "--no-progress"]  # fmt: skip


def block(marker: str) -> str:
    """The fenced code block that follows the comment `<!-- MARKER ... -->` in the README."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker}[^>]*-->\s*```\w*\n(.*?)```", text, re.S)
    assert found, f"README.md has no code block after <!-- {marker} -->"
    return found.group(1)


def commands(code: str) -> list[list[str]]:
    """The shell commands of a block: comments dropped, continuation lines joined."""
    joined = code.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def test_the_readme_is_a_first_page_not_a_notebook() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; at most {MAX_LINES}"
    assert any(". .venv/bin/activate" in line for line in lines)


def test_the_quickstart_blocks_hold_the_commands_users_start_with() -> None:
    cli = [cmd[:2] for cmd in commands(block("quickstart-cli"))]
    assert ["skinclf", "run"] in cli and ["skinclf", "export"] in cli
    assert ["skinclf", "serve"] in cli and ["skinclf", "predict"] in cli
    assert "skinclf.load(" in block("quickstart-python")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], log: Path) -> dict:
    """`skinclf serve ...` on a free port until /health answers; its /health JSON."""
    import httpx

    port = _free_port()
    args = [a if a != "8000" else str(port) for a in args]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "skinclf", *args], stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except httpx.TransportError:
                time.sleep(0.3)
        pytest.fail(f"{shlex.join(args)} did not answer /health:\n{log.read_text()[-3000:]}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _run(cmd: list[str], log: Path) -> dict | None:
    """One README command (`skinclf ...` without its program name in `cmd`)."""
    if cmd[0] == "serve":
        pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
        return _serve(cmd, log)
    if cmd[:2] == ["data", "sample"]:
        cmd = [*cmd, "--n", "8"]
    if cmd[0] == "run":
        cmd = [*cmd, *FAST_RUN]
    result = CliRunner().invoke(app, cmd, catch_exceptions=False)
    assert result.exit_code == 0, f"skinclf {shlex.join(cmd)}:\n{result.output}"
    return None


@pytest.mark.timeout(900)
def test_every_quickstart_command_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    health = None
    try:
        for cmd in commands(block("quickstart-cli")):
            assert cmd[0] == "skinclf", cmd
            health = _run(cmd[1:], tmp_path / "serve.log") or health
    finally:
        torch.set_num_threads(threads)
    assert health is not None and health["status"] == "ok"
    assert (tmp_path / "runs" / "first" / "eval" / "report.html").is_file()
    assert (tmp_path / "runs" / "first-pad.csv").is_file()

    code = block("quickstart-python")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.splitlines()
    assert len(printed) == 5 and printed[0].startswith("PAT_")  # four images, then probabilities
    assert printed[-1].startswith("{'akiec':")


def test_every_relative_link_of_the_readme_exists() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) > 10
    missing = [link for link in local if not (README.parent / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
