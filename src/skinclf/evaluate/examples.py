"""The report's example images of the chosen policy: per set, a few accepted images and a few
rejected ones per reason (`unfamiliar`, `uncertain`), as small JPEG thumbnails embedded as
base64 (the report stays one file; no image is written anywhere else).

The images are picked deterministically: evenly spaced by the policy's confidence score, from
the lowest to the highest of each group. They are read from the predictions file's
`image_path` column; when the files are not there (predictions from elsewhere, or moved), the
set gets a one-sentence note instead.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions
from skinclf.contracts.selective import UNCERTAIN, UNFAMILIAR, Selective

if TYPE_CHECKING:
    from skinclf.evaluate.figures import ScoredSet

THUMB = 96  # pixels, square
PER_GROUP = 8
GROUPS: tuple[str, ...] = ("accepted", UNFAMILIAR, UNCERTAIN)


def pick(rows: np.ndarray, conf: np.ndarray, n: int) -> np.ndarray:
    """Up to `n` of `rows`, evenly spaced by `conf` from the lowest to the highest (ties in row
    order), so the same files always give the same images."""
    rows = np.asarray(rows, dtype=np.int64)
    order = rows[np.argsort(conf[rows], kind="stable")]
    if len(order) <= n:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, n).round().astype(np.int64))]


def thumbnail(path: str, size: int = THUMB) -> str | None:
    """A centre-cropped `size` px JPEG of the image file, base64; None if it cannot be read."""
    from PIL import ImageOps

    from skinclf.data.formats import open_rgb

    try:
        image = open_rgb(path, draft=(2 * size, 2 * size))
        square = ImageOps.fit(image, (size, size))
        buf = io.BytesIO()
        square.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001  (a broken image must not stop the report)
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _truth(p: Predictions, i: int) -> str:
    if p.semantic_ood[i]:
        return "semantic OOD"
    return CLASSES[int(p.y[i])] if p.y[i] >= 0 else "–"


def _item(p: Predictions, i: int, score: str, conf: float, reason: str, data: str) -> dict:
    """One thumbnail with its caption: true label, predicted class, confidence and reason
    (`wrong`: a misclassified or semantic OOD image, outlined in the report)."""
    return {
        "data": data,
        "image_id": str(p.image_ids[i]),
        "wrong": bool(p.semantic_ood[i] or (p.y[i] >= 0 and p.y[i] != p.pred[i])),
        "lines": [
            f"true {_truth(p, i)} · pred {CLASSES[int(p.pred[i])]}",
            f"{score} {conf:.2f} · {reason or 'accepted'}",
        ],
    }


def _missing_note(p: Predictions, present: np.ndarray) -> str | None:
    """The one sentence said when no image file can be shown (None when some can)."""
    if p.image_path is None:
        return (
            "No example images: this predictions file has no image_path column (write it "
            "with `skinclf predict`)."
        )
    if not present.any():
        return (
            f"No example images: none of the {p.n} image files named in its image_path "
            "column is here (predictions made elsewhere, or the images moved)."
        )
    return None


def example_grid(
    p: Predictions,
    conf: np.ndarray,
    abstain: np.ndarray,
    reason: np.ndarray,
    score: str,
    n: int = PER_GROUP,
) -> dict:
    """{"groups": [{name, n, images}], "note"} for one set: up to `n` accepted images and up to
    `n` per rejection reason (`images`), among the rows whose image file is here."""
    paths = p.image_path if p.image_path is not None else np.full(p.n, "", dtype=object)
    present = np.array([bool(s) and os.path.isfile(str(s)) for s in paths], dtype=bool)
    note = _missing_note(p, present)
    if note is not None:
        return {"groups": [], "note": note}
    abstain, reason = np.asarray(abstain, bool), np.asarray(reason, dtype=object)
    conf = np.asarray(conf, dtype=np.float64)
    groups = []
    for name in GROUPS:
        member = ~abstain if name == "accepted" else abstain & (reason == name)
        items = []
        for i in pick(np.flatnonzero(member & present), conf, n):
            data = thumbnail(str(paths[i]))
            if data is not None:
                items.append(_item(p, int(i), score, float(conf[i]), str(reason[i]), data))
        groups.append({"name": name, "n": int(member.sum()), "images": items})
    missing = int((~present).sum())
    if missing:
        note = f"{missing} of the {p.n} image files are not here; the examples are of the others."
    return {"groups": groups, "note": note}


def example_sets(sets: Sequence[ScoredSet], gated: Selective, n: int = PER_GROUP) -> list[dict]:
    """The grid of each set ({"set", "groups", "note"}), under the gated policy's decisions."""
    from skinclf.policy.gates import apply_to

    out = []
    for s in sets:
        conf, abstain, reason = apply_to(gated, s.preds)
        out.append({"set": s.name, **example_grid(s.preds, conf, abstain, reason, gated.score, n)})
    return out
