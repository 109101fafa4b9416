"""Dataset formats: detection, the one loading entry point, and helpers the loaders share.

`load_dataset(root)` is what every command uses: it detects the format, returns the dataset
table of DESIGN.md, and raises `DataError` listing the problems when the data is unusable.
`read_dataset(root)` returns the table together with every problem found (for `data check`).
`open_image(path)` is the one place image files are opened (every failure, a decompression
bomb included, becomes one `ImageError` sentence); `open_rgb(path)` decodes through it
(RGBA/greyscale/16-bit become RGB).
"""

from __future__ import annotations

import csv
import importlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from skinclf.classes import CLASSES
from skinclf.data.table import DATASET_NAMES, TABLE_COLUMNS, empty_table
from skinclf.errors import ConfigError, DataError

FORMATS: tuple[str, ...] = DATASET_NAMES
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
ALLOWED_LABELS = ", ".join(CLASSES)
_SKIP_DIRS = {"__MACOSX", "__pycache__"}
# format -> (module, reader function)
_READERS: dict[str, tuple[str, str]] = {
    "ham10000": ("skinclf.data.ham10000", "read_ham10000"),
    "pad-ufes-20": ("skinclf.data.pad_ufes", "read_pad_ufes"),
    "isic2018": ("skinclf.data.isic2018", "read_isic2018"),
    "folder": ("skinclf.data.byo", "read_folder"),
    "csv": ("skinclf.data.byo", "read_csv_labels"),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, as one line naming the file, row and value."""

    level: Literal["error", "warning"]
    kind: str  # short code, e.g. "missing-image", "unknown-label" (groups lines in reports)
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class LoadResult:
    """A dataset table plus every problem found while reading it."""

    table: pd.DataFrame
    format: str
    root: Path
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]


def error(kind: str, message: str) -> Problem:
    return Problem("error", kind, message)


def warning(kind: str, message: str) -> Problem:
    return Problem("warning", kind, message)


# ---------------------------------------------------------------------------- images

MAX_PIXELS_ENV = "SKINCLF_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 180_000_000  # about Pillow's own hard limit (2 x 89.5 megapixels)
# The remedy ending the reason of an image over the limit: the variable works in every command
# (`data check` adds its --max-pixels option; the decode cache's error ends "and run again").
PIXEL_LIMIT_REMEDY = f"raise it with {MAX_PIXELS_ENV}=PIXELS"


class ImageError(DataError):
    """An image file that cannot be used; `reason` completes the sentence "PATH: image ..."."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: image {reason}.")


def max_image_pixels(value: int | str | None = None) -> int:
    """The largest width x height opened: `value`, else $SKINCLF_MAX_IMAGE_PIXELS, else 180 M."""
    source = "--max-pixels"
    if value is None:
        value = os.environ.get(MAX_PIXELS_ENV, "").strip() or DEFAULT_MAX_PIXELS
        source = MAX_PIXELS_ENV
    try:
        limit = int(float(value))
    except (TypeError, ValueError, OverflowError):
        limit = 0
    if limit < 1:
        raise ConfigError(
            f"{source} must be a positive number of pixels (e.g. 200000000), got {value!r}."
        )
    return limit


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.3g}"


# an image in memory: the encoded file's bytes, a Pillow image or a uint8 array (H, W[, 3|4])
ImageSource = str | Path | bytes | Image.Image | np.ndarray


@contextmanager
def open_image(
    path: str | Path | bytes, max_pixels: int | None = None, name: str = "the uploaded file"
) -> Iterator[Image.Image]:
    """`with open_image(path) as im:` the one place skinclf opens an image file.

    Any failure inside the block, decoding included, becomes one ImageError (a DataError):
    an empty file, not an image, truncated or corrupt data, or a header declaring more than
    `max_pixels` (default `max_image_pixels()`) pixels, refused before anything is decoded.
    This check replaces Pillow's, which prints a DecompressionBombWarning below twice its limit.
    `path` may also be the file's bytes (an upload), called `name` in the messages.
    """
    limit = max_image_pixels(max_pixels)
    Image.MAX_IMAGE_PIXELS = None  # the check below replaces Pillow's
    data = bytes(path) if isinstance(path, bytes | bytearray | memoryview) else None
    if data is not None:
        path = name
    try:
        if (len(data) if data is not None else os.path.getsize(path)) == 0:
            raise ImageError(path, "is empty (0 bytes)")
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            width, height = im.size
            if width * height > limit:
                raise ImageError(
                    path,
                    f"declares {width} x {height} pixels ({_megapixels(width * height)} "
                    f"megapixels), over the limit of {_megapixels(limit)} megapixels; "
                    + PIXEL_LIMIT_REMEDY,
                )
            yield im
    except (DataError, ConfigError):
        raise  # already one sentence (the ImageErrors above)
    except UnidentifiedImageError:
        raise ImageError(path, "is not a readable image file") from None
    except FileNotFoundError:
        raise ImageError(path, "does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or "broken data stream" in reason:
            raise ImageError(path, f"is truncated or corrupt ({reason})") from None
        raise ImageError(path, f"cannot be decoded ({reason})") from None
    except Exception as exc:  # corrupt data also raises EOFError, struct.error, IndexError, ...
        raise ImageError(path, decode_failure(exc)) from None


def decode_failure(exc: Exception) -> str:
    """The reason for an image that raised `exc` while decoding, naming the exception type."""
    kind = type(exc)
    name = kind.__qualname__  # struct.error is named `error`: qualify all but builtins
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"cannot be decoded ({name}{': ' + detail if detail else ''})"


def open_rgb(
    path: ImageSource,
    draft: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    name: str = "the uploaded file",
) -> Image.Image:
    """Decode an image as 8-bit RGB (EXIF rotation applied; alpha composited on white).

    `draft=(w, h)` lets JPEG decode at a reduced scale that is still at least w x h (faster
    when the image is resized down afterwards). Raises ImageError for a file it cannot use.
    `max_pixels`: see `open_image`. `path` may also be the file's bytes, a Pillow image or a
    uint8 array (H, W[, 3|4]), converted the same way (`name` names it in the messages).
    """
    if isinstance(path, np.ndarray):
        path = _array_image(path, name)
    if isinstance(path, Image.Image):
        try:
            return _rgb(path.copy())
        except Exception as exc:  # a lazily opened image whose data is damaged
            raise ImageError(name, decode_failure(exc)) from None
    with open_image(path, max_pixels, name) as im:
        if draft is not None and im.format == "JPEG":
            im.draft("RGB", draft)
        im.load()
        return _rgb(im)


def _array_image(array: np.ndarray, name: str) -> Image.Image:
    """A Pillow image of a uint8 array (H, W), (H, W, 3) or (H, W, 4); ImageError otherwise."""
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    if array.dtype != np.uint8 or not shape_ok or 0 in array.shape:
        raise ImageError(
            name, f"is a {array.dtype} array of shape {array.shape}, not uint8 (H, W[, 3|4])"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _rgb(im: Image.Image) -> Image.Image:
    """`im` (loaded) as 8-bit RGB: EXIF rotation applied, alpha composited on white."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im.copy()


def iter_image_files(root: Path) -> Iterable[Path]:
    """Image files under root (recursive, sorted; hidden and __MACOSX folders skipped)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath) / name


def image_index(root: Path, key: Literal["stem", "name"]) -> tuple[dict[str, Path], list[Problem]]:
    """Map each image's file stem (or full name) to its path, found anywhere under root.

    The same name in two folders (e.g. the Kaggle download's duplicated part folders) keeps
    the first path in sorted order and gives one warning.
    """
    index: dict[str, Path] = {}
    duplicates: list[tuple[Path, Path]] = []
    for path in iter_image_files(root):
        k = path.stem if key == "stem" else path.name
        if k in index:
            duplicates.append((index[k], path))
        else:
            index[k] = path
    problems = []
    if duplicates:
        first, again = duplicates[0]
        problems.append(
            warning(
                "duplicate-file",
                f"{len(duplicates)} image file(s) appear twice under {root} (e.g. {again} and "
                f"{first}); using the first copy of each.",
            )
        )
    return index, problems


# ---------------------------------------------------------------------------- CSV


def read_csv_file(
    path: Path, required: Sequence[str], what: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read a metadata CSV (comma- or tab-separated) as strings ("" for empty cells).

    Returns (None, [error]) when it is not a readable CSV or lacks a required column.
    Row i of the frame is line i + 2 of the file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [error("not-a-csv", f"{path}: cannot read the {what} ({exc.strerror}).")]
    if not raw.strip():
        return None, [error("not-a-csv", f"{path}: the {what} is empty.")]
    if b"\x00" in raw[:8192]:
        return None, [error("not-a-csv", f"{path}: the {what} is a binary file, not a CSV.")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    first = text.split("\n", 1)[0]
    sep = "\t" if first.count("\t") > first.count(",") else ","
    try:
        df = pd.read_csv(
            io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return None, [error("not-a-csv", f"{path}: the {what} is not a valid CSV ({reason}).")]
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        has = ", ".join(df.columns[:12]) + (", ..." if len(df.columns) > 12 else "")
        return None, [
            error(
                "missing-column",
                f"{path}: the {what} has no column {', '.join(missing)} (required: "
                f"{', '.join(required)}; found: {has}).",
            )
        ]
    return df.apply(lambda s: s.str.strip()), []


def line_no(i: int) -> int:
    """File line of data row i (the header is line 1)."""
    return i + 2


def duplicate_problems(ids: pd.Series, file: Path, column: str) -> list[Problem]:
    """One error per repeated value of `column`, naming both lines."""
    first: dict[str, int] = {}
    problems = []
    for i, value in enumerate(ids):
        if value in first:
            problems.append(
                error(
                    "duplicate-id",
                    f"{file} line {line_no(i)}: {column} {value!r} is duplicated (also on line "
                    f"{line_no(first[value])}); remove one of the rows.",
                )
            )
        else:
            first[value] = i
    return problems


def find_metadata(
    root: Path, names: Sequence[str], depth: int = 2, prefix: bool = False
) -> list[Path]:
    """Files named one of `names` (case-insensitive; prefix match if asked) at most `depth`
    folder levels below root, shallowest first."""
    wanted = [n.lower() for n in names]
    found: list[Path] = []
    level = [root]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for p in entries:
                if p.name.startswith(".") or p.name in _SKIP_DIRS:
                    continue
                if p.is_dir():
                    nxt.append(p)
                    continue
                low = p.name.lower()
                hit = any(low.startswith(w) for w in wanted) if prefix else low in wanted
                if hit and p.suffix.lower() not in IMAGE_EXTENSIONS | {".zip", ".gz", ".xlsx"}:
                    found.append(p)
        if found:
            return found
        level = nxt
    return found


# ---------------------------------------------------------------------------- table


def make_table(
    image_id: Sequence[str],
    path: Sequence[str],
    label: Sequence[str],
    group: Sequence[str],
    dataset: str,
    semantic_ood: Sequence[bool] | None = None,
    own: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Assemble the dataset table: TABLE_COLUMNS, then the dataset's own columns."""
    if len(image_id) == 0:
        table = empty_table()
    else:
        table = pd.DataFrame(
            {
                "image_id": pd.Series(list(image_id), dtype=str),
                "path": pd.Series(list(path), dtype=str),
                "label": pd.Series(list(label), dtype=str),
                "group": pd.Series(list(group), dtype=str),
                "dataset": dataset,
                "semantic_ood": np.asarray(
                    semantic_ood if semantic_ood is not None else [False] * len(image_id), bool
                ),
            }
        )
    if own is not None and len(own) == len(table):
        extra = own.drop(columns=[c for c in own.columns if c in TABLE_COLUMNS])
        table = pd.concat([table, extra.reset_index(drop=True)], axis=1)
    return table


def empty_to_missing(df: pd.DataFrame, numeric: Sequence[str] = ()) -> pd.DataFrame:
    """Official columns as pandas reads them: empty cells missing, `numeric` ones as numbers."""
    out = df.mask(df == "")
    for c in numeric:
        if c in out.columns:
            out[c] = pd.to_numeric(out[c], errors="coerce")
    return out


def label_problem(file: Path, i: int, column: str, value: str) -> Problem:
    shown = value if value else "(empty)"
    return error(
        "unknown-label",
        f"{file} line {line_no(i)}: {column} {shown!r} is not a class; allowed labels: "
        f"{ALLOWED_LABELS}.",
    )


def missing_image_problem(file: Path, i: int, column: str, value: str, root: Path) -> Problem:
    return error(
        "missing-image",
        f"{file} line {line_no(i)}: no image file for {column} {value!r} under {root}.",
    )


def extra_image_problems(paths: Iterable[Path], file: Path | None) -> list[Problem]:
    where = f"no row in {file.name}" if file is not None else "no class folder"
    return [warning("extra-image", f"{p}: image has {where}; ignored.") for p in paths]


# ---------------------------------------------------------------------------- entry points


def _looks_like(path: Path) -> str | None:
    """The format a single CSV's header points to, if any."""
    df, problems = read_csv_file(path, (), "file")
    if df is None:
        return None
    cols = set(df.columns)
    if {"image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"} <= cols:
        return "isic2018"
    if {"image_id", "dx"} <= cols:
        return "ham10000"
    if {"img_id", "diagnostic"} <= cols:
        return "pad-ufes-20"
    if "path" in cols:
        return "csv"
    return None


def detect_format(root: Path | str) -> str:
    """Guess a dataset's format from its files; DataError when it cannot tell."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist; give the folder (or CSV) of a dataset.")
    if root.is_file():
        kind = _looks_like(root)
        if kind is None:
            raise DataError(
                f"{root} is not a dataset CSV (expected HAM10000_metadata.csv, PAD-UFES-20 "
                "metadata.csv, an ISIC 2018 ground-truth CSV or a CSV with path,label columns)."
            )
        return kind
    if not any(root.iterdir()):
        raise DataError(f"{root} is an empty folder; put a dataset there or give another path.")
    # Official file names first (so a broken official file is reported by its loader).
    if find_metadata(root, ["HAM10000_metadata"], prefix=True):
        return "ham10000"
    pad = find_metadata(root, ["metadata.csv"])
    if pad and (_looks_like(pad[0]) in (None, "pad-ufes-20")):
        return "pad-ufes-20"
    for p in find_metadata(root, ["ISIC2018_Task3"], prefix=True):
        if "groundtruth" in p.name.lower() and p.suffix.lower() == ".csv":
            return "isic2018"
    top_csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    for p in top_csvs:
        kind = _looks_like(p)
        if kind is not None:
            return kind
    if any(p.is_dir() and p.name.lower() in CLASSES for p in root.iterdir()):
        return "folder"
    if len(top_csvs) == 1:  # a labels CSV the csv loader can explain what is wrong with
        return "csv"
    raise DataError(
        f"cannot tell the format of {root}: expected HAM10000_metadata.csv, PAD-UFES-20 "
        "metadata.csv, an ISIC 2018 ground-truth CSV, a CSV with path,label columns, or one "
        f"folder per class ({ALLOWED_LABELS}); pass --format to say which."
    )


def read_dataset(root: Path | str, format: str = "auto") -> LoadResult:
    """Read a dataset in any format, collecting every problem instead of stopping at one.

    Raises DataError only when there is nothing to read (no such path, empty folder,
    unknown format).
    """
    root = Path(root)
    if format not in ("auto", *FORMATS):
        raise DataError(f"unknown format {format!r}; use one of auto, {', '.join(FORMATS)}.")
    if not root.exists():
        raise DataError(f"{root} does not exist; give the folder (or CSV) of a dataset.")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"{root} is an empty folder; put a dataset there or give another path.")
    fmt = detect_format(root) if format == "auto" else format
    module, func = _READERS[fmt]
    result: LoadResult = getattr(importlib.import_module(module), func)(root)
    return result


def raise_for_problems(result: LoadResult, max_listed: int = 5) -> pd.DataFrame:
    """The table, or DataError naming the first errors when there are any."""
    errors = result.errors
    if not errors:
        return result.table
    listed = "; ".join(p.message for p in errors[:max_listed])
    more = f" (and {len(errors) - max_listed} more)" if len(errors) > max_listed else ""
    raise DataError(
        f"{result.root} ({result.format}) is not usable, {len(errors)} error(s): {listed}{more}. "
        f"Run `skinclf data check {result.root}` to see every problem."
    )


def load_dataset(root: Path | str, format: str = "auto") -> pd.DataFrame:
    """The dataset table of DESIGN.md for any supported format (DataError if unusable)."""
    return raise_for_problems(read_dataset(root, format))
