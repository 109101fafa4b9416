"""The predictions file (DESIGN.md): write it, read it back, and reject bad ones clearly.

Schema, one row per image: `image_id, dataset, label, semantic_ood, logit_<class>...,
prob_<class>...`, then optional `conf_<score>` columns (higher = more confident), then, only
when a selective classifier was applied, `abstain` and `abstain_reason` (`unfamiliar`: the
out-of-distribution gate; `uncertain`: the confidence gate; empty when accepted), then
the optional `image_path` (the image file predict read) and `meta_<name>` columns (the dataset's
metadata as written, e.g. `meta_age`, `meta_sex`, `meta_fitspatrick`; empty where missing).
Classes are in `skinclf.classes.CLASSES` order.
An empty `label` is allowed only where `semantic_ood` is true (unless labels are not required,
as for predictions on unlabelled images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax as scipy_softmax

from skinclf.atomic import atomic_path
from skinclf.classes import CLASS_TO_INDEX, CLASSES
from skinclf.errors import DataError

BASE_COLUMNS: tuple[str, ...] = ("image_id", "dataset", "label", "semantic_ood")
LOGIT_COLUMNS: tuple[str, ...] = tuple(f"logit_{c}" for c in CLASSES)
PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{c}" for c in CLASSES)
PROB_SUM_TOLERANCE = 1e-3

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
_MISSING = {"", "nan", "na", "n/a", "none", "null"}
IMAGE_PATH_COLUMN = "image_path"
META_PREFIX = "meta_"


@dataclass
class Predictions:
    """A predictions file in memory; `y` is the class index, -1 where the label is empty."""

    image_ids: np.ndarray
    dataset: np.ndarray
    y: np.ndarray
    semantic_ood: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    conf: dict[str, np.ndarray] = field(default_factory=dict)
    abstain: np.ndarray | None = None
    path: Path | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # strings, "" where missing
    image_path: np.ndarray | None = None  # the image files predict read ("" where unknown)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def pred(self) -> np.ndarray:
        """Predicted class index (arg-max probability)."""
        return self.probs.argmax(axis=1)

    @property
    def labelled(self) -> np.ndarray:
        """Rows with a class label that is not semantic out-of-distribution."""
        return (self.y >= 0) & ~self.semantic_ood

    def subset(self, mask: np.ndarray) -> Predictions:
        """The rows where `mask` is true (boolean mask or index array)."""
        return Predictions(
            image_ids=self.image_ids[mask],
            dataset=self.dataset[mask],
            y=self.y[mask],
            semantic_ood=self.semantic_ood[mask],
            logits=self.logits[mask],
            probs=self.probs[mask],
            conf={k: v[mask] for k, v in self.conf.items()},
            abstain=None if self.abstain is None else self.abstain[mask],
            path=self.path,
            meta={k: v[mask] for k, v in self.meta.items()},
            image_path=None if self.image_path is None else self.image_path[mask],
        )


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature` (scipy `softmax`, max-shifted, stable)."""
    return scipy_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


def _labels_to_strings(labels: Sequence[str | None] | np.ndarray, n: int) -> list[str]:
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries, expected {n}")
    as_array = np.asarray(labels)
    if n and np.issubdtype(as_array.dtype, np.integer):
        return [CLASSES[int(i)] if int(i) >= 0 else "" for i in as_array]
    arr = np.asarray(labels, dtype=object)
    out = []
    for v in arr:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("")
        else:
            out.append(str(v))
    return out


def _strings(values: Sequence[object] | np.ndarray, n: int, what: str) -> list[str]:
    """Text cells: "" where missing, whole floats without ".0" (an age of 45.0 is "45")."""
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries, expected {n}")
    out = []
    for v in values:
        if v is None or (not isinstance(v, str) and bool(pd.isna(v))):  # NaN, pd.NA
            out.append("")
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


@dataclass(frozen=True)
class ImageRows:
    """Which images a predictions file speaks of, one entry per row: `image_ids`, `dataset`
    (one name for all rows, or one per row), `labels` (class names, "" or None for none, or
    class indices, -1 for none), `semantic_ood`, and optionally each row's `image_path` (the
    image file predict read) and `meta` (a metadata name -> its values; the `meta_<name>`
    columns, as text)."""

    image_ids: Sequence[str] | np.ndarray
    dataset: str | Sequence[str] | np.ndarray
    labels: Sequence[str | None] | np.ndarray
    semantic_ood: Sequence[bool] | np.ndarray
    image_path: Sequence[str] | np.ndarray | None = None
    meta: Mapping[str, Sequence[object] | np.ndarray] | None = None


def write_predictions(
    path: str | Path,
    rows: ImageRows,
    logits: np.ndarray,
    probs: np.ndarray | None = None,
    conf: Mapping[str, np.ndarray] | None = None,
    abstain: Sequence[bool] | np.ndarray | None = None,
    abstain_reason: Sequence[str] | np.ndarray | None = None,
) -> Path:
    """Write a predictions file of the images `rows` atomically (temp file + rename) and
    return its path.

    `probs` defaults to the softmax of `logits`; `conf` maps a score name to its values;
    `abstain` and `abstain_reason`: a selective classifier's decisions.
    """
    path = Path(path)
    logits = np.asarray(logits, dtype=np.float64)
    n = len(rows.image_ids)
    if logits.shape != (n, len(CLASSES)):
        raise ValueError(f"logits must have shape ({n}, {len(CLASSES)}), got {logits.shape}")
    probs = softmax(logits) if probs is None else np.asarray(probs, dtype=np.float64)
    if probs.shape != logits.shape:
        raise ValueError(f"probs must have shape {logits.shape}, got {probs.shape}")
    dataset = rows.dataset
    datasets = [dataset] * n if isinstance(dataset, str) else list(dataset)
    columns: dict[str, object] = {
        "image_id": list(rows.image_ids),
        "dataset": datasets,
        "label": _labels_to_strings(rows.labels, n),
        "semantic_ood": [bool(s) for s in np.asarray(rows.semantic_ood)],
    }
    for j, c in enumerate(LOGIT_COLUMNS):
        columns[c] = logits[:, j]
    for j, c in enumerate(PROB_COLUMNS):
        columns[c] = probs[:, j]
    for name, values in (conf or {}).items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError(f"conf[{name!r}] must have shape ({n},), got {values.shape}")
        columns[f"conf_{name}"] = values
    if abstain is not None:
        columns["abstain"] = [bool(a) for a in np.asarray(abstain)]
    if abstain_reason is not None:
        columns["abstain_reason"] = [str(r) for r in np.asarray(abstain_reason, dtype=object)]
    if rows.image_path is not None:
        columns[IMAGE_PATH_COLUMN] = _strings(rows.image_path, n, "image_path")
    for name, values in (rows.meta or {}).items():
        columns[f"{META_PREFIX}{name}"] = _strings(values, n, f"meta[{name!r}]")
    frame = pd.DataFrame(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        frame.to_csv(fh, index=False)
    return path


def save_predictions(path: str | Path, p: Predictions) -> Path:
    """Write `p` (its labels, logits, probabilities, scores, image paths and metadata)."""
    rows = ImageRows(p.image_ids, p.dataset, p.y, p.semantic_ood, p.image_path, p.meta or None)
    return write_predictions(path, rows, p.logits, p.probs, p.conf)


def _row(i: int) -> str:
    """The 1-based line number in the CSV (the header is line 1)."""
    return f"line {i + 2}"


def _parse_bool(values: pd.Series, column: str, path: Path) -> np.ndarray:
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values.fillna("").astype(str).str.strip().str.lower()):
        if v in _TRUE:
            out[i] = True
        elif v not in _FALSE:
            raise DataError(
                f"{path}: {_row(i)}: column '{column}' has {values.iloc[i]!r}, expected true or "
                "false."
            )
    return out


def _float_block(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    block = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        raw = frame[c].astype(str).str.strip()
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            text = raw.iloc[i]
            if text.lower() in _MISSING:
                why = "is empty or NaN; predictions must be finite numbers"
            elif np.isnan(values[i]):
                why = f"has {text!r}, which is not a number"
            else:
                why = f"is {text!r}; predictions must be finite numbers"
            raise DataError(f"{path}: {_row(i)}: column '{c}' {why}.")
        block[:, j] = values
    return block


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such predictions file.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: the predictions file is empty; write one with `skinclf predict`."
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"{path}: is not a readable CSV predictions file ({str(exc).splitlines()[0]})."
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _check_columns(frame: pd.DataFrame, path: Path) -> tuple[bool, bool]:
    """Raise on missing columns or no rows; return whether all logits / all probs are there."""
    missing = [c for c in BASE_COLUMNS if c not in frame.columns]
    has_logits = [c in frame.columns for c in LOGIT_COLUMNS]
    has_probs = [c in frame.columns for c in PROB_COLUMNS]
    if not any(has_logits) and not any(has_probs):
        missing += list(LOGIT_COLUMNS) + list(PROB_COLUMNS)
    else:
        for names, has in ((LOGIT_COLUMNS, has_logits), (PROB_COLUMNS, has_probs)):
            if any(has) and not all(has):
                missing += [c for c, h in zip(names, has, strict=True) if not h]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; a predictions file needs "
            f"{', '.join(BASE_COLUMNS)}, logit_<class> and prob_<class> for "
            f"{', '.join(CLASSES)}."
        )
    if len(frame) == 0:
        raise DataError(f"{path}: the predictions file has a header but no rows.")
    return all(has_logits), all(has_probs)


def _image_ids(frame: pd.DataFrame, path: Path) -> np.ndarray:
    image_ids = frame["image_id"].astype(str).to_numpy(dtype=object)
    duplicated = pd.Series(image_ids).duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"{path}: {_row(i)}: image_id {image_ids[i]!r} appears more than once.")
    return image_ids


def _class_indices(
    frame: pd.DataFrame,
    image_ids: np.ndarray,
    semantic_ood: np.ndarray,
    require_labels: bool,
    path: Path,
) -> np.ndarray:
    """Class index per row, -1 where the label is empty."""
    labels = frame["label"].astype(str).str.strip().str.lower().to_numpy()
    y = np.full(len(frame), -1, dtype=np.int64)
    for i, label in enumerate(labels):
        if label == "":
            if require_labels and not semantic_ood[i]:
                raise DataError(
                    f"{path}: {_row(i)}: empty label for image {image_ids[i]!r}; an empty label "
                    "is allowed only where semantic_ood is true."
                )
            continue
        if label not in CLASS_TO_INDEX:
            raise DataError(
                f"{path}: {_row(i)}: label {frame['label'].iloc[i]!r} is not one of "
                f"{', '.join(CLASSES)} (leave it empty for semantic_ood rows)."
            )
        y[i] = CLASS_TO_INDEX[label]
    return y


def _probabilities(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """The prob_<class> block, each in [0, 1] and each row summing to 1 within tolerance."""
    probs = _float_block(frame, PROB_COLUMNS, path)
    if ((probs < 0) | (probs > 1)).any():
        i, j = (int(k[0]) for k in np.nonzero((probs < 0) | (probs > 1)))
        raise DataError(
            f"{path}: {_row(i)}: {PROB_COLUMNS[j]} = {probs[i, j]:g} is not a probability "
            "in [0, 1]."
        )
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROB_SUM_TOLERANCE
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {_row(i)}: the prob_<class> columns sum to {sums[i]:.6g}, not 1 "
            f"(tolerance {PROB_SUM_TOLERANCE:g}); write softmax probabilities."
        )
    return probs


def _logits_and_probs(
    frame: pd.DataFrame, has_logits: bool, has_probs: bool, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Both blocks; a missing one is derived (softmax, or log probabilities)."""
    probs = _probabilities(frame, path) if has_probs else None
    logits = _float_block(frame, LOGIT_COLUMNS, path) if has_logits else None
    if probs is None:
        probs = softmax(logits)
    if logits is None:
        logits = np.log(np.clip(probs, 1e-12, None))
    return logits, probs


def _conf(frame: pd.DataFrame, path: Path) -> dict[str, np.ndarray]:
    conf_columns = [c for c in frame.columns if c.startswith("conf_") and len(c) > 5]
    conf_block = _float_block(frame, conf_columns, path) if conf_columns else None
    return {c[5:]: conf_block[:, j] for j, c in enumerate(conf_columns)}


def _text_columns(frame: pd.DataFrame) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The optional image_path column and the meta_<name> columns, as stripped strings."""

    def text(column: str) -> np.ndarray:
        return frame[column].astype(str).str.strip().to_numpy(dtype=object)

    image_path = text(IMAGE_PATH_COLUMN) if IMAGE_PATH_COLUMN in frame else None
    prefix = len(META_PREFIX)
    meta = {
        c[prefix:]: text(c) for c in frame.columns if c.startswith(META_PREFIX) and len(c) > prefix
    }
    return image_path, meta


def read_predictions(path: str | Path, require_labels: bool = True) -> Predictions:
    """Read and validate a predictions file; raise DataError naming file, line and value.

    A file may carry only `logit_*` or only `prob_*` columns (predictions from another
    model): the missing set is derived (probabilities = softmax, logits = log probabilities).
    With `require_labels=False`, empty labels are allowed on any row (unlabelled images).
    """
    path = Path(path)
    frame = _read_frame(path)
    has_logits, has_probs = _check_columns(frame, path)
    image_ids = _image_ids(frame, path)
    semantic_ood = _parse_bool(frame["semantic_ood"], "semantic_ood", path)
    y = _class_indices(frame, image_ids, semantic_ood, require_labels, path)
    logits, probs = _logits_and_probs(frame, has_logits, has_probs, path)
    conf = _conf(frame, path)
    abstain = _parse_bool(frame["abstain"], "abstain", path) if "abstain" in frame else None
    image_path, meta = _text_columns(frame)
    return Predictions(
        image_ids=image_ids,
        dataset=frame["dataset"].astype(str).to_numpy(dtype=object),
        y=y,
        semantic_ood=semantic_ood,
        logits=logits,
        probs=probs,
        conf=conf,
        abstain=abstain,
        path=path,
        meta=meta,
        image_path=image_path,
    )
