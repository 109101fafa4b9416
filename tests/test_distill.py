"""Knowledge distillation (loss.distill): the teacher's probabilities blended into the targets
of both stages; a teacher that misses a training image, or a loss that cannot take soft
targets, is one sentence before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from skinclf.classes import CLASSES
from skinclf.config import load_config
from skinclf.contracts.predictions import ImageRows, write_predictions
from skinclf.errors import ConfigError, DataError
from skinclf.train.distill import SoftTargets, distill_targets, hard_labels, teacher_targets
from skinclf.train.losses import build_loss, class_counts


def _teacher(path: Path, ids: list[str], probs: np.ndarray) -> Path:
    n = len(ids)
    write_predictions(
        path, ImageRows(ids, ["ham10000"] * n, [""] * n, np.ones(n, bool)), np.log(probs)
    )
    return path


def test_targets_blend_the_label_with_the_teachers_probabilities(tmp_path: Path) -> None:
    probs = np.full((3, 7), 0.1)
    probs[:, 5] = 0.4
    path = _teacher(tmp_path / "t.csv", ["c", "a", "b"], probs)
    targets = teacher_targets(path, ["a", "b"], np.array([0, 2]), weight=0.25)
    expected = 0.75 * np.eye(7)[[0, 2]] + 0.25 * probs[:2]
    assert targets.dtype == np.float32 and np.allclose(targets, expected, atol=1e-6)
    assert np.allclose(targets.sum(axis=1), 1.0)
    with pytest.raises(DataError, match=r"no row for 1 of the 3 training images \(e.g. d\)"):
        teacher_targets(path, ["a", "b", "d"], np.array([0, 1, 2]), weight=0.5)


def test_soft_targets_follow_the_views_and_whole_batches() -> None:
    x = torch.arange(6 * 2).float().view(6 * 2, 1)  # 6 images x 2 views, item i * 2 + v
    targets = np.eye(7, dtype=np.float32)[[0, 1, 2, 3, 4, 5]]
    ds = SoftTargets(TensorDataset(x, torch.zeros(12, dtype=torch.long)), targets, views=2)
    assert len(ds) == 12
    item, target = ds[7]  # image 3, view 1
    assert float(item) == 7.0 and int(target.argmax()) == 3
    batch, batch_targets = ds[[0, 5, 11]]  # one indexing for a whole batch (the head's loader)
    assert batch.shape == (3, 1) and hard_labels(batch_targets).tolist() == [0, 2, 5]
    with pytest.raises(ValueError, match="12 items but 5 targets x 2 views"):
        SoftTargets(TensorDataset(x, x), targets[:5], views=2)


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "logit_adjusted"])
def test_the_loss_on_a_blended_target_is_the_blend_of_the_losses(name: str) -> None:
    cfg = load_config("sample", overrides=[f"loss.name={name}", "loss.label_smoothing=0"])
    loss = build_loss(cfg.loss, np.array([5, 9, 20, 3, 12, 90, 4]))
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(8, 7)), dtype=torch.float32)
    y = torch.arange(8) % 7
    teacher = torch.softmax(torch.tensor(rng.normal(size=(8, 7)), dtype=torch.float32), dim=1)
    target = 0.7 * F.one_hot(y, 7).float() + 0.3 * teacher
    if name == "weighted_ce":  # class weights weigh a soft target's classes, not its rows
        w = loss.weight
        logp = F.log_softmax(logits, dim=1)
        expected = -(target * w * logp).sum(dim=1).mean()
    else:
        expected = 0.7 * loss(logits, y) + 0.3 * loss(logits, teacher)
    assert float(loss(logits, target)) == pytest.approx(float(expected), rel=1e-5)


def test_focal_loss_cannot_distill() -> None:
    with pytest.raises(ConfigError, match="focal loss does not take"):
        load_config("sample", overrides=["loss.name=focal", "loss.distill=t.csv"])


def test_a_teacher_steers_the_student_and_a_missing_image_stops_training(
    learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    """A teacher that says nv for every image, weighed 0.95, pulls both stages to nv."""
    from skinclf.data.formats import load_dataset
    from skinclf.train.training import fit

    ids = load_dataset(learnable_sample)["image_id"].astype(str).tolist()
    probs = np.full((len(ids), 7), 0.001)
    probs[:, CLASSES.index("nv")] = 1.0 - 0.006
    teacher = _teacher(tmp_path / "teacher.csv", ids, probs)
    quiet = {"cache_dir": train_cache, "progress": False, "log": lambda *_: None}
    few = ["train.frozen_cache=true", "train.unfreeze=4", "train.frozen_views=2", "train.epochs=1"]
    plain = fit(learnable_sample, tmp_path / "plain", load_config("sample", overrides=few), **quiet)
    steer = [*few, f"loss.distill={teacher}", "loss.distill_weight=0.95"]
    run = tmp_path / "distilled"
    fit(learnable_sample, run, load_config("sample", overrides=steer), **quiet)
    val = pd.read_csv(run / "val_predictions.csv")
    share_nv = (val[[f"prob_{c}" for c in CLASSES]].to_numpy().argmax(axis=1) == 5).mean()
    plain_val = pd.read_csv(plain.out / "val_predictions.csv")
    plain_nv = (plain_val[[f"prob_{c}" for c in CLASSES]].to_numpy().argmax(axis=1) == 5).mean()
    assert share_nv > 0.9 and plain_nv < 0.5, (share_nv, plain_nv)
    assert json.loads((run / "metrics.json").read_text())["val"]["balanced_accuracy"] < 0.3

    split = pd.read_csv(run / "split.csv")
    gone = split.loc[split["split"] == "train", "image_id"].iloc[0]
    kept = [i for i in ids if i != gone]
    _teacher(tmp_path / "short.csv", kept, probs[: len(kept)])
    short = [*few, f"loss.distill={tmp_path / 'short.csv'}"]
    with pytest.raises(
        DataError, match=f"no row for 1 of the .* training images \\(e.g. {gone}\\)"
    ):
        fit(learnable_sample, tmp_path / "r", load_config("sample", overrides=short), **quiet)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_the_teacher_file_is_an_input_of_the_train_step(tmp_path: Path) -> None:
    """skinclf run redoes training when the teacher's predictions change."""
    from skinclf.pipeline.job import Layout, RunOptions, train_step

    teacher = tmp_path / "teacher.csv"
    (tmp_path / "data").mkdir()
    cfg = load_config("sample", overrides=[f"loss.distill={teacher}"])
    opts = RunOptions(out=tmp_path / "out", cfg=cfg, data=tmp_path / "data")
    assert teacher in train_step(opts, Layout(opts)).inputs
    plain = RunOptions(out=tmp_path / "out", cfg=load_config("sample"), data=tmp_path / "data")
    assert list(train_step(plain, Layout(plain)).inputs) == [tmp_path / "data", Layout(plain).split]


@pytest.mark.parametrize("name", ["ce", "logit_adjusted"])
def test_a_student_that_fits_the_teacher_part_predicts_the_teachers_probabilities(
    tmp_path: Path, name: str
) -> None:
    """With distill_weight 1, the logits that minimise the student's loss give the teacher's
    probabilities as the student predicts (its raw logits), whatever the loss adds in training;
    a logit-adjusted student is not balanced a second time."""
    teacher = np.array([[0.05, 0.05, 0.1, 0.05, 0.15, 0.5, 0.1]])
    path = _teacher(tmp_path / "t.csv", ["a"], teacher)
    labels = np.array([5] * 60 + [0] * 3 + [1] * 5 + [2] * 10 + [3] * 2 + [4] * 8 + [6] * 2)
    ids = ["a"] + [f"x{k}" for k in range(len(labels) - 1)]
    _teacher(path, ids, np.repeat(teacher, len(ids), axis=0))
    cfg = load_config(
        "sample",
        overrides=[f"loss.name={name}", "loss.label_smoothing=0", f"loss.distill={path}",
                   "loss.distill_weight=1"],
    )  # fmt: skip
    targets = torch.from_numpy(distill_targets(cfg, ids, labels)[:1])
    loss = build_loss(cfg.loss, class_counts(labels, 7))
    logits = torch.zeros(1, 7, requires_grad=True)
    step = torch.optim.LBFGS([logits], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        step.zero_grad()
        value = loss(logits, targets)
        value.backward()
        return value

    step.step(closure)
    assert np.allclose(F.softmax(logits.detach(), dim=1).numpy(), teacher, atol=1e-3)
