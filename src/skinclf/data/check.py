"""`skinclf data check`: validate a dataset in one pass and summarise it.

Reads the metadata with the format's loader (collecting every problem), then opens every
image (header + a real decode, which catches truncated files) in parallel threads.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from skinclf.classes import CLASSES
from skinclf.data.formats import (
    ImageError,
    LoadResult,
    Problem,
    error,
    max_image_pixels,
    open_image,
    read_dataset,
)
from skinclf.data.table import empty_table
from skinclf.errors import DataError

GROUP_NAMES = {"ham10000": "lesion_id", "pad-ufes-20": "patient_id"}


@dataclass
class CheckResult:
    """What `check_dataset` found: the table, every problem, and a summary."""

    root: Path
    format: str
    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    @property
    def usable(self) -> bool:
        """True when there is at least one image and no error."""
        return not self.errors and self.summary.get("images_found", 0) > 0


def verify_image(
    path: str, max_pixels: int | None = None
) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """(size, mode, problem) for one image file: opens the header and decodes the pixels.

    JPEGs decode at 1/8 scale (DCT scaling): every byte is still read, so truncation is
    caught, at a fraction of the cost. `max_pixels`: see `formats.open_image`.
    """
    try:
        with open_image(path, max_pixels) as im:
            size, mode = im.size, im.mode
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
        return size, mode, None
    except ImageError as exc:
        return None, None, exc.reason


def _verify_all(paths: list[str], progress: bool, max_pixels: int | None = None) -> list[tuple]:
    workers = min(8, (os.cpu_count() or 1) * 2)
    verify = partial(verify_image, max_pixels=max_image_pixels(max_pixels))
    if not progress:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(verify, paths, chunksize=32))
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    results = []
    columns = (
        TextColumn("checking images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task("images", total=len(paths))
        for r in pool.map(verify, paths, chunksize=32):
            results.append(r)
            bar.advance(task)
    return results


def summarise(table: pd.DataFrame, fmt: str) -> dict[str, Any]:
    """Rows, images found, count per class, groups, semantic-OOD rows (no image decoding)."""
    found = table[table.path != ""]
    counts = found.label.value_counts()
    groups = found.groupby("group").size() if len(found) else pd.Series(dtype=int)
    return {
        "dataset": fmt,
        "rows": len(table),
        "images_found": len(found),
        "class_counts": {c: int(counts.get(c, 0)) for c in CLASSES},
        "unlabelled": int((found.label == "").sum()),
        "semantic_ood": int(found.semantic_ood.sum()),
        "group_column": GROUP_NAMES.get(fmt, "group"),
        "groups": int(len(groups)),
        "images_per_group": {int(k): int(v) for k, v in groups.value_counts().sort_index().items()},
    }


def check_dataset(
    root: Path | str,
    format: str = "auto",
    verify_images: bool = True,
    progress: bool = True,
    max_pixels: int | None = None,
) -> CheckResult:
    """Validate a dataset in one pass: every problem (errors and warnings) plus a summary.

    Never raises for bad data: a missing path, empty folder or unknown format becomes one
    error in the result. `max_pixels`: the largest image accepted (`formats.max_image_pixels`).
    """
    root = Path(root)
    try:
        loaded: LoadResult = read_dataset(root, format)
    except DataError as exc:
        result = CheckResult(root, format, empty_table(), [error("unreadable", str(exc))])
        result.summary = summarise(result.table, format)
        return result
    result = CheckResult(root, loaded.format, loaded.table, list(loaded.problems))
    result.summary = summarise(loaded.table, loaded.format)
    if not verify_images:
        return result
    table = loaded.table
    paths = [p for p in table.path if p]
    checked = dict(zip(paths, _verify_all(paths, progress, max_pixels), strict=True))
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    bad = 0
    for path, (size, mode, problem) in checked.items():
        if problem is not None:
            bad += 1
            result.problems.append(error("bad-image", f"{path}: image {problem}."))
        else:
            sizes[f"{size[0]}x{size[1]}"] += 1
            modes[mode] += 1
    result.summary.update(
        images_readable=len(checked) - bad,
        image_sizes=dict(sizes.most_common()),
        image_modes=dict(modes.most_common()),
    )
    return result
