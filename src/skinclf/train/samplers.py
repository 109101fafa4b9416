"""Training samplers whose order depends only on (seed, epoch), so a resumed run sees the same
batches as an uninterrupted one. Lightning calls `set_epoch` before every epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler


def sample_weights(labels: Sequence[int], mode: str) -> np.ndarray:
    """Per-sample drawing weights: uniform, class_balanced (1/n_c) or sqrt_balanced (1/sqrt n_c)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels).astype(np.float64)
    if mode == "uniform":
        w = np.ones(len(labels))
    elif mode == "class_balanced":
        w = 1.0 / counts[labels]
    elif mode == "sqrt_balanced":
        w = 1.0 / np.sqrt(counts[labels])
    else:
        raise ValueError(f"unknown sampler {mode}")
    return w / w.sum()


class EpochSampler(Sampler[int]):
    """`uniform`: a fresh permutation each epoch; balanced modes: draws with replacement."""

    def __init__(self, labels: Sequence[int], mode: str = "uniform", seed: int = 0) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.weights = sample_weights(self.labels, mode)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.labels)
        if self.mode == "uniform":
            order = torch.randperm(n, generator=g)
        else:
            order = torch.multinomial(
                torch.as_tensor(self.weights), n, replacement=True, generator=g
            )
        return iter(order.tolist())


class Batches(BatchSampler):
    """torch's BatchSampler (the last batch kept) that passes `set_epoch` on to its sampler:
    given as the `sampler` of a DataLoader with `batch_size=None`, each batch of tensor rows is
    fetched with one indexing, not row by row, and Lightning (which calls `set_epoch` on a
    loader's `sampler`) still reaches the sampler under it, so the batches are those of
    `sampler` in every epoch."""

    def __init__(self, sampler: Sampler[int], size: int) -> None:
        super().__init__(sampler, size, drop_last=False)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
