"""Per-class logit offsets as a model carries them: `logit_offsets.json` (`write_offsets` /
`read_offsets`) and `apply_offsets`, the first step from a model's logits to its decision.
Fitting them (balanced accuracy on labelled predictions) is `skinclf.evaluate.offsets`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skinclf.classes import CLASSES
from skinclf.errors import DataError

OFFSETS_FILE = "logit_offsets.json"


def apply_offsets(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`logits + offsets` (one offset per class, in CLASSES order)."""
    return np.asarray(logits, dtype=np.float64) + np.asarray(offsets, dtype=np.float64)[None, :]


def write_offsets(path: Path | str, offsets: np.ndarray, fitted_on: str, n: int) -> Path:
    """`logit_offsets.json`: {"offsets": {class: value}, "fitted_on": ..., "n": ...}."""
    from skinclf.atomic import write_text

    body = {
        "offsets": {c: float(v) for c, v in zip(CLASSES, offsets, strict=True)},
        "fitted_on": fitted_on,
        "n": int(n),
    }
    path = Path(path)
    write_text(path, json.dumps(body, indent=2) + "\n")
    return path


def read_offsets(path: Path | str) -> np.ndarray:
    """The offsets of a `logit_offsets.json`, in CLASSES order; DataError naming the file when
    it is not one."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())["offsets"]
        return np.array([float(values[c]) for c in CLASSES])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path} is not a logit offsets file (a JSON object with an offset for each of "
            f"{', '.join(CLASSES)}): {exc}."
        ) from None
