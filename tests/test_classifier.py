"""The trained classifier describes itself: `load_classifier(best.ckpt)` alone rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skinclf.contracts.predictions import read_predictions, softmax
from skinclf.data.cache import build_cache
from skinclf.data.formats import load_dataset
from skinclf.errors import DataError
from skinclf.inference.batch import InferenceSettings, infer
from skinclf.models.classifier import Classifier, ClassifierSpec, load_classifier


def test_load_classifier_alone_reproduces_the_runs_test_predictions(
    trained_run: Path, learnable_sample: Path, train_cache: Path
) -> None:
    model = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    assert isinstance(model, Classifier) and not model.training
    assert model.spec.backbone == "efficientnet_lite0" and model.spec.image_size == 64
    metrics = json.loads((trained_run / "metrics.json").read_text())
    ref = read_predictions(trained_run / "test_predictions.csv")
    table = load_dataset(learnable_sample)
    table = table[table["image_id"].isin(set(ref.image_ids))]
    images = build_cache(
        table, model.spec.image_size, model.spec.resize, train_cache, progress=False
    )
    result = infer(
        model,
        images.images,
        images.rows(list(ref.image_ids)),
        InferenceSettings(tta=metrics["tta"], precision=metrics["inference_precision"]),
        progress=False,
    )
    assert result.precision == metrics["inference_precision"]
    np.testing.assert_allclose(softmax(result.logits), ref.probs, atol=1e-5, rtol=0)


def test_spec_round_trips_and_rebuilds_the_same_function() -> None:
    spec = ClassifierSpec(
        backbone="efficientnet_lite0", num_features=1280, head="mlp", head_hidden=16,
        image_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2),
    )  # fmt: skip
    assert ClassifierSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    from skinclf.models.classifier import build_classifier

    torch.manual_seed(0)
    a = build_classifier(spec).eval()
    b = build_classifier(spec).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(a(x), b(x))
        # normalisation is inside the model: uint8 in equals (x / 255 - mean) / std by hand
        manual = a.head(a.backbone((x.float() / 255 - a.mean) / a.std))
        torch.testing.assert_close(a(x), manual)


def test_load_classifier_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such checkpoint"):
        load_classifier(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot be read as a checkpoint"):
        load_classifier(tmp_path / "junk.ckpt")
    torch.save({"weights": {}}, tmp_path / "other.ckpt")
    with pytest.raises(DataError, match="no state_dict"):
        load_classifier(tmp_path / "other.ckpt")


def test_a_checkpoint_alone_rebuilds_without_its_run_folder(
    trained_run: Path, ham_sample: Path, tmp_path: Path
) -> None:
    """No config.yaml beside it: the spec comes from the checkpoint, for Lightning's save and
    for the best.ckpt written without fine-tuning (train.epochs=0)."""
    import shutil

    from skinclf.config import load_config
    from skinclf.train.training import fit

    settings = ["data.image_size=32", "transfer.epochs=1", "train.epochs=0"]
    untrained = tmp_path / "run0"
    fit(ham_sample, untrained, load_config("sample", overrides=settings),
        cache_dir=tmp_path / "cache", progress=False, log=lambda *_: None)  # fmt: skip
    for run, size in ((trained_run, 64), (untrained, 32)):
        alone = tmp_path / f"{run.name}.ckpt"
        shutil.copy(run / "checkpoints" / "best.ckpt", alone)
        model = load_classifier(alone)
        assert model.spec.image_size == size and model.spec.backbone == "efficientnet_lite0"
        x = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
        with torch.inference_mode():
            assert model(x).shape == (1, 7)


def test_a_checkpoint_from_before_specs_loads_through_its_run_config(
    trained_run: Path, tmp_path: Path
) -> None:
    """The old layout (backbone.*, head.*, mean, std and the loss's tensors at the top, no
    spec): rebuilt from the run's config.yaml, with the same outputs."""
    import shutil

    new = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=False)
    state = {k.removeprefix("classifier."): v for k, v in ckpt["state_dict"].items()}
    state["loss_fn.adjustment"] = torch.zeros(7)
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run / "config.yaml", tmp_path / "old" / "config.yaml")
    old_path = tmp_path / "old" / "checkpoints" / "best.ckpt"
    torch.save({"state_dict": state, "epoch": 1}, old_path)
    old = load_classifier(old_path)
    import dataclasses

    # mean/std come back from float32 buffers: equal to float32 precision
    np.testing.assert_allclose(old.spec.mean + old.spec.std, new.spec.mean + new.spec.std, 1e-6)
    assert dataclasses.replace(old.spec, mean=new.spec.mean, std=new.spec.std) == new.spec
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(old(x), new(x), rtol=0, atol=0)
