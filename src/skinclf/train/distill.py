"""Knowledge distillation (Hinton et al. 2015, at temperature 1): the training targets become
`(1 - w) * one-hot label + w * teacher probabilities`, the teacher being any predictions file
that covers the training images (a cross-validation's out-of-fold predictions, an ensemble's
predictions). Cross-entropy on that target is `(1 - w) * CE(label) + w * CE(teacher)`, whose
gradient is that of the usual hard-label + KL(teacher || student) objective.

The teacher's probabilities are what the student should predict. A student trained with the
logit-adjusted loss predicts with its raw logits but is trained on `logits + tau * log prior`,
so its teacher part is moved to the training prior first (`p * prior**tau`, renormalised):
the loss is then smallest where the student's own probabilities equal the teacher's. Without
this, a `default` teacher (itself logit-adjusted, so already balanced) would be balanced a
second time, pushing the student towards the rare classes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from skinclf.classes import NUM_CLASSES
from skinclf.errors import DataError
from skinclf.train.losses import class_counts, log_prior_adjustment


def teacher_targets(
    path: Path | str,
    image_ids: Sequence[str],
    labels: np.ndarray,
    weight: float,
    adjustment: np.ndarray | None = None,
) -> np.ndarray:
    """(N, 7) float32 targets of `image_ids` (true class indices `labels`) blended with the
    teacher's probabilities from the predictions file `path`, moved by the log-prior
    `adjustment` of a logit-adjusted student's loss when given."""
    from skinclf.contracts.predictions import read_predictions

    teacher = read_predictions(path, require_labels=False)
    row = {str(i): k for k, i in enumerate(teacher.image_ids)}
    missing = [i for i in image_ids if str(i) not in row]
    if missing:
        raise DataError(
            f"The teacher predictions {path} have no row for {len(missing)} of the "
            f"{len(image_ids)} training images (e.g. {missing[0]}); predict every training "
            "image with the teacher (loss.distill)."
        )
    probs = teacher.probs[[row[str(i)] for i in image_ids]]
    if adjustment is not None:
        probs = probs * np.exp(adjustment - adjustment.max())
        probs = probs / probs.sum(axis=1, keepdims=True)
    onehot = np.eye(NUM_CLASSES)[np.asarray(labels, dtype=np.int64)]
    return ((1.0 - weight) * onehot + weight * probs).astype(np.float32)


class SoftTargets(Dataset):
    """`dataset`'s items with the label replaced by image i's soft target; item `i * views + v`
    is view v of image i (the layout of the activation datasets; views = 1: item i). Takes a
    single index or a batch of indices (the head's whole-batch fetching)."""

    def __init__(self, dataset: Dataset, targets: np.ndarray, views: int = 1) -> None:
        items = len(dataset)  # type: ignore[arg-type]
        if items != len(targets) * views:
            raise ValueError(f"{items} items but {len(targets)} targets x {views} views")
        self.dataset, self.targets, self.views = dataset, targets, views

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index):
        x, _ = self.dataset[index]
        return x, torch.from_numpy(self.targets[np.asarray(index) // self.views])


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices of a batch's targets: soft targets' top class (the true label while
    distill_weight < 0.5), hard ones as they are."""
    return y.argmax(dim=1) if y.dim() == 2 else y


def distill_targets(cfg, ids: Sequence[str], labels: np.ndarray) -> np.ndarray | None:
    """The training split's soft targets when `loss.distill` names a teacher, else None."""
    if not cfg.loss.distill:
        return None
    adjustment = None
    if cfg.loss.name == "logit_adjusted":
        adjustment = log_prior_adjustment(class_counts(labels, NUM_CLASSES), cfg.loss.tau)
    return teacher_targets(cfg.loss.distill, ids, labels, cfg.loss.distill_weight, adjustment)
