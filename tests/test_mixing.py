"""Mixup and CutMix of fine-tuning batches (augment.mixup / augment.cutmix)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skinclf.config import AugmentConfig, load_config
from skinclf.train.mixing import BatchMix, sample_mix


def test_mixup_is_the_convex_combination_and_its_loss() -> None:
    x = torch.arange(12, dtype=torch.float32).view(3, 4)
    mix = BatchMix(perm=torch.tensor([2, 0, 1]), lam=0.7)
    out = mix(x)
    assert torch.allclose(out[0], 0.7 * x[0] + 0.3 * x[2])
    assert torch.allclose(out[1], 0.7 * x[1] + 0.3 * x[0])

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    ce = torch.nn.CrossEntropyLoss()
    expected = 0.7 * ce(logits, y) + 0.3 * ce(logits, torch.tensor([1, 0, 1]))
    assert torch.isclose(mix.loss(ce, logits, y), expected)
    assert torch.equal(mix.dominant_targets(y), y)
    assert torch.equal(BatchMix(mix.perm, 0.2).dominant_targets(y), torch.tensor([1, 0, 1]))


def test_cutmix_pastes_one_box_and_lam_is_the_kept_share() -> None:
    x = torch.zeros(2, 3, 10, 10)
    x[1] = 1.0
    mix = BatchMix(perm=torch.tensor([1, 0]), lam=0.0, box=(0.5, 0.5, 0.4, 0.6))
    out = mix(x)
    pasted = out[0, 0] == 1.0  # image 0 (zeros) gets a box of image 1 (ones)
    rows, cols = torch.nonzero(pasted, as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (3, 6)  # height 0.4 of 10, centred
    assert (cols.min().item(), cols.max().item()) == (2, 7)  # width 0.6 of 10
    assert pasted.sum().item() == 24
    assert bool((out[0, :, pasted] == 1.0).all())  # the same box in every channel
    assert mix.lam == pytest.approx(1.0 - 24 / 100)
    assert torch.equal(out[1, 0] == 0.0, pasted)  # and the partner gets the other's box
    # on 2-D inputs (no spatial axes) CutMix falls back to mixup with the same lam
    flat = torch.ones(2, 5)
    flat[1] = 3.0
    assert torch.allclose(mix(flat)[0], mix.lam * flat[0] + (1 - mix.lam) * flat[1])


def test_sample_mix_is_off_by_default_and_reproducible() -> None:
    assert sample_mix(AugmentConfig(), 8, 0) is None
    assert sample_mix(AugmentConfig(mixup=0.4, mix_prob=0.0), 8, 0) is None
    cfg = AugmentConfig(mixup=0.4, cutmix=1.0)
    a, b = sample_mix(cfg, 8, 123), sample_mix(cfg, 8, 123)
    assert a is not None and b is not None
    assert a.lam == b.lam and a.box == b.box and torch.equal(a.perm, b.perm)
    assert sorted(a.perm.tolist()) == list(range(8))
    mixes = [sample_mix(cfg, 8, s) for s in range(400)]
    assert all(m is not None for m in mixes)
    cut = [m for m in mixes if m is not None and m.box is not None]
    assert 150 < len(cut) < 250  # one of the two per batch, with probability 1/2
    lams = np.array([m.lam for m in cut])
    assert 0.4 < lams.mean() < 0.6 and lams.std() > 0.2  # Beta(1, 1) is uniform on [0, 1]
    half = [sample_mix(AugmentConfig(mixup=0.4, mix_prob=0.5), 8, s) for s in range(400)]
    assert 150 < sum(m is not None for m in half) < 250


def test_fine_tuning_with_cutmix_on_cached_activations(
    learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    """A run with mixing learns (far above chance) and mixing changes what it learns."""
    from skinclf.train.training import fit

    base = ["train.frozen_cache=true", "train.unfreeze=4", "train.frozen_views=2"]
    runs = {}
    for name, extra in {"plain": [], "mixed": ["augment.cutmix=1.0", "augment.mixup=0.2"]}.items():
        cfg = load_config("sample", overrides=[*base, "train.epochs=2", *extra])
        fit(learnable_sample, tmp_path / name, cfg, cache_dir=train_cache, progress=False)
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["mixed"]["val"]["balanced_accuracy"] > 0.5  # chance: 1/7
    assert runs["mixed"]["val"]["nll"] != runs["plain"]["val"]["nll"]


def _classifier(overrides: list[str], built=None):
    """A `sample` SkinClassifier training the last 4 stages; `built`: (backbone, info) to reuse."""
    from skinclf.models import create_backbone
    from skinclf.train.module import SkinClassifier

    backbone, info = built or create_backbone("efficientnet_lite0", pretrained=False)
    cfg = load_config("sample", overrides=["train.unfreeze=4", *overrides])
    model = SkinClassifier(
        cfg, torch.nn.CrossEntropyLoss(), backbone, info.stages, info.mean, info.std, 1280
    )
    return model, info


@pytest.mark.parametrize("cached", [False, True])
def test_the_mix_reaches_the_network_input(cached: bool) -> None:
    """lam = 0 with a permutation must give the partners' logits, on images and activations."""
    from skinclf.train.activations import frozen_blocks, prefix_forward

    torch.manual_seed(0)
    model, info = _classifier([])
    model.eval()
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    perm = torch.tensor([1, 2, 0])
    with torch.no_grad():
        if cached:
            model.prefix_blocks = frozen_blocks(model.backbone, info.stages, 4)
            x = prefix_forward(model, x, model.prefix_blocks)
        plain = model.logits(x)
        swapped = model.logits(x, mix=BatchMix(perm, lam=0.0))
        half = model.logits(x, mix=BatchMix(perm, lam=0.5))
    assert torch.allclose(swapped, plain[perm], atol=1e-5)
    assert not torch.allclose(half, plain, atol=1e-3)


def test_mixing_settings_reuse_the_activation_cache(tmp_path: Path) -> None:
    """Mixing acts on cached views at training time, so it must not rebuild the cache (a tuner
    searching mixup would otherwise recompute it every trial); other augmentation must."""
    from skinclf.models import create_backbone
    from skinclf.train.activations import ActivationViews, cached_activations

    built = create_backbone("efficientnet_lite0", pretrained=False)  # one set of weights
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    rows = np.array([0, 2])

    def build(overrides: list[str]) -> None:
        model, _ = _classifier(overrides, built)
        views = ActivationViews(5, "train", 1)
        cached_activations(model, images, rows, views, {}, tmp_path, progress=False)

    build([])
    build(["augment.mixup=0.4", "augment.cutmix=1.0", "augment.mix_prob=0.5"])
    assert len(list((tmp_path / "activations").glob("*.npy"))) == 1
    build(["augment.color_jitter=0.3"])
    assert len(list((tmp_path / "activations").glob("*.npy"))) == 2
