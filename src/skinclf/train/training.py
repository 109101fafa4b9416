"""`skinclf train`: everything from a dataset folder to a finished run folder.

Steps (each writes into the run folder, DESIGN.md): resolve config -> load table -> split ->
decode cache (train/datamodule.py) -> stage 1 (head on cached frozen features) -> stage 2
(fine-tuning, Lightning Trainer, best checkpoint by validation balanced accuracy; both stages in
train/stages.py) -> val/test predictions -> metrics (train/report.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from skinclf import atomic
from skinclf.classes import NUM_CLASSES
from skinclf.config import RunConfig, check_resume, read_config, save_config
from skinclf.contracts.run_folder import TrainingRun
from skinclf.errors import ConfigError
from skinclf.inference.precision import resolve_precision

if TYPE_CHECKING:
    from skinclf.train.datamodule import PreparedData


@dataclass
class TrainResult:
    out: Path
    metrics: dict
    seconds: float
    epochs_done: int = 0
    images_per_second: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FitOptions:
    """The less common choices of `fit`: a given `split_file` (else, on resume, the run's own
    split.csv, else a new grouped split), `callbacks` that join fine-tuning's Trainer (e.g.
    tuning's pruning), the splits whose predictions end the run (`predict_splits`; the tuner
    predicts only val, a search never sees test) and `cache_splits`: the splits whose images
    the feature and activation caches cover, so that runs on other splits of the same images
    share them (cross-validation's folds)."""

    split_file: Path | str | None = None
    callbacks: Sequence | None = None
    predict_splits: Sequence[str] = ("val", "test", "calib")
    cache_splits: Sequence[str] | None = None


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


def check_run_folder(out: Path, cfg: RunConfig, resume: bool, split_file) -> bool:
    """Refuses a resume with nothing to resume, another run's folder without --resume, and a
    resume with other settings or another split; returns whether stage 2 resumes from
    checkpoints/last.ckpt."""
    from skinclf.train.datamodule import check_resume_split

    files = TrainingRun(out)
    last_ckpt = files.last
    best_ckpt = files.best  # a finished run's, head-only runs' included
    if resume and not last_ckpt.is_file() and not files.config.is_file():
        raise ConfigError(f"Nothing to resume in {out}: it has no checkpoints/last.ckpt.")
    if not resume and (last_ckpt.is_file() or best_ckpt.is_file()):
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out."
        )
    if resume and files.config.is_file():  # resumed as it was started, or not at all
        check_resume(read_config(files.config), cfg, out)
        check_resume_split(out, split_file)
    return resume and last_ckpt.is_file()


def preflight(cfg: RunConfig) -> tuple[str, str]:
    """Everything that can fail without training fails here, before a file is written: unknown
    backbone, missing optional logger package, hub weights that cannot be downloaded. Returns
    the training and the inference precision."""
    import torch

    from skinclf.extras import require_extra
    from skinclf.models import check_pretrained_download, get_backbone_info

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
    return precision, infer_precision


@rank_zero_only
def write_run_start(out: Path, cfg: RunConfig, table: pd.DataFrame) -> None:
    """config.yaml and split.csv (rank zero only)."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, TrainingRun(out).config)
    atomic.write_text(TrainingRun(out).split, table[["image_id", "split"]].to_csv(index=False))


@rank_zero_only
def write_provenance(
    out: Path, cfg: RunConfig, data: Path | str, prepared: PreparedData, model, precisions: dict
) -> None:
    """provenance.json: seed, data fingerprint, versions, precisions, normalisation and the
    decode cache (rank zero only)."""
    from skinclf.provenance import provenance

    prov = provenance(
        cfg.seed,
        prepared.table,
        {
            "data_path": str(Path(data).resolve()),
            "data_format": cfg.data.format,
            "precision": precisions,
            "normalize": {
                "mean": model.mean.flatten().tolist(),
                "std": model.std.flatten().tolist(),
            },
            "decode_cache": str(prepared.images.path),
        },
    )
    atomic.write_text(TrainingRun(out).provenance, json.dumps(prov, indent=2))


def check_frozen_prefix(cfg: RunConfig, model) -> None:
    """With train.frozen_cache, the frozen prefix to cache must exist: an error before training."""
    if cfg.train.frozen_cache and cfg.train.epochs > 0:
        from skinclf.train.activations import frozen_blocks

        frozen_blocks(model.backbone, model.stages, cfg.train.unfreeze)


def save_untrained(model, out: Path) -> None:
    """train.epochs=0: the model as it is (after stage 1) is the run's best.ckpt."""
    from skinclf.train.callbacks import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": model.state_dict(), "epoch": 0, "hyper_parameters": dict(model.hparams)},
        TrainingRun(out).best,
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


def prepare_data(data_module, out: Path, cfg: RunConfig):  # -> PreparedData
    """The split and the decode cache ready, distillation targets checked (a teacher that
    misses a training image fails here), config.yaml and split.csv written."""
    data_module.setup()
    prepared = data_module.prepared
    assert prepared is not None
    data_module.distill_targets()
    write_run_start(out, cfg, prepared.table)
    return prepared


def fit(
    data: Path | str,
    out: Path | str,
    cfg: RunConfig,
    *,
    cache_dir: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
    options: FitOptions = FitOptions(),
) -> TrainResult:
    """Train a model as `cfg` says and fill the run folder `out` (`resume`: continue the run
    in it from its last checkpoint); the decode, feature and activation caches go under
    `cache_dir` (default: `default_cache_dir()`). The one function a user, the CLI, the tuner
    and cross-validation call; `options`: a given split, extra callbacks, the predicted splits
    and the cached splits (`FitOptions`)."""
    import lightning as L

    from skinclf.data.cache import default_cache_dir
    from skinclf.train.datamodule import RunDataModule, RunSplit
    from skinclf.train.report import finish_run
    from skinclf.train.stages import Finetuned, FitState, finetune, transfer

    started = time.perf_counter()
    quiet_lightning()
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    resuming = check_run_folder(out, cfg, resume, options.split_file)
    precision, infer_precision = preflight(cfg)
    run = FitState(cfg, out, resuming, started, progress, log)

    run_split = RunSplit(out, options.split_file, resume)
    data_module = RunDataModule(
        data, cfg, cache_dir, infer_precision, run_split, progress, options.cache_splits
    )
    prepared = prepare_data(data_module, out, cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, loss = build_model(cfg, prepared)
    check_frozen_prefix(cfg, model)
    precisions = {"train": precision, "inference": infer_precision}
    write_provenance(out, cfg, data, prepared, model, precisions)

    if cfg.transfer.epochs > 0 and not resuming:  # (skipped when resuming stage 2)
        transfer(model, loss, data_module, run)
    TrainingRun(out).checkpoints.mkdir(parents=True, exist_ok=True)
    done = Finetuned()
    if cfg.train.epochs > 0:
        done = finetune(model, data_module, run, precision, options.callbacks or [])
        if not done.global_zero:
            return TrainResult(out, {}, time.perf_counter() - started, done.epochs)
    else:
        save_untrained(model, out)

    seconds = time.perf_counter() - started
    model = model.to("cpu")
    metrics = finish_run(
        model, cfg, out, prepared, infer_precision, run.record(seconds, done), progress,
        splits=options.predict_splits,
    )  # fmt: skip
    return TrainResult(out, metrics, seconds, done.epochs, done.images_per_second)
