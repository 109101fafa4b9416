"""Output paths checked before any work: an `--out` that cannot be written is one sentence at
once, not a traceback after minutes of training or predicting, and the check leaves nothing
behind (it writes and removes one temporary file in the nearest existing folder)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from skinclf.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def write_probe(folder: Path) -> None:
    """Create and remove a temporary file in `folder`; OSError when it cannot be written."""
    with tempfile.TemporaryFile(dir=folder, prefix=".skinclf-write-probe-"):
        pass


def check_output(
    path: Path | str, option: str = "--out", kind: Literal["folder", "file"] = "folder"
):
    """ConfigError in one sentence when `path` cannot be written as a `kind`: a file where a
    folder is wanted (or the reverse), a parent that is a file, or no permission."""
    path = Path(path)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; give a folder.")
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name, e.g. {path}/out.csv.")
    existing = _nearest_existing(path if kind == "folder" else path.parent)
    if not existing.is_dir():
        raise ConfigError(
            f"{option} {path}: {existing} is a file, so nothing can be written under it; "
            "give another path."
        )
    try:
        write_probe(existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{option} {path}: cannot write in {existing} ({reason}); give a folder you can "
            "write to."
        ) from None
