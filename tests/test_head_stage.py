"""Stage 1 (the head on cached features) as tuning runs it: batches fetched whole, the same
batches as a row-by-row loader, and a trial that does not depend on what ran before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from skinclf.config import load_config
from skinclf.train.datamodule import FeatureDataModule, loader
from skinclf.train.losses import build_loss, class_counts
from skinclf.train.samplers import Batches, EpochSampler
from skinclf.tune.search import head_trial


def _features(n_train: int = 70, n_val: int = 21, dim: int = 16) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    labels = {"train": np.arange(n_train) % 7, "val": np.arange(n_val) % 7}
    feats = {
        s: (rng.normal(size=(len(y), dim)) + y[:, None]).astype(np.float32)
        for s, y in labels.items()
    }
    return feats, {s: y.astype(np.int64) for s, y in labels.items()}


def _epochs(dl: DataLoader, sampler, epochs: int = 2) -> list[list[torch.Tensor]]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([torch.cat([x.flatten(), y.float()]) for x, y in dl])
    return out


def test_whole_batches_are_the_row_by_row_batches_of_every_epoch() -> None:
    feats, labels = _features()
    ds = TensorDataset(torch.from_numpy(feats["train"]), torch.from_numpy(labels["train"]))
    rows = EpochSampler(labels["train"], "class_balanced", seed=3)
    whole = EpochSampler(labels["train"], "class_balanced", seed=3)
    batches = Batches(whole, 32)
    assert len(batches) == 3  # 32 + 32 + 6
    a = _epochs(loader(ds, 32, sampler=rows), rows)
    b = _epochs(DataLoader(ds, batch_size=None, sampler=batches), batches)
    assert [len(e) for e in b] == [3, 3]
    for ea, eb in zip(a, b, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(ea, eb, strict=True))
    assert not torch.equal(b[0][0], b[1][0])  # set_epoch reached the sampler: a new order


def test_feature_datamodule_serves_whole_batches() -> None:
    feats, labels = _features()
    cfg = load_config("sample", None, ["transfer.batch_size=16"])
    dm = FeatureDataModule(cfg, feats, labels)
    dm.setup()
    dl = dm.train_dataloader()
    assert isinstance(dl.sampler, Batches) and len(dl) == 5
    x, y = next(iter(dl))
    assert x.shape == (16, 16) and y.shape == (16,)


def test_a_head_trial_does_not_depend_on_the_random_state_before_it(tmp_path: Path) -> None:
    feats, labels = _features()
    cfg = load_config("sample", None, ["transfer.epochs=3", "model.dropout=0.3"])
    loss = build_loss(cfg.loss, class_counts(labels["train"], 7))

    def weights() -> list[torch.Tensor]:
        head, _ = head_trial(cfg, loss, feats, labels, 16, tmp_path)
        return [p.detach().clone() for p in head.parameters()]

    first = weights()
    torch.rand(1000)  # an earlier trial, or anything else, moved the global random state
    again = weights()
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


class _Trial:
    """The part of an Optuna trial pruning uses: reports, and a pruner that says stop at 3."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def report(self, value: float, step: int) -> None:
        assert 0.0 <= value <= 1.0
        self.steps.append(step)

    def should_prune(self) -> bool:
        return len(self.steps) >= 3


def test_a_head_trial_reports_each_epoch_and_stops_when_pruned(tmp_path: Path) -> None:
    import optuna
    import pytest

    feats, labels = _features()
    cfg = load_config("sample", None, ["transfer.epochs=8"])
    loss = build_loss(cfg.loss, class_counts(labels["train"], 7))
    trial = _Trial()
    with pytest.raises(optuna.TrialPruned, match="after epoch 3"):
        head_trial(cfg, loss, feats, labels, 16, tmp_path, trial)
    assert trial.steps == [0, 1, 2]  # one validation score per epoch, then stopped


def test_mask_dropout_is_dropout_in_distribution_and_identity_in_eval() -> None:
    from skinclf.train.module import MaskDropout

    layer = MaskDropout(0.25)
    torch.manual_seed(0)
    y = layer(torch.ones(400, 500))
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01  # 200,000 draws: the standard error is 0.001
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))
    assert abs(y.mean().item() - 1.0) < 0.01  # unbiased, as nn.Dropout
    x = torch.randn(8, 5)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(MaskDropout(0.0).train()(x), x)


def test_stage_one_heads_load_into_the_classifiers_head(tmp_path: Path) -> None:
    """The stage-1 head has MaskDropout in place of nn.Dropout: same weights, same state dict."""
    from torch import nn

    from skinclf.train.module import MaskDropout, build_head

    feats, labels = _features()
    for head_name in ("linear", "mlp"):
        cfg = load_config("sample", None, ["transfer.epochs=2", f"model.head={head_name}"])
        loss = build_loss(cfg.loss, class_counts(labels["train"], 7))
        trained, _ = head_trial(cfg, loss, feats, labels, 16, tmp_path)
        assert any(isinstance(m, MaskDropout) for m in trained.modules())
        own = build_head(cfg, 16)
        assert not any(isinstance(m, MaskDropout) for m in own.modules())
        assert any(type(m) is nn.Dropout for m in own.modules())
        own.load_state_dict(trained.state_dict())  # strict: the same keys and shapes
        x = torch.from_numpy(feats["val"])
        assert torch.equal(own.eval()(x), trained.eval()(x))
