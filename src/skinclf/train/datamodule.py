"""The data of a training run as Lightning DataModules: the grouped split, the decode cache and
the datasets each stage trains on (pooled frozen features for the head; decoded images, or cached
frozen-stage activations, for fine-tuning)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler, TensorDataset

from skinclf.classes import CLASSES
from skinclf.config import RunConfig
from skinclf.contracts.run_folder import TrainingRun
from skinclf.errors import ConfigError, DataError
from skinclf.train.samplers import Batches, EpochSampler

SPLITS = ("train", "val", "test", "calib")


@dataclass
class PreparedData:
    """A dataset ready for training: labelled table with its split, decoded images, and the
    rows, ids and label indices of each split."""

    table: pd.DataFrame
    images: object  # DecodedImages
    rows: dict[str, np.ndarray]
    ids: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    # rows of the images whose feature and activation caches are shared with other runs (all
    # the images of a cross-validation, the same in every fold); None: each split its own
    pool: np.ndarray | None = None

    def pool_positions(self, split: str) -> np.ndarray | None:
        """Positions of `split`'s rows in the pool (None without a pool)."""
        if self.pool is None:
            return None
        return np.searchsorted(self.pool, self.rows[split])


@dataclass(frozen=True)
class RunSplit:
    """Which split a run trains on (`prepare_split`): the file `split_file`, else on `resume`
    the run folder `out`'s own split.csv, else a new grouped split."""

    out: Path | None = None
    split_file: Path | str | None = None
    resume: bool = False


def prepare_split(
    table: pd.DataFrame, cfg: RunConfig, out: Path, split_file: Path | None, resume: bool
) -> pd.DataFrame:
    """The run's split: a given file, the run's own on resume, or a new grouped split."""
    from skinclf.data.split import read_split, split_dataset

    if split_file is not None:
        return read_split(split_file, table)
    if resume and TrainingRun(out).split.is_file():
        return read_split(TrainingRun(out).split, table)
    d = cfg.data
    return split_dataset(table, val=d.val, test=d.test, calib=d.calib, seed=cfg.seed)


def check_resume_split(out: Path, split_file: Path | str | None) -> None:
    """A resumed run keeps its split.csv: another --split is refused."""
    if split_file is None or not TrainingRun(out).split.is_file() or not Path(split_file).is_file():
        return  # (a missing or malformed --split gets read_split's error)

    def assignments(path: Path) -> set[tuple[str, str]] | None:
        try:
            t = pd.read_csv(path, dtype=str)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
            return None  # not a CSV: read_split says so in one sentence, once the data is read
        return set(zip(t.get("image_id", []), t.get("split", []), strict=False))

    own, given = assignments(TrainingRun(out).split), assignments(Path(split_file))
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


def prepare_data(
    data: Path | str,
    cfg: RunConfig,
    out: Path | None = None,
    split_file: Path | str | None = None,
    resume: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    cache_splits: Sequence[str] | None = None,
) -> PreparedData:
    """Load, split (checked) and decode a dataset as `cfg` says; `cache_splits`: the splits
    whose images form the shared cache pool (`PreparedData.pool`)."""
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
    rows = {s: images.rows(p["image_id"]) for s, p in parts.items()}
    pool = None
    if cache_splits:
        pool = np.unique(np.concatenate([rows[s] for s in cache_splits]))
    return PreparedData(
        table=table,
        images=images,
        rows=rows,
        ids={s: p["image_id"].tolist() for s, p in parts.items()},
        labels={s: np.asarray(label_indices(p["label"]), dtype=np.int64) for s, p in parts.items()},
        pool=pool,
    )


def loader(
    dataset: Dataset, batch_size: int, workers: int = 0, sampler: Sampler | None = None
) -> DataLoader:
    """A DataLoader in the order of `sampler` (or the dataset's), keeping the last batch."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=False,
    )


def cache_key(cfg: RunConfig, images) -> dict[str, object]:
    """What the feature and activation caches depend on besides the weights and the rows."""
    from skinclf.inference.feature_cache import images_key

    return images_key(cfg.model.backbone, images)


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
    from skinclf.inference.batch import InferenceSettings
    from skinclf.inference.feature_cache import cached_features

    images = prepared.images
    key = cache_key(cfg, images)
    settings = InferenceSettings(precision=precision)

    def compute(rows: np.ndarray) -> np.ndarray:
        return cached_features(model, images.images, rows, key, cache_dir, settings, progress)

    if prepared.pool is None:
        return {s: compute(prepared.rows[s]) for s in splits}
    pooled = compute(prepared.pool)
    return {s: pooled[prepared.pool_positions(s)] for s in splits}


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
        ActivationViews,
        ViewSampler,
        cached_activations,
        frozen_blocks,
    )

    k = frozen_blocks(model.backbone, model.stages, cfg.train.unfreeze)
    images = prepared.images
    key = cache_key(cfg, images)
    datasets = []
    for split, mode, views in (("train", "train", cfg.train.frozen_views), ("val", "none", 1)):
        acts = cached_activations(
            model,
            images.images,
            prepared.rows[split] if prepared.pool is None else prepared.pool,
            ActivationViews(k, mode, views, seed=cfg.seed, precision=precision),
            key,
            cache_dir,
            progress=progress,
            description=f"frozen stages ({split})",
        )
        positions = prepared.pool_positions(split)
        datasets.append(ActivationDataset(acts, prepared.labels[split], positions))
    model.prefix_blocks = k
    train_ds, val_ds = datasets
    return train_ds, val_ds, ViewSampler(sampler, train_ds.n_views, seed=cfg.seed)


class FeatureDataModule(L.LightningDataModule):
    """Stage 1's data: pooled frozen-backbone features and labels of train and val."""

    def __init__(
        self,
        cfg: RunConfig,
        feats: dict[str, np.ndarray],
        labels: dict[str, np.ndarray],
        targets: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.feats, self.labels = cfg, feats, labels
        self.targets = targets  # soft training targets (loss.distill), else the labels
        self.datasets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        from skinclf.train.distill import SoftTargets

        for split in ("train", "val"):
            if split not in self.datasets:
                self.datasets[split] = TensorDataset(
                    torch.from_numpy(self.feats[split]), torch.from_numpy(self.labels[split])
                )
        if self.targets is not None and not isinstance(self.datasets["train"], SoftTargets):
            self.datasets["train"] = SoftTargets(self.datasets["train"], self.targets)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(self.labels["train"], self.cfg.train.sampler, seed=self.cfg.seed)
        # whole batches of feature rows at a time (one indexing each, not one row at a time)
        batches = Batches(sampler, self.cfg.transfer.batch_size)
        return DataLoader(self.datasets["train"], batch_size=None, sampler=batches)

    def val_dataloader(self) -> DataLoader:
        batches = Batches(SequentialSampler(self.datasets["val"]), 512)
        return DataLoader(self.datasets["val"], batch_size=None, sampler=batches)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """On the CPU the feature batches are already where the head is (Lightning's generic
        move walks the batch at every step)."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)


class RunDataModule(L.LightningDataModule):
    """A run's data: its grouped split and decode cache (`prepared`), the frozen features of
    stage 1 (`features`) and the datasets of fine-tuning (`finetune_on`, then `setup("fit")`).

    `fit` calls `setup` itself before the Trainer does (the model is built on the split and the
    decoded images); a later call reuses what an earlier one built.
    """

    def __init__(
        self,
        source: Path | str,
        cfg: RunConfig,
        cache_dir: Path,
        infer_precision: str,
        run_split: RunSplit = RunSplit(),
        progress: bool = True,
        cache_splits: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.source, self.cfg, self.cache_dir = source, cfg, cache_dir
        self.cache_splits = cache_splits
        self.infer_precision, self.run_split, self.progress = infer_precision, run_split, progress
        self.prepared: PreparedData | None = None
        self.model = None  # the model fine-tuned next (its frozen stages feed the activations)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.sampler: Sampler | None = None
        self._targets: np.ndarray | None = None  # soft training targets (loss.distill)

    def setup(self, stage: str | None = None) -> None:
        """Builds (or reuses) the split and the decode cache; for "fit", once a model is set,
        the fine-tuning datasets."""
        if self.prepared is None:
            self.prepared = prepare_data(
                self.source,
                self.cfg,
                self.run_split.out,
                self.run_split.split_file,
                self.run_split.resume,
                self.cache_dir,
                self.progress,
                self.cache_splits,
            )
        if stage == "fit" and self.model is not None and self.train_set is None:
            self.train_set, self.val_set, self.sampler = self._finetune_datasets()

    def features(self, model) -> dict[str, np.ndarray]:
        """Stage 1's inputs: `model`'s pooled frozen-backbone features of train and val."""
        assert self.prepared is not None, "setup() first"
        return frozen_features(
            model, self.cfg, self.prepared, self.cache_dir, self.infer_precision, self.progress
        )

    def finetune_on(self, model) -> None:
        """Fine-tune `model` next: the next `setup("fit")` builds its datasets."""
        self.model, self.train_set = model, None

    def _finetune_datasets(self) -> tuple[Dataset, Dataset, Sampler]:
        """Training and validation sets with the training sampler: decoded images, or the
        cached frozen-stage activations (`train.frozen_cache`)."""
        from skinclf.data.dataset import CachedImageDataset
        from skinclf.train.distill import SoftTargets

        p, cfg = self.prepared, self.cfg
        assert p is not None
        sampler: Sampler = EpochSampler(p.labels["train"], cfg.train.sampler, seed=cfg.seed)
        if cfg.train.frozen_cache:
            train, val, sampler = activation_datasets(
                self.model, cfg, p, self.cache_dir, self.infer_precision, sampler, self.progress
            )
        else:
            train = CachedImageDataset(p.images, p.ids["train"], p.labels["train"])
            val = CachedImageDataset(p.images, p.ids["val"], p.labels["val"])
        targets = self.distill_targets()
        if targets is not None:
            train = SoftTargets(train, targets, getattr(train, "n_views", 1))
        return train, val, sampler

    def distill_targets(self) -> np.ndarray | None:
        """The training images' soft targets (`loss.distill`), else None (read once)."""
        from skinclf.train.distill import distill_targets

        assert self.prepared is not None, "setup() first"
        if self.cfg.loss.distill and self._targets is None:
            p = self.prepared
            self._targets = distill_targets(self.cfg, p.ids["train"], p.labels["train"])
        return self._targets

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "finetune_on(model) and setup('fit') first"
        t = self.cfg
        return loader(self.train_set, t.train.batch_size, t.trainer.num_workers, self.sampler)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "finetune_on(model) and setup('fit') first"
        return loader(self.val_set, self.cfg.predict.batch_size, self.cfg.trainer.num_workers)
