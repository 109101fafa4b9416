"""End-to-end training on generated data: artifacts, learning, resume, bad input, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from skinclf.classes import CLASSES
from skinclf.config import load_config
from skinclf.errors import ConfigError, DataError
from skinclf.train.training import FitOptions, fit

RUN_FILES = (
    "config.yaml",
    "provenance.json",
    "split.csv",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
    "metrics.csv",
    "curves.png",
    "val_predictions.csv",
    "test_predictions.csv",
    "metrics.json",
)


def test_one_epoch_run_writes_every_artifact(trained_run: Path) -> None:
    for name in RUN_FILES:
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and metrics["tta"] == "none"
    assert set(metrics["test"]["recall"]) == set(CLASSES)
    prov = json.loads((trained_run / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["versions"]["torch"] and prov["data_fingerprint"]
    preds = pd.read_csv(trained_run / "test_predictions.csv")
    expected = ["image_id", "dataset", "label", "semantic_ood"]
    expected += [f"logit_{c}" for c in CLASSES] + [f"prob_{c}" for c in CLASSES]
    assert list(preds.columns[: len(expected)]) == expected
    assert "conf_msp" in preds.columns
    split = pd.read_csv(trained_run / "split.csv")
    assert set(preds["image_id"]) == set(split.loc[split["split"] == "test", "image_id"])
    per_epoch = pd.read_csv(trained_run / "metrics.csv")
    assert {"train_loss", "val_balanced_accuracy", "val_loss"} <= set(per_epoch.columns)


def test_training_learns_far_above_chance(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    # chance is 1/7 = 0.14 balanced accuracy on 7 classes
    assert metrics["val"]["balanced_accuracy"] > 0.6
    assert metrics["test"]["balanced_accuracy"] > 0.6


class StopAfter(L.Callback):
    """Simulates an interruption: stop after `epochs` epochs (the last checkpoint is kept)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def test_resume_equals_uninterrupted(ham_sample: Path, tmp_path: Path) -> None:
    cfg = load_config(
        "sample",
        overrides=[
            "transfer.epochs=0",
            "train.epochs=2",
            "trainer.precision=32",
            "model.dropout=0.3",
            "train.sampler=class_balanced",
        ],
    )
    quiet = {"cache_dir": tmp_path / "cache", "progress": False, "log": lambda *_: None}
    fit(ham_sample, tmp_path / "full", cfg, **quiet)
    fit(ham_sample, tmp_path / "cut", cfg, options=FitOptions(callbacks=[StopAfter(1)]), **quiet)
    assert torch.load(tmp_path / "cut/checkpoints/last.ckpt", weights_only=False)["epoch"] == 0
    with pytest.raises(ConfigError, match="--resume"):
        fit(ham_sample, tmp_path / "cut", cfg, **quiet)
    fit(ham_sample, tmp_path / "cut", cfg, resume=True, **quiet)
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == resumed.keys()
    worst = max((full[k].float() - resumed[k].float()).abs().max().item() for k in full)
    assert worst <= 1e-6
    epochs = pd.read_csv(tmp_path / "cut" / "metrics.csv")["epoch"].tolist()
    assert epochs == [0, 1]  # both halves of the interrupted run are in metrics.csv


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["model.backbone=resnet_does_not_exist"], ConfigError, "resnet_does_not_exist"),
        (["data.image_size=16"], ConfigError, "at least 32"),
        (["train.epochz=1"], ConfigError, "Unknown config key 'train.epochz'"),
        (["train.frozen_cache=true", "train.unfreeze=all"], ConfigError, "frozen stages to"),
        (["train.frozen_cache=true", "train.unfreeze=10"], ConfigError, "no frozen prefix"),
    ],
)
def test_bad_settings_fail_before_training(
    ham_sample: Path, tmp_path: Path, overrides: list[str], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        fit(
            ham_sample,
            tmp_path / "run",
            load_config("sample", overrides=overrides),
            cache_dir=tmp_path / "c",
            progress=False,
        )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_split_must_match_data_and_cover_every_class(ham_sample: Path, tmp_path: Path) -> None:
    cfg = load_config("sample")
    bad = tmp_path / "bad_split.csv"
    pd.DataFrame({"image_id": ["ISIC_9999999"], "split": ["train"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="ISIC_9999999"):
        fit(
            ham_sample,
            tmp_path / "r1",
            cfg,
            cache_dir=tmp_path / "c",
            progress=False,
            options=FitOptions(split_file=bad),
        )

    from skinclf.data.formats import load_dataset
    from skinclf.data.split import split_dataset

    table = load_dataset(ham_sample)
    split = split_dataset(table, seed=0)
    split.loc[split["image_id"].isin(table.loc[table["label"] == "df", "image_id"]), "split"] = (
        "test"
    )
    no_df = tmp_path / "no_df.csv"
    split.to_csv(no_df, index=False)
    with pytest.raises(DataError, match="df has no image in the training split"):
        fit(
            ham_sample,
            tmp_path / "r2",
            cfg,
            cache_dir=tmp_path / "c",
            progress=False,
            options=FitOptions(split_file=no_df),
        )
    assert not (tmp_path / "r2" / "checkpoints").exists()


def test_cli_unknown_preset_is_one_clear_line(ham_sample: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skinclf",
            "train",
            "--data",
            str(ham_sample),
            "--out",
            str(tmp_path / "r"),
            "--preset",
            "fancy",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Unknown preset 'fancy'" in proc.stderr and "Traceback" not in proc.stderr


def test_ddp_two_cpu_processes(ham_sample: Path, tmp_path: Path) -> None:
    """Lightning's DDP launcher re-executes the command line: 2 gloo processes on the CPU."""
    out = tmp_path / "ddp"
    env = dict(os.environ, SKINCLF_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skinclf",
            "train",
            "--data",
            str(ham_sample),
            "--out",
            str(out),
            "--preset",
            "sample",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--threads",
            "1",
            "--no-progress",
            "transfer.epochs=2",
            "train.epochs=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1
    decoded = list((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert len(decoded) == 1  # built once under its lock, not once per rank


def test_ema_weights_are_validated_and_saved(ham_sample: Path, tmp_path: Path) -> None:
    cfg = load_config(
        "sample", overrides=["transfer.epochs=0", "train.epochs=2", "train.ema_decay=0.9"]
    )
    fit(
        ham_sample,
        tmp_path / "ema",
        cfg,
        cache_dir=tmp_path / "c",
        progress=False,
        log=lambda *_: None,
    )
    ckpt = torch.load(tmp_path / "ema/checkpoints/last.ckpt", weights_only=False)
    average, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == current.keys()
    name = "classifier.head.1.weight"
    assert not torch.equal(average[name], current[name])  # the average is not the last step
    assert (tmp_path / "ema" / "metrics.json").is_file()
