"""Partial fine-tuning on cached frozen-stage activations (train.frozen_cache)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skinclf.config import load_config
from skinclf.errors import ConfigError
from skinclf.train.activations import (
    ActivationDataset,
    ActivationViews,
    ViewSampler,
    cached_activations,
    frozen_blocks,
    prefix_forward,
    suffix_features,
)
from skinclf.train.samplers import EpochSampler

CACHED = ["train.frozen_cache=true", "train.unfreeze=4", "train.frozen_views=3"]


def _model(overrides: list[str]):
    from skinclf.models import create_backbone
    from skinclf.train.module import SkinClassifier

    cfg = load_config("sample", overrides=overrides)
    backbone, info = create_backbone(cfg.model.backbone, pretrained=False)
    model = SkinClassifier(
        cfg, torch.nn.CrossEntropyLoss(), backbone, info.stages, info.mean, info.std, 1280
    )
    return model.to(memory_format=torch.channels_last).eval(), info


def test_prefix_then_suffix_is_the_whole_backbone() -> None:
    torch.manual_seed(0)
    model, info = _model(CACHED)
    k = frozen_blocks(model.backbone, info.stages, 4)
    assert k == 5  # stages: stem, bn1, blocks 0-6, conv_head, bn2; the last 4 train
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        whole = model.features(x)
        split = suffix_features(model, prefix_forward(model, x, k), k)
    assert whole.shape == split.shape == (2, 1280)
    assert torch.allclose(whole, split, atol=1e-5)


def test_frozen_cache_needs_a_frozen_prefix() -> None:
    model, info = _model(CACHED)
    with pytest.raises(ConfigError, match="unfreeze"):
        frozen_blocks(model.backbone, info.stages, "all")
    with pytest.raises(ConfigError, match="no frozen prefix"):
        frozen_blocks(model.backbone, info.stages, len(info.stages) - 1)
    with pytest.raises(ConfigError, match="EfficientNet-style"):
        frozen_blocks(torch.nn.Linear(2, 2), info.stages, 4)


def test_default_preset_caches_the_early_blocks_of_its_backbone() -> None:
    from skinclf.models import create_backbone

    cfg = load_config("default")
    backbone, info = create_backbone(cfg.model.backbone, pretrained=False)
    assert cfg.train.frozen_cache
    # stem, bn1 and blocks 0-3 cached; blocks 4-6, conv_head and bn2 trained
    assert frozen_blocks(backbone, info.stages, cfg.train.unfreeze) == 4


def test_view_sampler_depends_on_seed_and_epoch_only() -> None:
    labels = np.arange(20) % 4

    def draw(epoch: int, seed: int = 0) -> list[int]:
        s = ViewSampler(EpochSampler(labels, "uniform", seed=seed), 3, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    first = draw(0)
    assert first == draw(0) and first != draw(1) and first != draw(0, seed=1)
    images, views = np.divmod(first, 3)
    assert sorted(images.tolist()) == list(range(20))  # every image once per epoch
    assert set(views.tolist()) <= {0, 1, 2} and len(set(views.tolist())) > 1


def test_activation_cache_is_built_once_and_views_differ(tmp_path: Path) -> None:
    model, _ = _model(CACHED)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    rows = np.array([4, 0, 2])
    args = (model, images, rows, ActivationViews(2, "train", 3), {"images": "x"}, tmp_path)
    first = cached_activations(*args, progress=False)
    assert first.shape[:2] == (3, 3) and first.dtype == np.float16
    files = list((tmp_path / "activations").glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    with torch.no_grad():
        model.head[1].weight.add_(1.0)  # stage 1 trains the head: the prefix cache still holds
    again = cached_activations(*args, progress=False)
    assert files[0].stat().st_mtime_ns == mtime and np.array_equal(first, again)
    assert len(list((tmp_path / "activations").glob("*.npy"))) == 1
    assert not np.array_equal(first[:, 0], first[:, 1])  # different views of each image
    # row order is kept: the cached activations of row 4 are those of image 4
    with torch.no_grad():
        none = ActivationViews(2, "none", 1)
        plain = cached_activations(model, images, rows, none, {"i": 1}, tmp_path)
        x = torch.from_numpy(images[[4]]).permute(0, 3, 1, 2)
        direct = prefix_forward(model, x, 2).float().numpy()
    assert np.allclose(plain[0, 0], direct[0], atol=2e-2)
    ds = ActivationDataset(first, [1, 2, 3])
    assert (
        len(ds) == 9
        and ds[4][1] == 2
        and torch.equal(ds[4][0], torch.from_numpy(np.array(first[1, 1])))
    )


def test_feature_cache_is_keyed_by_the_backbone_not_the_head(tmp_path: Path) -> None:
    """Runs that differ only in their seed (so in the head's initialisation) reuse the stage-1
    features; a different backbone does not."""
    from skinclf.inference.feature_cache import cached_features

    model, _ = _model([])
    images = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    rows = np.array([3, 0, 4])
    first = cached_features(model, images, rows, {"images": "f"}, tmp_path, progress=False)
    assert first.shape == (3, 1280)
    with torch.no_grad():
        model.head[1].weight.add_(1.0)
    again = cached_features(model, images, rows, {"images": "f"}, tmp_path, progress=False)
    assert np.array_equal(first, again)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 1
    with torch.no_grad():
        model.backbone.conv_head.weight.mul_(2.0)
    other = cached_features(model, images, rows, {"images": "f"}, tmp_path, progress=False)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2
    assert not np.allclose(first, other)


def test_augmented_views_are_views_of_the_image(tmp_path: Path) -> None:
    """A near-identity augmentation (1 % colour jitter) must give almost the plain image's
    activations: catches a view cached in the wrong value range or order."""
    model, _ = _model(
        [*CACHED, "augment.d4=false", "augment.scale=null", "augment.color_jitter=0.01"]
    )
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    rows = np.array([3, 1])
    key = {"images": "smooth"}
    train, none = ActivationViews(2, "train", 2), ActivationViews(2, "none", 1)
    views = cached_activations(model, images, rows, train, key, tmp_path, progress=False)
    plain = cached_activations(model, images, rows, none, key, tmp_path, progress=False)
    scale = np.abs(plain).mean()
    assert np.abs(views[:, 0].astype(np.float32) - plain[:, 0]).mean() < 0.1 * scale
    assert np.abs(views[0, 0].astype(np.float32) - plain[1, 0]).mean() > 0.1 * scale


def test_training_on_cached_activations(learnable_sample: Path, train_cache: Path, tmp_path):
    from skinclf.train.training import fit

    cfg = load_config("sample", overrides=[*CACHED, "train.epochs=2", "predict.tta=d4"])
    lines: list[str] = []
    fit(
        learnable_sample,
        tmp_path / "run",
        cfg,
        cache_dir=train_cache,
        progress=False,
        log=lines.append,
    )
    run = tmp_path / "run"
    assert any("frozen stages cached" in line for line in lines)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and metrics["tta"] == "d4"
    assert metrics["val"]["balanced_accuracy"] > 0.6  # chance: 1/7
    # frozen stages are untouched, trained ones moved: compare with the pretrained backbone
    from skinclf.models import create_backbone

    start = create_backbone(cfg.model.backbone)[0].state_dict()
    state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    for name in ("conv_stem.weight", "blocks.4.0.conv_pw.weight", "bn1.running_mean"):
        assert torch.equal(state[f"classifier.backbone.{name}"], start[name]), name
    assert not torch.equal(state["classifier.backbone.conv_head.weight"], start["conv_head.weight"])
    assert not torch.equal(
        state["classifier.backbone.blocks.6.0.conv_pw.weight"], start["blocks.6.0.conv_pw.weight"]
    )


def test_resume_on_cached_activations_equals_uninterrupted(ham_sample: Path, tmp_path: Path):
    from skinclf.train.training import FitOptions, fit
    from test_train import StopAfter, _weights

    cfg = load_config(
        "sample",
        overrides=[*CACHED, "transfer.epochs=0", "train.epochs=2", "trainer.precision=32"],
    )
    quiet = {"cache_dir": tmp_path / "cache", "progress": False, "log": lambda *_: None}
    fit(ham_sample, tmp_path / "full", cfg, **quiet)
    fit(ham_sample, tmp_path / "cut", cfg, options=FitOptions(callbacks=[StopAfter(1)]), **quiet)
    fit(ham_sample, tmp_path / "cut", cfg, resume=True, **quiet)
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    worst = max((full[k].float() - resumed[k].float()).abs().max().item() for k in full)
    assert worst <= 1e-6
    assert len(list((tmp_path / "cache" / "activations").glob("*.npy"))) == 2  # train + val
