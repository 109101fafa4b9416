"""A torch Dataset over the decode cache: a memmap slice per item, no decoding.

Imports torch: import this module only where torch is needed (not from the CLI root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from skinclf.classes import CLASS_TO_INDEX
from skinclf.errors import DataError

if TYPE_CHECKING:
    from skinclf.data.cache import DecodedImages

NO_LABEL = -1


def label_indices(labels: Iterable[object]) -> list[int]:
    """Class names -> indices in the class order; empty/missing -> -1 (no label)."""
    out = []
    for label in labels:
        if label is None or (isinstance(label, float) and np.isnan(label)) or label == "":
            out.append(NO_LABEL)
        elif str(label) in CLASS_TO_INDEX:
            out.append(CLASS_TO_INDEX[str(label)])
        else:
            raise DataError(f"Unknown label {label!r}; expected one of {list(CLASS_TO_INDEX)}.")
    return out


class CachedImageDataset(Dataset):
    """Items ``(image, label)`` for ``image_ids`` read from a decode cache.

    ``image`` is the uint8 tensor (3, H, W), or whatever ``transform`` makes of it (e.g. a
    float tensor); ``label`` is an int, -1 for no label. Reading is a memmap slice, one small
    copy and a permute: cheap enough for the training loop.
    """

    def __init__(
        self,
        images: DecodedImages,
        image_ids: Sequence[str],
        labels: Sequence[int],
        transform: Callable[[torch.Tensor], Any] | None = None,
    ):
        if len(image_ids) != len(labels):
            raise DataError(f"Got {len(image_ids)} image_ids but {len(labels)} labels.")
        self.images = images
        self.image_ids = [str(i) for i in image_ids]
        self.rows = images.rows(self.image_ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        pixels = np.array(self.images.images[self.rows[index]])  # (H, W, 3), writable copy
        image = torch.from_numpy(pixels).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
