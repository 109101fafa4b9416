"""Content digests of files: what a file holds, not when it was written.

Cache keys and run-step fingerprints hash these, so a dataset copied afresh (new modification
times, the same bytes) keeps its decoded cache, its cached features and its finished steps, and
a file rewritten with other bytes is always noticed. Within a process a file is read once: the
digest is remembered under its path, inode, size, modification time and status-change time
(which no one can set back, so a rewrite is noticed even when the modification time is).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20
_seen: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (OSError when it cannot be read)."""
    p = os.fspath(path)
    st = os.stat(p)
    key = (os.path.realpath(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _seen:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        _seen[key] = h.hexdigest()
    return _seen[key]


def folder_sha256(root: str | os.PathLike[str]) -> str:
    """Hex sha256 of every file's relative path and content digest under `root` (links
    followed; a broken link is not a file and is left out)."""
    root = Path(root)
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                content = file_sha256(path)
            except OSError:
                continue
            h.update(f"{path.relative_to(root).as_posix()}\t{content}\n".encode())
    return h.hexdigest()
