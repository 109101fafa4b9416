"""`skinclf train`: everything from a dataset folder to a finished run folder.

Steps (each writes into the run folder, DESIGN.md): resolve config -> load table -> split ->
decode cache -> stage 1 (head on cached frozen features) -> stage 2 (fine-tuning, Lightning
Trainer, best checkpoint by validation balanced accuracy) -> val/test predictions -> metrics.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf import atomic
from skinclf.classes import CLASSES, NUM_CLASSES
from skinclf.config import RunConfig, check_resume, read_config, save_config
from skinclf.errors import ConfigError, DataError
from skinclf.inference.precision import resolve_precision

SPLITS = ("train", "val", "test", "calib")


@dataclass
class TrainResult:
    out: Path
    metrics: dict
    seconds: float
    epochs_done: int = 0
    images_per_second: float | None = None
    extra: dict = field(default_factory=dict)


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (device lines, tips, known warnings) off the screen."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (it sets its loggers to INFO when first imported)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*number of training batches.*",
        ".*LeafSpec.*",
        ".*litlogger.*",
        ".*does not have many workers.*",
        ".*Checkpoint directory.*exists.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def is_global_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("GLOBAL_RANK", "0"))) == 0


def prepare_split(
    table: pd.DataFrame, cfg: RunConfig, out: Path, split_file: Path | None, resume: bool
) -> pd.DataFrame:
    """The run's split: a given file, the run's own on resume, or a new grouped split."""
    from skinclf.data.split import read_split, split_dataset

    if split_file is not None:
        return read_split(split_file, table)
    if resume and (out / "split.csv").is_file():
        return read_split(out / "split.csv", table)
    d = cfg.data
    return split_dataset(table, val=d.val, test=d.test, calib=d.calib, seed=cfg.seed)


def _check_resume_split(out: Path, split_file: Path | str | None) -> None:
    """A resumed run keeps its split.csv: another --split is refused."""
    if split_file is None or not (out / "split.csv").is_file() or not Path(split_file).is_file():
        return  # (a missing or malformed --split gets read_split's error)

    def assignments(path: Path) -> set[tuple[str, str]] | None:
        try:
            t = pd.read_csv(path, dtype=str)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
            return None  # not a CSV: read_split says so in one sentence, once the data is read
        return set(zip(t.get("image_id", []), t.get("split", []), strict=False))

    own, given = assignments(out / "split.csv"), assignments(Path(split_file))
    if own is not None and given is not None and own != given:
        raise ConfigError(
            f"Cannot resume {out} with --split {split_file}: it differs from the run's own "
            "split.csv; resume without --split, or start a new run (another --out)."
        )


def check_training_split(table: pd.DataFrame, split: pd.DataFrame) -> None:
    joined = table.merge(split, on="image_id")
    for name in ("train", "val"):
        part = joined[(joined["split"] == name) & (joined["label"].astype(str) != "")]
        if part.empty:
            raise DataError(f"The {name} split has no labelled image; check the split file.")
    train = joined[joined["split"] == "train"]
    missing = [c for c in CLASSES if not (train["label"] == c).any()]
    if missing:
        raise DataError(
            f"Class {', '.join(missing)} has no image in the training split; add images of it, "
            "or use a split that puts some in train."
        )


def _trainer_kwargs(cfg: RunConfig, precision: str) -> dict:
    t = cfg.trainer
    return {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": t.strategy,
        "num_nodes": t.num_nodes,
        "precision": precision,
    }


def _loader(dataset, batch_size: int, workers: int = 0, sampler=None):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=False,
    )


def _logger(cfg: RunConfig, out: Path):
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


def train_head(
    cfg: RunConfig,
    loss,
    feats: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    in_features: int,
    out: Path,
    progress: bool,
):
    """Stage 1: fit the head on cached features; returns the head with the best val balanced
    accuracy."""
    import copy

    import lightning as L
    import torch
    from torch.utils.data import TensorDataset

    from skinclf.train.callbacks import BestWeights
    from skinclf.train.module import HeadClassifier

    module = HeadClassifier(cfg, loss, in_features)
    train_ds = TensorDataset(torch.from_numpy(feats["train"]), torch.from_numpy(labels["train"]))
    val_ds = TensorDataset(torch.from_numpy(feats["val"]), torch.from_numpy(labels["val"]))
    from skinclf.train.samplers import EpochSampler

    sampler = EpochSampler(labels["train"], cfg.train.sampler, seed=cfg.seed)
    best = BestWeights("val_balanced_accuracy")
    trainer = L.Trainer(
        max_epochs=cfg.transfer.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=[best],
        default_root_dir=str(out),
        num_sanity_val_steps=0,
        **_trainer_kwargs(cfg, "32"),  # same devices/strategy as stage 2; fp32 for the head
    )
    trainer.fit(
        module,
        _loader(train_ds, cfg.transfer.batch_size, sampler=sampler),
        _loader(val_ds, 512),
    )
    best.restore(module)
    return copy.deepcopy(module.head), best.best_score


@dataclass
class PreparedData:
    """A dataset ready for training: labelled table with its split, decoded images, and the
    rows, ids and label indices of each split."""

    table: pd.DataFrame
    images: object  # DecodedImages
    rows: dict[str, np.ndarray]
    ids: dict[str, list[str]]
    labels: dict[str, np.ndarray]


def prepare_data(
    data: Path | str,
    cfg: RunConfig,
    out: Path | None = None,
    split_file: Path | str | None = None,
    resume: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> PreparedData:
    """Load, split (checked) and decode a dataset as `cfg` says."""
    from skinclf.data.cache import build_cache
    from skinclf.data.dataset import label_indices
    from skinclf.data.formats import load_dataset

    table = load_dataset(data, cfg.data.format)
    table = table[table["label"].astype(str) != ""].reset_index(drop=True)
    split = prepare_split(
        table, cfg, out or Path("."), Path(split_file) if split_file else None, resume
    )
    check_training_split(table, split)
    table = table.merge(split[["image_id", "split"]], on="image_id")
    images = build_cache(
        table, cfg.data.image_size, cfg.data.resize, cache_dir=cache_dir, progress=progress
    )
    parts = {s: table[table["split"] == s] for s in SPLITS}
    return PreparedData(
        table=table,
        images=images,
        rows={s: images.rows(p["image_id"]) for s, p in parts.items()},
        ids={s: p["image_id"].tolist() for s, p in parts.items()},
        labels={s: np.asarray(label_indices(p["label"]), dtype=np.int64) for s, p in parts.items()},
    )


def build_model(cfg: RunConfig, prepared: PreparedData):
    """Backbone (pretrained as configured) + head, normalisation, and the training loss."""
    import torch

    from skinclf.models import create_backbone
    from skinclf.train.losses import build_loss, class_counts
    from skinclf.train.module import SkinClassifier

    backbone, info = create_backbone(
        cfg.model.backbone,
        pretrained=cfg.model.pretrained,
        weights=Path(cfg.model.weights) if cfg.model.weights else None,
        drop_path_rate=cfg.model.drop_path_rate,
    )
    if cfg.data.normalize == "dataset":
        mean, std = (
            tuple(float(v) for v in a) for a in prepared.images.mean_std(prepared.rows["train"])
        )
    else:
        mean, std = info.mean, info.std
    loss = build_loss(cfg.loss, class_counts(prepared.labels["train"], NUM_CLASSES))
    model = SkinClassifier(cfg, loss, backbone, info.stages, mean, std, int(info.num_features))
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, loss


def _cache_key(cfg: RunConfig, images) -> dict[str, object]:
    """What the feature and activation caches depend on besides the weights and the rows."""
    return {"backbone": cfg.model.backbone, "decode": images.key, "size": images.size}


def frozen_features(
    model,
    cfg: RunConfig,
    prepared: PreparedData,
    cache_dir: Path,
    precision: str,
    progress: bool = True,
    splits: tuple[str, ...] = ("train", "val"),
) -> dict[str, np.ndarray]:
    """Pooled features of the (untrained) backbone per split, from the feature cache."""
    from skinclf.inference.feature_cache import cached_features

    images = prepared.images
    key = _cache_key(cfg, images)
    return {
        s: cached_features(
            model, images.images, prepared.rows[s], key, cache_dir, precision, progress=progress
        )
        for s in splits
    }


def activation_datasets(
    model,
    cfg: RunConfig,
    prepared: PreparedData,
    cache_dir: Path,
    precision: str,
    sampler,
    progress: bool = True,
):
    """Datasets of cached frozen-stage activations for training and validation
    (`train.frozen_cache`); switches `model` to take activations as input."""
    from skinclf.train.activations import (
        ActivationDataset,
        ViewSampler,
        cached_activations,
        frozen_blocks,
    )

    k = frozen_blocks(model.backbone, model.stages, cfg.train.unfreeze)
    images = prepared.images
    key = _cache_key(cfg, images)
    datasets = []
    for split, mode, views in (("train", "train", cfg.train.frozen_views), ("val", "none", 1)):
        acts = cached_activations(
            model,
            images.images,
            prepared.rows[split],
            k,
            mode,
            views,
            key,
            cache_dir,
            precision,
            seed=cfg.seed,
            progress=progress,
            description=f"frozen stages ({split})",
        )
        datasets.append(ActivationDataset(acts, prepared.labels[split]))
    model.prefix_blocks = k
    train_ds, val_ds = datasets
    return train_ds, val_ds, ViewSampler(sampler, train_ds.n_views, seed=cfg.seed)


def fit(
    data: Path | str,
    out: Path | str,
    cfg: RunConfig,
    split_file: Path | str | None = None,
    cache_dir: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence | None = None,
    log=print,
    predict_splits: Sequence[str] = ("val", "test", "calib"),
) -> TrainResult:
    """Train a model as `cfg` says and fill the run folder `out`. The one function a user, the
    CLI and the tuner call (the tuner predicts only `val`: a search never sees test)."""
    import lightning as L
    import torch

    from skinclf.data.cache import default_cache_dir
    from skinclf.data.dataset import CachedImageDataset
    from skinclf.extras import require_extra
    from skinclf.models import check_pretrained_download, get_backbone_info
    from skinclf.provenance import provenance
    from skinclf.train.callbacks import AtomicCheckpointIO, EpochSummary, TrainModeCheck
    from skinclf.train.report import finish_run
    from skinclf.train.samplers import EpochSampler

    started = time.perf_counter()
    quiet_lightning()
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    last_ckpt = out / "checkpoints" / "last.ckpt"
    if resume and not last_ckpt.is_file() and not (out / "config.yaml").is_file():
        raise ConfigError(f"Nothing to resume in {out}: it has no checkpoints/last.ckpt.")
    if not resume and (out / "checkpoints" / "last.ckpt").is_file():
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out."
        )
    if resume and (out / "config.yaml").is_file():  # resumed as it was started, or not at all
        check_resume(read_config(out / "config.yaml"), cfg, out)
        _check_resume_split(out, split_file)
    # everything that can fail without training fails here, before a file is written:
    # unknown backbone, missing optional logger package, hub weights that cannot be downloaded
    info = get_backbone_info(cfg.model.backbone)
    if cfg.trainer.logger != "csv":
        require_extra(cfg.trainer.logger, f"trainer.logger={cfg.trainer.logger}")
    check_pretrained_download(info, cfg.model.pretrained, cfg.model.weights)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    infer_precision = resolve_precision(
        cfg.trainer.precision, cfg.trainer.accelerator, training=False
    )
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)

    prepared = prepare_data(data, cfg, out, split_file, resume, cache_dir, progress)
    table, images, rows, ids, labels = (
        prepared.table,
        prepared.images,
        prepared.rows,
        prepared.ids,
        prepared.labels,
    )
    if is_global_zero():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        atomic.write_text(out / "split.csv", table[["image_id", "split"]].to_csv(index=False))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, loss = build_model(cfg, prepared)
    if cfg.train.frozen_cache and cfg.train.epochs > 0:
        from skinclf.train.activations import frozen_blocks

        frozen_blocks(model.backbone, model.stages, cfg.train.unfreeze)  # error before training
    if is_global_zero():
        prov = provenance(
            cfg.seed,
            table,
            {
                "data_path": str(Path(data).resolve()),
                "data_format": cfg.data.format,
                "precision": {"train": precision, "inference": infer_precision},
                "normalize": {
                    "mean": model.mean.flatten().tolist(),
                    "std": model.std.flatten().tolist(),
                },
                "decode_cache": str(images.path),
            },
        )
        atomic.write_text(out / "provenance.json", json.dumps(prov, indent=2))

    timings: dict[str, float] = {}
    # Stage 1: transfer learning on cached frozen features (skipped when resuming stage 2).
    if cfg.transfer.epochs > 0 and not (resume and last_ckpt.is_file()):
        t0 = time.perf_counter()
        feats = frozen_features(model, cfg, prepared, cache_dir, infer_precision, progress)
        timings["features_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        head, score = train_head(cfg, loss, feats, labels, model.num_features, out, progress)
        model.head.load_state_dict(head.state_dict())
        timings["transfer_seconds"] = time.perf_counter() - t0
        log(
            f"stage 1 (head on frozen features): val balanced accuracy {score:.3f} "
            f"in {timings['transfer_seconds']:.0f} s (+{timings['features_seconds']:.0f} s "
            "features)"
        )

    # Stage 2: fine-tuning with Lightning's Trainer.
    epochs_done = 0
    train_ips = None
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if cfg.train.epochs > 0:
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        sampler = EpochSampler(labels["train"], cfg.train.sampler, seed=cfg.seed)
        if cfg.train.frozen_cache:
            t0 = time.perf_counter()
            train_ds, val_ds, sampler = activation_datasets(
                model, cfg, prepared, cache_dir, infer_precision, sampler, progress
            )
            timings["activations_seconds"] = time.perf_counter() - t0
            log(
                f"frozen stages cached for {len(labels['train'])} x {cfg.train.frozen_views} "
                f"training views in {timings['activations_seconds']:.0f} s; fine-tuning "
                f"blocks {model.prefix_blocks}+"
            )
        else:
            train_ds = CachedImageDataset(images, ids["train"], labels["train"])
            val_ds = CachedImageDataset(images, ids["val"], labels["val"])
        monitor = cfg.train.monitor
        mode = "min" if monitor.endswith("loss") else "max"
        summary = EpochSummary(cfg.train.epochs, log=log)
        cbs = [
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                filename="best",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                enable_version_counter=False,
            ),
            # every epoch (Lightning's save_last only follows improvements of `best`)
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                filename="last",
                monitor=None,
                save_top_k=1,
                enable_version_counter=False,
            ),
            summary,
            TrainModeCheck(),
            *(callbacks or []),
        ]
        if cfg.train.ema_decay:
            from lightning.pytorch.callbacks import EMAWeightAveraging

            cbs.append(EMAWeightAveraging(decay=cfg.train.ema_decay))
        if cfg.train.early_stopping_patience:
            cbs.append(
                EarlyStopping(monitor, patience=cfg.train.early_stopping_patience, mode=mode)
            )
        max_time = None
        if cfg.train.budget_minutes:
            spent = time.perf_counter() - started
            max_time = timedelta(seconds=max(60.0, cfg.train.budget_minutes * 60 - spent))
        if progress:
            from lightning.pytorch.callbacks import RichProgressBar

            cbs.append(RichProgressBar(leave=False))
        trainer = L.Trainer(
            max_epochs=cfg.train.epochs,
            max_time=max_time,
            logger=_logger(cfg, out),
            callbacks=cbs,
            gradient_clip_val=cfg.train.grad_clip,
            enable_progress_bar=progress,
            enable_model_summary=False,
            log_every_n_steps=10,
            num_sanity_val_steps=0,
            default_root_dir=str(out),
            plugins=[AtomicCheckpointIO()],  # a kill never leaves a half-written checkpoint
            **_trainer_kwargs(cfg, precision),
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # Lightning warns of "module(s) in eval mode", the frozen stages included by design;
            # TrainModeCheck checks the modes exactly instead. Only this fit is silenced.
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
            trainer.fit(
                model,
                _loader(train_ds, cfg.train.batch_size, cfg.trainer.num_workers, sampler),
                _loader(val_ds, cfg.predict.batch_size, cfg.trainer.num_workers),
                ckpt_path=str(last_ckpt) if resume and last_ckpt.is_file() else None,
            )
        timings["finetune_seconds"] = time.perf_counter() - t0
        epochs_done = trainer.current_epoch
        train_ips = summary.images_per_second
        if not trainer.is_global_zero:
            return TrainResult(out, {}, time.perf_counter() - started, epochs_done)
        model.prefix_blocks = None  # back to images in, for prediction
        best_path = out / "checkpoints" / "best.ckpt"
        if best_path.is_file():
            state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
            model.load_state_dict(state)
    else:
        AtomicCheckpointIO().save_checkpoint(
            {"state_dict": model.state_dict(), "epoch": 0}, out / "checkpoints" / "best.ckpt"
        )

    seconds = time.perf_counter() - started
    model = model.to("cpu")
    metrics = finish_run(
        model,
        cfg,
        out,
        images,
        table,
        rows,
        ids,
        labels,
        infer_precision,
        extra={
            "seconds": round(seconds, 1),
            "epochs_done": epochs_done,
            "train_images_per_second": train_ips,
            **{k: round(v, 1) for k, v in timings.items()},
        },
        progress=progress,
        splits=predict_splits,
    )
    return TrainResult(out, metrics, seconds, epochs_done, train_ips)
