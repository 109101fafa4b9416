"""Losses for imbalanced classes: cross-entropy, class-weighted CE, focal, logit-adjusted."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skinclf.config import LossConfig


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def class_weights(counts: np.ndarray, kind: str = "inverse") -> torch.Tensor:
    """Per-class weights that average to 1 over the training samples.

    inverse: w_c proportional to 1 / n_c (every class weighs the same in total);
    sqrt_inverse: w_c proportional to 1 / sqrt(n_c) (half-way to uniform).
    """
    counts = np.asarray(counts, dtype=np.float64)
    safe = np.maximum(counts, 1.0)
    raw = 1.0 / safe if kind == "inverse" else 1.0 / np.sqrt(safe)
    raw = raw * counts.sum() / (raw * counts).sum()
    return torch.tensor(raw, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): -(1 - p_t)^gamma log p_t, optionally class-weighted."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        logp_t = logp.gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - logp_t.exp()) ** self.gamma) * logp_t
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


def log_prior_adjustment(counts: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """tau * log(training prior) per class (an empty class counts as one image)."""
    prior = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return tau * np.log(prior / prior.sum())


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted cross-entropy (Menon et al. 2021): CE(logits + tau * log prior, y).

    Trained this way, the raw logits estimate the balanced (uniform-prior) posterior, which is
    what balanced accuracy rewards; prediction uses the logits as they are.
    """

    def __init__(self, counts: np.ndarray, tau: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        adjustment = log_prior_adjustment(counts, tau)
        self.register_buffer("adjustment", torch.tensor(adjustment, dtype=torch.float32))
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float() + self.adjustment, target, label_smoothing=self.label_smoothing
        )


def build_loss(cfg: LossConfig, counts: np.ndarray) -> nn.Module:
    """The training loss a config asks for, given the training split's class counts."""
    if cfg.name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if cfg.name == "weighted_ce":
        return nn.CrossEntropyLoss(
            weight=class_weights(counts, cfg.class_weights), label_smoothing=cfg.label_smoothing
        )
    if cfg.name == "focal":
        return FocalLoss(cfg.focal_gamma)
    if cfg.name == "logit_adjusted":
        return LogitAdjustedLoss(counts, cfg.tau, cfg.label_smoothing)
    raise ValueError(f"unknown loss {cfg.name}")
