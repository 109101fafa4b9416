"""Learning-rate schedules of fine-tuning, built from torch's schedulers."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> LRScheduler:
    """Per step: linear warm-up, (step + 1) / (warmup + 1) of each group's learning rate for
    the first `warmup` steps, then cosine decay from the full rate to 0 at step `total`
    (0.5 * (1 + cos(pi * progress)), progress = (step - warmup) / (total - warmup))."""
    if warmup <= 0:
        return CosineAnnealingLR(optimizer, T_max=max(1, total))
    ramp = LinearLR(optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
