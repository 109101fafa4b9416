"""`skinclf predict` on a trained run: splits, other datasets, plain images, scores,
ensembles, abstention and the ISIC 2018 submission format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinclf.classes import CLASSES
from skinclf.errors import ConfigError, DataError
from skinclf.evaluate.predictions import read_predictions
from skinclf.predict import predict


def test_predict_own_split_matches_training_output(
    trained_run: Path, train_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "test.csv"
    predict([trained_run], out, split="test", cache_dir=train_cache, progress=False)
    mine = read_predictions(out)
    ref = read_predictions(trained_run / "test_predictions.csv")
    order = np.argsort(mine.image_ids)
    ref_order = np.argsort(ref.image_ids)
    assert list(np.asarray(mine.image_ids)[order]) == list(np.asarray(ref.image_ids)[ref_order])
    np.testing.assert_allclose(mine.probs[order], ref.probs[ref_order], atol=1e-4)
    np.testing.assert_array_equal(mine.y[order], ref.y[ref_order])


def test_predict_other_dataset_with_all_scores(
    trained_run: Path, train_cache: Path, pad_sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pad.csv"
    frame = predict(
        [trained_run],
        out,
        data=pad_sample,
        cache_dir=train_cache,
        progress=False,
        scores=["msp", "max_logit", "margin", "neg_entropy", "doctor", "knn", "mahalanobis"],
        mc_dropout=4,
    )
    preds = read_predictions(out)
    assert preds.semantic_ood.sum() > 0  # SCC rows carried through with an empty label
    assert (preds.y[preds.semantic_ood] == -1).all()
    for col in (
        "conf_msp",
        "conf_knn",
        "conf_mahalanobis",
        "conf_mc_dropout",
        "conf_mc_dropout_neg_mi",
    ):
        assert col in frame and frame[col].notna().all()
    np.testing.assert_allclose(frame["conf_msp"], preds.probs.max(1), atol=1e-9)
    assert (frame["conf_knn"] <= 1 + 1e-9).all()


def test_plain_images_ensemble_and_abstention(
    trained_run: Path, train_cache: Path, folder_sample: Path, tmp_path: Path
) -> None:
    images = tmp_path / "loose"
    images.mkdir()
    for i, f in enumerate(sorted(folder_sample.rglob("*.jpg"))[:5]):
        shutil.copy(f, images / f"img{i}.jpg")
    single = predict(
        [trained_run], tmp_path / "one.csv", data=images, cache_dir=train_cache, progress=False
    )
    assert len(single) == 5 and single["label"].isna().all()

    twice = predict(
        [trained_run, trained_run],
        tmp_path / "two.csv",
        data=images,
        cache_dir=train_cache,
        progress=False,
    )
    np.testing.assert_allclose(  # an ensemble of one model twice is that model
        twice[[f"prob_{c}" for c in CLASSES]], single[[f"prob_{c}" for c in CLASSES]], atol=1e-6
    )
    assert "conf_ensemble" in twice

    from skinclf.evaluate.sgr import Selective, save_selective

    threshold = float(np.median(single["conf_msp"]))
    sel = save_selective(
        Selective("msp", 1.0, threshold, 0.1, 0.05, True, "val", 5, 0.5, 0.0, 0.1),
        tmp_path / "selective.json",
    )
    with_abstain = predict(
        [trained_run],
        tmp_path / "sel.csv",
        data=images,
        cache_dir=train_cache,
        progress=False,
        selective=sel,
    )
    np.testing.assert_array_equal(
        with_abstain["abstain"].to_numpy(), (single["conf_msp"] < threshold).to_numpy()
    )


def test_isic_submission_format(
    trained_run: Path, train_cache: Path, isic_sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "submission.csv"
    predict(
        [trained_run],
        out,
        data=isic_sample,
        cache_dir=train_cache,
        progress=False,
        output_format="isic2018-submission",
    )
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert frame["image"].str.startswith("ISIC_").all()
    np.testing.assert_allclose(frame.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-6)


def test_predict_bad_input(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        predict([trained_run], tmp_path / "x.csv", progress=False)
    with pytest.raises(ConfigError, match="Unknown score 'vibes'"):
        predict([trained_run], tmp_path / "x.csv", split="test", scores=["vibes"], progress=False)
    with pytest.raises(DataError, match="best.ckpt"):
        predict([tmp_path], tmp_path / "x.csv", split="test", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="No image files"):
        predict([trained_run], tmp_path / "x.csv", data=empty, progress=False)
