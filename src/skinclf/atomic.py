"""Atomic file writes: a unique temporary file beside the target, renamed over it when complete.

Every cache and run file goes through `atomic_path`, so a reader sees the old file or the whole
new one, never part of one. A writer killed half-way (kill -9, out of memory) leaves only its
temporary file `NAME.<pid>-<random>.tmp`, which the next write of the same target removes once
that process is gone; any error removes it at once, and a full disk (ENOSPC, EDQUOT) becomes
one `DataError` naming the file and the space left.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skinclf.errors import DataError
from skinclf.faults import fault_point

NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def temp_name(final: Path) -> Path:
    """A temporary name beside `final`, unique per process and call."""
    return final.with_name(f"{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def remove_stale_temps(final: Path) -> None:
    """Remove the temporary files of `final` whose writer process has died."""
    prefix = f"{final.name}."
    for tmp in final.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def disk_full(final: Path, needed: int | None = None) -> DataError:
    """The one-sentence error for a full disk while writing `final`."""
    try:
        free = f"{_megabytes(shutil.disk_usage(final.parent).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"{_megabytes(needed)} needed, " if needed else ""
    return DataError(
        f"The disk is full: cannot write {final} ({need}{free} on its disk); free some space "
        "or write to another disk (e.g. --cache-dir, SKINCLF_CACHE_DIR or --out), then run again."
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: Path | str, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final` to write; on success rename it to `final`.

    On any error the temporary file is removed and `final` is left as it was; ENOSPC/EDQUOT
    become `disk_full`'s DataError. `fsync=True` also flushes the file and the folder to disk
    (for a power cut; a killed process needs no fsync).
    """
    final = Path(final)
    remove_stale_temps(final)
    tmp = temp_name(final)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        fault_point(f"write/{final.name}")
        os.replace(tmp, final)
        if fsync:
            _fsync(final.parent)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full(final, getattr(exc, "needed", None)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(final: Path | str, data: bytes, fsync: bool = False) -> None:
    """Write `data` to `final` atomically."""
    with atomic_path(final, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text(final: Path | str, text: str, fsync: bool = False) -> None:
    """Write `text` to `final` atomically."""
    with atomic_path(final, fsync=fsync) as tmp:
        tmp.write_text(text)


def reserve(path: Path) -> None:
    """Allocate the disk blocks of `path`'s whole length now (posix_fallocate).

    A memory-mapped file is created sparse; on a full disk writing into it would kill the
    process with SIGBUS. Reserved first, a full disk is an OSError (ENOSPC) here instead. File
    systems that cannot reserve space are left as they are.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                exc.needed = size  # type: ignore[attr-defined]  (for disk_full's message)
                raise
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    finally:
        os.close(fd)


def open_memmap(path: Path, dtype, shape: tuple[int, ...]):
    """A new .npy file at `path` opened as a writable memmap, its disk space reserved."""
    import numpy as np

    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    reserve(path)
    return out
