"""Predictions files of the same images averaged into one ensemble's (what `skinclf cv-ensemble`
does to each set, and what a user does to several runs' kept predictions)."""

from __future__ import annotations

import numpy as np

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.scores import SCORES, with_logits
from skinclf.errors import DataError
from skinclf.scoring.offsets import apply_offsets


def _aligned(p: Predictions, image_ids: np.ndarray) -> Predictions:
    """`p`'s rows in the order of `image_ids`; DataError naming an image `p` lacks."""
    row = {image: i for i, image in enumerate(p.image_ids)}
    missing = [image for image in image_ids if image not in row]
    if missing:
        raise DataError(f"{p.path} has no prediction of image {missing[0]!r}.")
    return p.subset(np.array([row[image] for image in image_ids], dtype=int))


def mean_predictions(members: list[Predictions], offsets: np.ndarray | None = None) -> Predictions:
    """The members' probabilities averaged row by row (aligned on the first member's images),
    `offsets` added to the log of the mean; the first member's other columns and feature
    scores, its logit scores recomputed on the new logits (`contracts.scores.with_logits`)."""
    first = members[0]
    aligned = [first] + [_aligned(p, first.image_ids) for p in members[1:]]
    logits = np.log(np.clip(np.mean([p.probs for p in aligned], axis=0), 1e-12, None))
    if offsets is not None:
        logits = apply_offsets(logits, offsets)
    out = with_logits(first, logits)
    out.conf.setdefault("ensemble", SCORES["msp"](logits))
    return out
