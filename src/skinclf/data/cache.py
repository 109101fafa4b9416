"""Decode cache: every image decoded and resized once into a memory-mapped uint8 array.

Layout under ``cache_dir`` (DESIGN.md "Caches")::

    decoded/<stem>.npy    (N, size, size, 3) uint8, rows in image_id order
    decoded/<stem>.json   index: image_ids (row order), size, resize, key, n
    decoded/<stem>.lock   the lock builders hold

``<stem>`` is ``{size}px-{resize}-{key}``; ``key`` hashes every source file's image_id and the
sha256 of its bytes, plus the size, resize policy and pixel limit, so a changed source file
gives a new key (a rebuild) and the same images reuse the cache wherever they lie and whenever
they were copied (unless an image it recorded as unreadable decodes now). Files are written
under a temporary name and renamed into place (``.npy`` first, then ``.json``, which marks
completion) while a file lock is held, so parallel workers and DDP ranks never see half a file
and only one of them decodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock
from PIL import Image

from skinclf import atomic
from skinclf.data.formats import (
    PIXEL_LIMIT_REMEDY,
    ImageError,
    ImageSource,
    decode_failure,
    max_image_pixels,
    open_rgb,
)
from skinclf.digests import file_sha256
from skinclf.errors import ConfigError, DataError
from skinclf.faults import fault_point

RESIZE_POLICIES: tuple[str, ...] = ("squash", "center-crop")
CACHE_FORMAT_VERSION = 1
_SUBDIR = "decoded"


def default_cache_dir() -> Path:
    """``$SKINCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/skinclf``, else ``~/.cache/skinclf``."""
    env = os.environ.get("SKINCLF_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "skinclf"


def decode_image(
    path: ImageSource,
    size: int,
    resize: str = "squash",
    name: str = "the uploaded file",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to RGB and resize to ``(size, size, 3)`` uint8.

    ``squash``: plain resize of the whole image; ``center-crop``: the centred square of side
    min(width, height), resized. Decoding goes through ``formats.open_rgb`` (JPEGs at a reduced
    DCT scale that is still at least ``size`` on both sides); the resize is bicubic with
    antialiasing, with ``reducing_gap`` for speed on large sources. ``path`` may also be an
    image in memory (the file's bytes, a Pillow image, a uint8 array), called ``name``.
    ``max_pixels``: the largest declared image accepted (default: ``max_image_pixels()``).
    """
    img = open_rgb(path, draft=(size, size), max_pixels=max_pixels, name=name)
    w, h = img.size
    if resize == "center-crop":
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        box = (left, top, left + side, top + side)
    elif resize == "squash":
        box = (0, 0, w, h)
    else:
        raise ConfigError(f"Unknown resize policy {resize!r}; use squash or center-crop.")
    if img.size != (size, size) or box != (0, 0, w, h):
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.array(img, dtype=np.uint8)  # a writable copy


class DecodedImages:
    """A built cache: ``images`` (read-only memmap, N x H x W x 3 uint8) and its index.

    ``image_ids`` gives the row order, ``key`` the content hash, ``path`` the ``.npy`` file,
    ``build_seconds`` the decode time when this call built it (None when reused),
    ``unreadable`` {image_id: reason} of the images that could not be decoded (their rows are
    black; only a cache built with ``skip_unreadable=True`` has any).

    Pickles cheaply (the memmap is reopened, not copied), so DataLoader workers can use it.
    """

    def __init__(
        self,
        path: Path,
        image_ids: Sequence[str],
        key: str,
        size: int,
        resize: str,
        unreadable: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.image_ids: list[str] = [str(i) for i in image_ids]
        self.key = key
        self.size = size
        self.resize = resize
        self.unreadable: dict[str, str] = dict(unreadable or {})
        self._row_of = {iid: r for r, iid in enumerate(self.image_ids)}
        self.build_seconds: float | None = None  # set when this call decoded (not reused)
        self.images: np.memmap = self._open()

    def _open(self) -> np.memmap:
        images = np.load(self.path, mmap_mode="r")
        expected = (len(self.image_ids), self.size, self.size, 3)
        if images.shape != expected or images.dtype != np.uint8:
            raise DataError(
                f"Cache file {self.path} holds {images.dtype} {images.shape}, expected uint8 "
                f"{expected}; delete it and build the cache again."
            )
        return images

    @classmethod
    def open(cls, path: Path | str) -> DecodedImages:
        """Open a finished cache from its ``.npy`` path (the ``.json`` index must be beside it)."""
        path = Path(path)
        index = json.loads(path.with_suffix(".json").read_text())
        return cls(
            path,
            index["image_ids"],
            index["key"],
            index["size"],
            index["resize"],
            index.get("unreadable"),
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["images"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.images = self._open()

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row indices (int64) of ``image_ids`` in ``images``."""
        try:
            return np.fromiter((self._row_of[str(i)] for i in image_ids), dtype=np.int64)
        except KeyError as exc:
            raise DataError(
                f"image_id {exc.args[0]!r} is not in the decode cache {self.path}; "
                "build the cache from the same dataset table."
            ) from None

    def mean_std(self, rows: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Per-channel (R, G, B) mean and standard deviation in 0-1 units over ``rows``."""
        idx = np.arange(len(self)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        if idx.size == 0:
            raise DataError("mean_std needs at least one image.")
        hist = np.zeros((3, 256), dtype=np.int64)  # exact: a histogram of byte values
        for start in range(0, idx.size, 256):
            block = np.asarray(self.images[idx[start : start + 256]])
            for c in range(3):
                hist[c] += np.bincount(block[..., c].ravel(), minlength=256)
        values = np.arange(256, dtype=np.float64) / 255.0
        n = hist.sum(axis=1)
        mean = (hist * values).sum(axis=1) / n
        var = (hist * values**2).sum(axis=1) / n - mean**2
        return mean, np.sqrt(np.maximum(var, 0.0))


def cache_key(table: pd.DataFrame, size: int, resize: str) -> str:
    """Hash of the sources (image_id and the sha256 of the bytes of each), size and policy, and
    the pixel limit (`formats.max_image_pixels`: it decides which images are unreadable)."""
    head = f"skinclf-decoded-v{CACHE_FORMAT_VERSION}\n{size}\n{resize}\n{max_image_pixels()}\n"
    h = hashlib.sha256(head.encode())
    for iid, path in sorted(zip(table["image_id"].astype(str), table["path"], strict=True)):
        try:
            content = file_sha256(path)
        except OSError as err:
            what = "does not exist" if isinstance(err, FileNotFoundError) else "cannot be read"
            raise DataError(
                f"Image {Path(path).resolve()} (image_id {iid!r}) {what}; run `skinclf data check`."
            ) from None
        h.update(f"{iid}\t{content}\n".encode())
    return h.hexdigest()[:24]


def _check(table: pd.DataFrame, size: int, resize: str) -> None:
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"Unknown resize policy {resize!r}; use squash or center-crop.")
    if size < 1:
        raise ConfigError(f"The cache size must be a positive number of pixels, got {size}.")
    missing = [c for c in ("image_id", "path") if c not in table.columns]
    if missing:
        raise DataError(f"The dataset table lacks the column(s) {missing}.")
    if table.empty:
        raise DataError("The dataset table has no images to cache.")
    dup = table["image_id"][table["image_id"].duplicated()]
    if not dup.empty:
        raise DataError(f"image_id {dup.iloc[0]!r} appears more than once in the dataset table.")


def _finished(npy: Path) -> DecodedImages | None:
    if not (npy.is_file() and npy.with_suffix(".json").is_file()):
        return None
    try:
        return DecodedImages.open(npy)
    except (DataError, ValueError, OSError, KeyError):
        return None  # damaged: rebuild


def build_cache(
    table: pd.DataFrame,
    size: int,
    resize: str = "squash",
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    skip_unreadable: bool = False,
) -> DecodedImages:
    """Decode and resize every image of ``table`` once, or reuse the cache built before.

    Rows of the cache are in sorted ``image_id`` order (use ``.rows(ids)``). ``workers``
    decoding threads (default: CPU count, at most 8). Raises DataError for a missing or
    undecodable image, naming it; with ``skip_unreadable`` (inference) an undecodable image
    instead gets a black row and its reason in ``.unreadable``. A cache holding unreadable
    images is refused when ``skip_unreadable`` is false (training never uses one); it is
    rebuilt when one of those images decodes now.
    """
    _check(table, size, resize)
    key = cache_key(table, size, resize)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / _SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{size}px-{resize}-{key}"
    npy = folder / f"{stem}.npy"

    done = _still_valid(_finished(npy), table, size, resize)
    if done is not None:
        return _refuse_unreadable(done, table) if not skip_unreadable else done
    with FileLock(str(folder / f"{stem}.lock")):
        # another process may have built it while we waited
        done = _still_valid(_finished(npy), table, size, resize)
        if done is not None:
            return _refuse_unreadable(done, table) if not skip_unreadable else done
        ordered = table.assign(image_id=table["image_id"].astype(str)).sort_values("image_id")
        ids = ordered["image_id"].tolist()
        start = time.perf_counter()
        failed = _write(
            npy, ordered["path"].tolist(), size, resize, workers, progress, skip_unreadable
        )
        seconds = time.perf_counter() - start
        unreadable = {ids[i]: reason for i, reason in sorted(failed.items())}
        index = {"key": key, "size": size, "resize": resize, "n": len(ids), "image_ids": ids}
        if unreadable:
            index["unreadable"] = unreadable
        atomic.write_text(npy.with_suffix(".json"), json.dumps(index))
    built = DecodedImages(npy, ids, key, size, resize, unreadable)
    built.build_seconds = seconds
    return built


def _still_valid(
    done: DecodedImages | None, table: pd.DataFrame, size: int, resize: str
) -> DecodedImages | None:
    """``done``, or None (rebuild it) when an image it recorded as unreadable decodes now.

    Whether an image decodes can change without its file changing (its permissions, the
    Pillow version), so the few unreadable images of a reused cache are tried again.
    """
    if done is None or not done.unreadable:
        return done
    paths = dict(zip(table["image_id"].astype(str), table["path"], strict=True))
    for image_id in done.unreadable:
        if image_id not in paths:
            continue
        try:
            decode_image(paths[image_id], size, resize)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001  (still unreadable, whatever the reason)
            continue
        return None
    return done


def _refuse_unreadable(done: DecodedImages, table: pd.DataFrame) -> DecodedImages:
    """``done``, or the DataError a fresh build would raise when it holds unreadable images."""
    if not done.unreadable:
        return done
    image_id, reason = next(iter(done.unreadable.items()))
    paths = dict(zip(table["image_id"].astype(str), table["path"], strict=True))
    raise _decode_error(paths.get(image_id, image_id), reason)


def _write(
    npy: Path,
    paths: list,
    size: int,
    resize: str,
    workers: int | None,
    progress: bool,
    skip_unreadable: bool = False,
) -> dict[int, str]:
    """Decode into a temporary .npy beside ``npy``, then rename it into place.

    Returns {row: reason} of the images skipped as unreadable (only with ``skip_unreadable``).
    """
    with atomic.atomic_path(npy) as tmp:
        out = atomic.open_memmap(tmp, np.uint8, (len(paths), size, size, 3))
        n_workers = workers or min(8, os.cpu_count() or 1)
        failed = _fill(out, paths, size, resize, n_workers, progress, skip_unreadable)
        out.flush()
        del out
    return failed


def _decode_error(path: str, reason: str) -> DataError:
    # one remedy: the reason of an image over the pixel limit already says how to raise it
    remedy = "; fix or remove it and run again"
    if PIXEL_LIMIT_REMEDY in reason:
        remedy = " and run again"
    return DataError(f"Cannot decode image {path}: the file {reason}{remedy}.")


def _fill(
    out: np.ndarray,
    paths: list,
    size: int,
    resize: str,
    workers: int,
    progress: bool,
    skip_unreadable: bool = False,
) -> dict[int, str]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    failed: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            out[i] = decode_image(paths[i], size, resize)
            return
        except ImageError as exc:
            reason = exc.reason
        except ConfigError:
            raise
        except Exception as exc:  # e.g. the resize of a corrupt image (not BaseException)
            reason = decode_failure(exc)
        if not skip_unreadable:
            raise _decode_error(paths[i], reason)
        out[i] = 0
        failed[i] = reason

    bar = Progress(
        TextColumn("decoding {task.fields[what]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        with bar:
            what = f"{len(paths)} images at {size}px ({resize})"
            task = bar.add_task("decode", total=len(paths), what=what)
            for _ in pool.map(work, range(len(paths))):
                bar.advance(task)
                fault_point("decode-cache")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # stop early after a bad image
    return failed
