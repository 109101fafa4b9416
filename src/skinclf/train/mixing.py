"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) for fine-tuning, as timm does them.

One mixing coefficient per batch: every input is combined with the input of a shuffled partner
(`perm`), and the loss is `lam * loss(logits, y) + (1 - lam) * loss(logits, y[perm])`, which
works with every loss of `losses.py`. The mix is applied to whatever the network's input is:
augmented images, or, with `train.frozen_cache`, the cached activations of the frozen stages
(then it is manifold mixup, Verma et al. 2019, and CutMix of feature maps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from skinclf.config import AugmentConfig

# The augment settings that act on the network's input at training time, not on the views
# (the activation cache's key leaves them out).
MIXING_FIELDS = frozenset({"mixup", "cutmix", "mix_prob"})


@dataclass
class BatchMix:
    """One batch's mix: partner permutation, coefficient and, for CutMix, the box's fractions."""

    perm: torch.Tensor
    lam: float
    box: tuple[float, float, float, float] | None = None  # centre y, centre x, height, width

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Mix a batch (N, ...) with its partners; for CutMix, sets `lam` to the pasted share."""
        partner = x[self.perm]
        if self.box is None or x.dim() != 4:
            return self.lam * x + (1.0 - self.lam) * partner
        h, w = x.shape[-2:]
        cy, cx, bh, bw = self.box
        y0, y1 = _span(cy, bh, h)
        x0, x1 = _span(cx, bw, w)
        out = x.clone()
        out[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        self.lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        return out

    def loss(self, loss_fn: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lam * loss_fn(logits, y) + (1.0 - self.lam) * loss_fn(logits, y[self.perm])

    def dominant_targets(self, y: torch.Tensor) -> torch.Tensor:
        """The label that weighs more in each mixed input (for training metrics)."""
        return y if self.lam >= 0.5 else y[self.perm]


def _span(centre: float, size: float, n: int) -> tuple[int, int]:
    c = int(round(centre * n))
    half = int(round(size * n / 2))
    return max(0, c - half), min(n, c + half)


def sample_mix(cfg: AugmentConfig, n: int, seed: int) -> BatchMix | None:
    """This batch's mix, or None (mixing off, or skipped with probability 1 - mix_prob).

    Drawn from `seed` alone (the step's seed), so runs are reproducible and resumable. With both
    mixup and cutmix set, each mixed batch uses one of them with probability 1/2.
    """
    if not (cfg.mixup > 0 or cfg.cutmix > 0) or n < 2:
        return None
    rng = np.random.default_rng(seed)
    if rng.random() >= cfg.mix_prob:
        return None
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup <= 0 or rng.random() < 0.5)
    alpha = cfg.cutmix if use_cutmix else cfg.mixup
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(n))
    if not use_cutmix:
        return BatchMix(perm, lam)
    side = (1.0 - lam) ** 0.5
    cy, cx = rng.random(2).tolist()
    return BatchMix(perm, lam, (cy, cx, side, side))
