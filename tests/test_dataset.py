"""The torch Dataset over the decode cache."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from skinclf.data.cache import build_cache
from skinclf.data.dataset import CachedImageDataset, label_indices
from skinclf.errors import DataError

COLOURS = {"a": (250, 0, 0), "b": (0, 250, 0), "c": (0, 0, 250), "d": (100, 100, 100)}


@pytest.fixture
def decoded(tmp_path):
    rows = []
    for image_id, colour in COLOURS.items():
        path = tmp_path / f"{image_id}.png"
        Image.new("RGB", (10, 7), colour).save(path)
        rows.append({"image_id": image_id, "path": str(path)})
    return build_cache(pd.DataFrame(rows), 6, cache_dir=tmp_path / "cache", progress=False)


def test_items_are_uint8_chw_with_int_labels(decoded):
    ds = CachedImageDataset(decoded, ["c", "a", "d"], [2, 0, -1])
    assert len(ds) == 3
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 6)
    assert image[:, 3, 3].tolist() == [0, 0, 250]  # channels first, the right image
    assert label == 2 and isinstance(label, int)
    assert ds[2][1] == -1
    assert ds[1][0][:, 0, 0].tolist() == [250, 0, 0]


def test_transform_can_make_floats(decoded):
    ds = CachedImageDataset(decoded, ["b"], [1], transform=lambda x: x.float() / 255)
    image, _ = ds[0]
    assert image.dtype == torch.float32
    assert image[1].min().item() == pytest.approx(250 / 255)


@pytest.mark.parametrize("workers", [0, 1])
def test_dataloader_batches(decoded, workers):
    ds = CachedImageDataset(decoded, ["a", "b", "c", "d"], [0, 1, 2, 3])
    loader = DataLoader(ds, batch_size=2, shuffle=False, num_workers=workers)
    batches = list(loader)
    assert len(batches) == 2
    images, labels = batches[1]
    assert images.shape == (2, 3, 6, 6) and images.dtype == torch.uint8
    assert labels.tolist() == [2, 3]
    assert images[0, 2, 0, 0].item() == 250  # "c" is blue


def test_label_indices_follow_the_class_order():
    assert label_indices(["akiec", "vasc", "", None, float("nan"), "mel"]) == [0, 6, -1, -1, -1, 4]
    with pytest.raises(DataError, match="Unknown label 'scc'"):
        label_indices(["scc"])


def test_mismatched_lengths_and_unknown_ids_are_errors(decoded):
    with pytest.raises(DataError, match="2 image_ids but 1 labels"):
        CachedImageDataset(decoded, ["a", "b"], [0])
    with pytest.raises(DataError, match="not in the decode cache"):
        CachedImageDataset(decoded, ["zz"], [0])
