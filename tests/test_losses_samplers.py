"""Losses for imbalance, epoch samplers and batch augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skinclf.config import AugmentConfig, LossConfig
from skinclf.inference.batch import d4_views
from skinclf.train.augment import augment_batch
from skinclf.train.losses import FocalLoss, LogitAdjustedLoss, build_loss, class_weights
from skinclf.train.samplers import EpochSampler, sample_weights

COUNTS = np.array([10, 30, 60])


def test_class_weights_by_hand() -> None:
    w = class_weights(COUNTS, "inverse").numpy()
    # proportional to 1/n, normalised so the mean weight over samples is 1: 100 / (3 n_c)
    np.testing.assert_allclose(w, [100 / 30, 100 / 90, 100 / 180], rtol=1e-6)
    s = class_weights(COUNTS, "sqrt_inverse").numpy()
    raw = 1 / np.sqrt(COUNTS)
    np.testing.assert_allclose(s, raw * 100 / (raw * COUNTS).sum(), rtol=1e-6)
    assert (w * COUNTS).sum() == pytest.approx(100, rel=1e-5)


def test_weighted_ce_matches_manual() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    loss = build_loss(LossConfig(name="weighted_ce"), COUNTS)
    w = class_weights(COUNTS)
    per = F.cross_entropy(logits, y, reduction="none")
    expected = (per * w[y]).sum() / w[y].sum()
    assert loss(logits, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_by_hand_and_gamma_zero_is_ce() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p(class 0) = 3/4
    y = torch.tensor([0])
    expected = -((1 - 0.75) ** 2) * math.log(0.75)
    assert FocalLoss(2.0)(logits, y).item() == pytest.approx(expected, rel=1e-6)
    x = torch.randn(8, 7)
    t = torch.randint(0, 7, (8,))
    assert FocalLoss(0.0)(x, t).item() == pytest.approx(F.cross_entropy(x, t).item(), rel=1e-5)


def test_logit_adjusted_loss_adds_log_prior() -> None:
    logits = torch.tensor([[0.5, 0.1, -0.3]])
    y = torch.tensor([1])
    prior = COUNTS / COUNTS.sum()
    expected = F.cross_entropy(logits + torch.tensor(np.log(prior), dtype=torch.float32), y)
    assert LogitAdjustedLoss(COUNTS, tau=1.0)(logits, y).item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    # tau = 0 is plain cross-entropy
    assert LogitAdjustedLoss(COUNTS, tau=0.0)(logits, y).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6
    )


def test_sampler_modes() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    np.testing.assert_allclose(sample_weights(labels, "uniform"), 1 / 100)
    cb = sample_weights(labels, "class_balanced")
    assert cb[:90].sum() == pytest.approx(0.5) and cb[90:].sum() == pytest.approx(0.5)
    sq = sample_weights(labels, "sqrt_balanced")
    assert sq[90:].sum() / sq[:90].sum() == pytest.approx(10 / math.sqrt(10) / (90 / math.sqrt(90)))

    uniform = EpochSampler(labels, "uniform", seed=1)
    first = list(uniform)
    assert sorted(first) == list(range(100))
    assert list(uniform) == first  # same epoch -> same order (resumable)
    uniform.set_epoch(1)
    assert list(uniform) != first

    balanced = EpochSampler(labels, "class_balanced", seed=0)
    draws = []
    for epoch in range(20):
        balanced.set_epoch(epoch)
        draws.extend(balanced)
    minority_share = np.mean(np.asarray(draws) >= 90)
    assert 0.4 < minority_share < 0.6


def test_d4_views_are_the_eight_symmetries() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = d4_views(x)
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_augment_is_reproducible_and_label_free() -> None:
    x = torch.rand(4, 3, 32, 32)
    cfg = AugmentConfig(d4=True, scale=(0.7, 1.0), color_jitter=0.2, rotate=10, translate=0.05)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_pure_d4_augmentation_permutes_pixels_exactly() -> None:
    x = torch.rand(16, 3, 8, 8)
    cfg = AugmentConfig(d4=True, scale=None, color_jitter=0.0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    for i in range(16):
        assert any(torch.allclose(y[i], v[0], atol=1e-5) for v in d4_views(x[i : i + 1]))
