"""Partial fine-tuning on cached activations of the frozen early stages.

With `train.unfreeze=N` the first stages of the backbone never change, so their output for an
image is the same every epoch. With `train.frozen_cache: true` it is computed once (in bf16 where
that is faster) for a fixed set of views of every image: for training, `train.frozen_views`
independent draws of the configured augmentation (D4, random-resized-crop, colour jitter); for
validation, the plain image, as ordinary fine-tuning validates. They are stored as float16 under
the cache folder, and fine-tuning then runs only the trainable stages, drawing one cached view
per training image each epoch. On a CPU this makes an epoch several times cheaper; the price is
that augmentation is limited to the cached views.

The model's parameters and checkpoints are those of the ordinary `SkinClassifier`: a run trained
this way predicts from images like any other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from rich.progress import Progress
from torch.utils.data import Dataset, Sampler

from skinclf.atomic import atomic_path, open_memmap
from skinclf.config import AugmentConfig
from skinclf.errors import ConfigError
from skinclf.faults import fault_point
from skinclf.inference.batch import autocast_context
from skinclf.inference.feature_cache import backbone_key, cache_file, load_cached
from skinclf.models.modes import eval_mode
from skinclf.models.registry import BlockSplit, block_split
from skinclf.train.augment import augment_batch
from skinclf.train.mixing import MIXING_FIELDS


def _split(backbone: torch.nn.Module) -> BlockSplit:
    """The registry's stem / blocks / head split of `backbone`, or the error that it has none."""
    split = block_split(backbone)
    if split is None:
        raise ConfigError(
            "train.frozen_cache needs an EfficientNet-style backbone (EfficientNet, "
            "EfficientNet-Lite, MobileNetV2: a stem, one block sequence, a head); "
            f"{type(backbone).__name__} is not one. "
            "Set train.frozen_cache=false (the default preset turns it on)."
        )
    return split


def frozen_blocks(backbone: torch.nn.Module, stages: Sequence[str], unfreeze: int | str) -> int:
    """How many blocks of the backbone's block sequence are frozen under `unfreeze` (the cached
    prefix is the stem + those blocks). Needs a backbone the registry can split
    (`skinclf.models.block_split`): timm's EfficientNet, EfficientNet-Lite and MobileNetV2."""
    split = _split(backbone)
    if unfreeze == "all":
        raise ConfigError(
            "train.frozen_cache caches the frozen stages, but train.unfreeze is 'all'; "
            "set train.unfreeze to a number of stages (e.g. 5) or train.frozen_cache=false."
        )
    n_frozen = max(0, len(stages) - int(unfreeze))
    frozen = stages[:n_frozen]
    if not all(name in frozen for name in split.stem):
        raise ConfigError(
            f"train.unfreeze={unfreeze} leaves no frozen prefix to cache (of {len(stages)} "
            "stages); choose a smaller train.unfreeze or train.frozen_cache=false."
        )
    return sum(1 for s in frozen if s.startswith(f"{split.blocks}."))


def prefix_forward(model: torch.nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Activations after the stem and the first `k` blocks of uint8 / [0, 1] images."""
    bb = model.backbone
    split = _split(bb)
    h = model.normalize(x)
    if model.cfg.trainer.channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    for name in split.stem:
        h = bb.get_submodule(name)(h)
    for block in bb.get_submodule(split.blocks)[:k]:
        h = block(h)
    return h


def suffix_features(model: torch.nn.Module, h: torch.Tensor, k: int) -> torch.Tensor:
    """Pooled features from prefix activations `h` (the rest of the backbone's forward)."""
    bb = model.backbone
    split = _split(bb)
    if model.cfg.trainer.channels_last:
        h = h.contiguous(memory_format=torch.channels_last)
    for block in bb.get_submodule(split.blocks)[k:]:
        h = block(h)
    for name in split.head:
        h = bb.get_submodule(name)(h)
    return bb.get_submodule(split.pool)(h).flatten(1)


def _views(
    x: torch.Tensor, mode: str, n_views: int, augment: AugmentConfig, g: torch.Generator
) -> list[torch.Tensor]:
    """`train`: `n_views` independent draws of the training augmentation ([0, 1] floats);
    `none`, or no augmentation configured: the image itself (one view)."""
    if mode == "none" or not augment.enabled:
        return [x]
    return [augment_batch(x.float() / 255.0, augment, g) for _ in range(n_views)]


@dataclass(frozen=True)
class ActivationViews:
    """Which prefix activations a cache holds and how they are computed: the output of the stem
    and the first `k` blocks for `n_views` views of each image (`mode` "train": independent
    draws of the training augmentation from `seed`; "none": the image itself), in autocast
    `precision`, `batch_size` images at a time."""

    k: int
    mode: str
    n_views: int
    seed: int = 0
    precision: str = "32"
    batch_size: int = 32


@torch.inference_mode()
def cached_activations(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    views: ActivationViews,
    key_parts: dict[str, object],
    cache_dir: Path,
    progress: bool = True,
    description: str = "activations",
) -> np.ndarray:
    """(N, V, C, H, W) float16 prefix activations of `images[rows]`, memory-mapped from the cache.

    The key covers the backbone's weights and the input normalisation (not the head, so runs
    that differ only in stage 1 share it), `key_parts`, the precision, k, the views (mode,
    number, augmentation settings, seed) and the rows; written to a temporary file and renamed
    under a lock, so concurrent runs build it once.
    """
    augment = model.cfg.augment
    mode = views.mode
    parts = dict(
        key_parts,
        **backbone_key(model),
        precision=views.precision,
        k=views.k,
        mode=mode,
        views=views.n_views,
        # mixup/CutMix act on the cached views at training time: not part of the views
        augment=augment.model_dump_json(exclude=MIXING_FIELDS) if mode == "train" else "",
        seed=views.seed,
        channels_last=model.cfg.trainer.channels_last,
    )
    final = cache_file(cache_dir, "activations", parts, rows)
    with FileLock(str(final) + ".lock"):
        done = load_cached(final, mmap_mode="r")
        if done is not None:
            return done
        with eval_mode(model):
            _build_activations(model, images, rows, views, final, progress, description)
        return np.load(final, mmap_mode="r")


def _build_activations(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    views: ActivationViews,
    final: Path,
    progress: bool,
    description: str,
) -> None:
    """Compute the views' prefix activations into a temporary file, then rename it to `final`."""
    augment = model.cfg.augment
    device = next(model.parameters()).device
    rows = np.asarray(rows, dtype=np.int64)
    k, precision, batch_size = views.k, views.precision, views.batch_size
    g = torch.Generator().manual_seed(views.seed * 1_000_003 + 17)
    out = None
    with atomic_path(final) as tmp, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(rows))
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            order = np.argsort(idx)  # memmap reads are faster in sorted order
            x = torch.from_numpy(np.ascontiguousarray(images[idx[order]]))
            x = x[torch.from_numpy(np.argsort(order))].permute(0, 3, 1, 2).to(device)
            acts = []
            for view in _views(x, views.mode, views.n_views, augment, g):
                with autocast_context(precision, device):
                    acts.append(prefix_forward(model, view, k).float().half().cpu())
            batch = torch.stack(acts, 1).contiguous().numpy()
            if out is None:
                out = open_memmap(tmp, np.float16, (len(rows), *batch.shape[1:]))
            out[start : start + len(idx)] = batch
            bar.advance(task, len(idx))
            fault_point("activation-cache")
        assert out is not None, "no rows to cache"
        out.flush()
        del out


class ActivationDataset(Dataset):
    """Items `(activations, label)`: item `i * V + v` is view v of image i (V = 1: item i)."""

    def __init__(
        self, acts: np.ndarray, labels: Sequence[int], positions: np.ndarray | None = None
    ) -> None:
        # positions: image i's row in `acts` (a cache shared with other images), default i
        self.positions = np.arange(len(acts)) if positions is None else np.asarray(positions)
        if len(self.positions) != len(labels):
            raise ValueError(f"{len(self.positions)} activations but {len(labels)} labels")
        self.acts = acts
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_views = acts.shape[1]

    def __len__(self) -> int:
        return len(self.positions) * self.n_views

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i, v = divmod(index, self.n_views)
        return torch.from_numpy(np.array(self.acts[self.positions[i], v])), int(self.labels[i])


class ViewSampler(Sampler[int]):
    """Wraps an image sampler: each drawn image i becomes `i * V + v`, v drawn from (seed, epoch)
    only, so a resumed run sees the same views as an uninterrupted one."""

    def __init__(self, base: Sampler[int], n_views: int, seed: int = 0) -> None:
        self.base = base
        self.n_views = n_views
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        g = torch.Generator().manual_seed(self.seed * 100_019 + self.epoch + 7)
        views = torch.randint(0, self.n_views, (len(order),), generator=g).tolist()
        return iter(i * self.n_views + v for i, v in zip(order, views, strict=True))
