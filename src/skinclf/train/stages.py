"""The two training stages of a run, each with its own Lightning Trainer: the head on cached
frozen features (stage 1, transfer learning), then fine-tuning (stage 2, best checkpoint by the
monitored validation metric, last checkpoint every epoch)."""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np

from skinclf.config import RunConfig
from skinclf.contracts.run_folder import TrainingRun
from skinclf.train.datamodule import FeatureDataModule, RunDataModule


@dataclass
class FitState:
    """What the steps of one `fit` share: settings, run folder, output and time spent."""

    cfg: RunConfig
    out: Path
    resuming: bool  # stage 2 continues from checkpoints/last.ckpt
    started: float  # time.perf_counter() at the start of `fit`
    progress: bool = True
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def checkpoints(self) -> Path:
        return TrainingRun(self.out).checkpoints

    def record(self, seconds: float, done: Finetuned) -> dict:
        """metrics.json's account of the run: seconds, epochs, throughput, time per step."""
        return {
            "seconds": round(seconds, 1),
            "epochs_done": done.epochs,
            "train_images_per_second": done.images_per_second,
            **{k: round(v, 1) for k, v in self.timings.items()},
        }


@dataclass
class Finetuned:
    """What fine-tuning reports: epochs done, training throughput, and whether this process is
    the one that goes on to predict (rank zero)."""

    epochs: int = 0
    images_per_second: float | None = None
    global_zero: bool = True


def trainer_kwargs(cfg: RunConfig, precision: str) -> dict:
    t = cfg.trainer
    return {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": t.strategy,
        "num_nodes": t.num_nodes,
        "precision": precision,
    }


def run_loggers(cfg: RunConfig, out: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    # logs/version_N/ per (re)start: Lightning's CSV logger empties an existing folder, so a
    # resumed run writes a new version and the run's metrics.csv joins them (train/report.py).
    csv = CSVLogger(out, name="logs")
    loggers = [csv]
    if cfg.trainer.logger == "tensorboard":
        loggers.append(TensorBoardLogger(out, name="logs", version=csv.version))
    elif cfg.trainer.logger == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        loggers.append(WandbLogger(save_dir=str(out), project="skinclf", name=out.name))
    return loggers


# --- stage 1: the head on cached frozen features --------------------------------------------
@dataclass(frozen=True)
class HeadFeatures:
    """What stage 1 trains the head on: the pooled frozen features and the label indices of
    each split (train and val), and optional soft training targets (loss.distill) in place of
    the training labels."""

    feats: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    targets: np.ndarray | None = None


def train_head(
    cfg: RunConfig,
    loss,
    data: HeadFeatures,
    in_features: int,
    out: Path,
    progress: bool,
    callbacks: Sequence[L.Callback] = (),
):
    """Stage 1: fit the head on cached features (`data`); returns the head with the best val
    balanced accuracy (and that accuracy), or with `train.checkpoint` "last" the last epoch's.
    `callbacks` join the Trainer's (e.g. tuning's pruning)."""
    from skinclf.train.callbacks import BestWeights, epoch_bar
    from skinclf.train.module import HeadClassifier

    module = HeadClassifier(cfg, loss, in_features)
    best = BestWeights("val_balanced_accuracy")
    trainer = L.Trainer(
        max_epochs=cfg.transfer.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=bars(progress),
        enable_model_summary=False,
        callbacks=[best, *callbacks, *([epoch_bar()] if bars(progress) else [])],
        default_root_dir=str(out),
        num_sanity_val_steps=0,
        **trainer_kwargs(cfg, "32"),  # same devices/strategy as stage 2; fp32 for the head
    )
    trainer.fit(module, datamodule=FeatureDataModule(cfg, data.feats, data.labels, data.targets))
    if cfg.train.checkpoint == "last":
        last = trainer.callback_metrics.get("val_balanced_accuracy")
        return copy.deepcopy(module.head), float(last) if last is not None else float("nan")
    best.restore(module)
    return copy.deepcopy(module.head), best.best_score


def transfer(model, loss, data: RunDataModule, run: FitState) -> None:
    """Stage 1 of a run: `model`'s head gets the best weights trained on its frozen features."""
    assert data.prepared is not None
    t0 = time.perf_counter()
    feats = data.features(model)
    run.timings["features_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    features = HeadFeatures(feats, data.prepared.labels, data.distill_targets())
    head, score = train_head(run.cfg, loss, features, model.num_features, run.out, run.progress)
    model.head.load_state_dict(head.state_dict())
    run.timings["transfer_seconds"] = time.perf_counter() - t0
    run.log(
        f"stage 1 (head on frozen features): val balanced accuracy {score:.3f} "
        f"in {run.timings['transfer_seconds']:.0f} s (+{run.timings['features_seconds']:.0f} s "
        "features)"
    )


# --- stage 2: fine-tuning ---------------------------------------------------------------------
def finetune_callbacks(run: FitState, summary: L.Callback, extra: Sequence) -> list:
    """Best (by `train.monitor`) and last checkpoints, the epoch summary, the train-mode check,
    `extra`, then EMA, early stopping and the progress bar as configured."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from skinclf.train.callbacks import TrainModeCheck

    t = run.cfg.train
    mode = "min" if t.monitor.endswith("loss") else "max"
    checkpoint = {"dirpath": run.checkpoints, "save_top_k": 1, "enable_version_counter": False}
    # checkpoint "last": best.ckpt is the latest epoch (no monitor: saved every epoch)
    monitor = t.monitor if t.checkpoint == "best" else None
    best = ModelCheckpoint(filename="best", monitor=monitor, mode=mode, **checkpoint)
    # every epoch (Lightning's save_last only follows improvements of `best`)
    last = ModelCheckpoint(filename="last", monitor=None, **checkpoint)
    callbacks = [best, last, summary, TrainModeCheck(), *extra]
    if t.ema_decay:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=t.ema_decay))
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(t.monitor, patience=t.early_stopping_patience, mode=mode))
    if bars(run.progress):
        from skinclf.train.callbacks import epoch_bar

        callbacks.append(epoch_bar())
    return callbacks


def finetune_trainer(run: FitState, callbacks: list, precision: str) -> L.Trainer:
    """Lightning's Trainer for fine-tuning, within what is left of `train.budget_minutes`."""
    from skinclf.train.callbacks import AtomicCheckpointIO

    cfg = run.cfg
    max_time = None
    if cfg.train.budget_minutes:
        spent = time.perf_counter() - run.started
        max_time = timedelta(seconds=max(60.0, cfg.train.budget_minutes * 60 - spent))
    return L.Trainer(
        max_epochs=cfg.train.epochs,
        max_time=max_time,
        logger=run_loggers(cfg, run.out),
        callbacks=callbacks,
        gradient_clip_val=cfg.train.grad_clip,
        enable_progress_bar=bars(run.progress),
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        default_root_dir=str(run.out),
        plugins=[AtomicCheckpointIO()],  # a kill never leaves a half-written checkpoint
        **trainer_kwargs(cfg, precision),
    )


def load_best(trainer: L.Trainer, checkpoints: Path) -> None:
    """Back to the best epoch's weights (checkpoints/best.ckpt, if one was saved), read and
    loaded by the Trainer's strategy."""
    best = checkpoints / "best.ckpt"
    if best.is_file():
        strategy = trainer.strategy
        strategy.load_model_state_dict(strategy.load_checkpoint(best, weights_only=False))


def finetune(
    model, data: RunDataModule, run: FitState, precision: str, callbacks: Sequence = ()
) -> Finetuned:
    """Stage 2: fine-tuning on decoded images, or on cached frozen-stage activations
    (`train.frozen_cache`); on rank zero, `model` ends with the best checkpoint's weights."""
    from skinclf.train.callbacks import EpochSummary

    cfg = run.cfg
    t0 = time.perf_counter()
    data.finetune_on(model)
    data.setup("fit")
    if cfg.train.frozen_cache:
        run.timings["activations_seconds"] = time.perf_counter() - t0
        prepared = data.prepared
        n = len(prepared.labels["train"]) if prepared.pool is None else len(prepared.pool)
        run.log(
            f"frozen stages cached for {n} x "
            f"{cfg.train.frozen_views} training views in "
            f"{run.timings['activations_seconds']:.0f} s; fine-tuning blocks {model.prefix_blocks}+"
        )
    summary = EpochSummary(cfg.train.epochs, log=run.log)
    trainer = finetune_trainer(run, finetune_callbacks(run, summary, callbacks), precision)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # Lightning warns of "module(s) in eval mode", the frozen stages included by design;
        # TrainModeCheck checks the modes exactly instead. Only this fit is silenced.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        trainer.fit(
            model,
            datamodule=data,
            ckpt_path=str(TrainingRun(run.out).last) if run.resuming else None,
        )
    run.timings["finetune_seconds"] = time.perf_counter() - t0
    done = Finetuned(trainer.current_epoch, summary.images_per_second, trainer.is_global_zero)
    if done.global_zero:
        model.prefix_blocks = None  # back to images in, for prediction
        load_best(trainer, run.checkpoints)
    return done


def bars(progress: bool) -> bool:
    """Lightning's progress bars only on a terminal: written to a log file (`nohup`, CI), their
    last frame is a block of wrapped columns, and the epoch lines say the same."""
    return progress and sys.stdout.isatty()
