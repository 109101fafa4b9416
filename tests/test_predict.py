"""`skinclf predict` on a trained run: splits, other datasets, plain images, scores,
ensembles, abstention and the ISIC 2018 submission format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import read_predictions
from skinclf.errors import ConfigError, DataError
from skinclf.predict import PredictOptions, fit_feature_statistics, predict_file


def test_predict_own_split_matches_training_output(
    trained_run: Path, train_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "test.csv"
    predict_file([trained_run], out, split="test", cache_dir=train_cache, progress=False)
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
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    kw = {"data": pad_sample, "cache_dir": train_cache, "progress": False}
    refused = r"has none \(feature_stats.npz\).*skinclf calibrate .* --features-only"
    with pytest.raises(DataError, match=refused):
        predict_file(
            [run], tmp_path / "no.csv", options=PredictOptions(scores=["knn"]), **kw
        )  # predicting never fits
    stats = fit_feature_statistics(run, train_cache, progress=False)
    assert stats == run / "feature_stats.npz" and stats.is_file()
    out = tmp_path / "pad.csv"
    frame = predict_file(
        [run],
        out,
        options=PredictOptions(
            scores=["msp", "max_logit", "margin", "neg_entropy", "doctor", "knn", "mahalanobis"],
            mc_dropout=4,
        ),
        **kw,
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
    single = predict_file(
        [trained_run], tmp_path / "one.csv", data=images, cache_dir=train_cache, progress=False
    )
    assert len(single) == 5 and single["label"].isna().all()

    twice = predict_file(
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

    from skinclf.contracts.selective import Selective, save_selective

    threshold = float(np.median(single["conf_msp"]))
    sel = save_selective(
        Selective("msp", 1.0, threshold, 0.1, 0.05, True, "val", 5, 0.5, 0.0, 0.1),
        tmp_path / "selective.json",
    )
    with_abstain = predict_file(
        [trained_run],
        tmp_path / "sel.csv",
        data=images,
        cache_dir=train_cache,
        progress=False,
        options=PredictOptions(selective=sel),
    )
    np.testing.assert_array_equal(
        with_abstain["abstain"].to_numpy(), (single["conf_msp"] < threshold).to_numpy()
    )


def test_isic_submission_format(
    trained_run: Path, train_cache: Path, isic_sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "submission.csv"
    predict_file(
        [trained_run],
        out,
        data=isic_sample,
        cache_dir=train_cache,
        progress=False,
        options=PredictOptions(output_format="isic2018-submission"),
    )
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert frame["image"].str.startswith("ISIC_").all()
    np.testing.assert_allclose(frame.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-6)


def test_predict_bad_input(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        predict_file([trained_run], tmp_path / "x.csv", progress=False)
    with pytest.raises(ConfigError, match="Unknown score 'vibes'"):
        predict_file(
            [trained_run],
            tmp_path / "x.csv",
            split="test",
            progress=False,
            options=PredictOptions(scores=["vibes"]),
        )
    with pytest.raises(DataError, match="best.ckpt"):
        predict_file([tmp_path], tmp_path / "x.csv", split="test", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="No image files"):
        predict_file([trained_run], tmp_path / "x.csv", data=empty, progress=False)


def _images_with_three_bad(folder_sample: Path, folder: Path) -> list[Path]:
    """20 images: 17 good JPEGs and 3 bad files (zero bytes, truncated, not an image)."""
    folder.mkdir()
    for i, f in enumerate(sorted(folder_sample.rglob("*.jpg"))[:17]):
        shutil.copy(f, folder / f"img{i:02d}.jpg")
    good = (folder / "img00.jpg").read_bytes()
    bad = [folder / "empty.jpg", folder / "cut.jpg", folder / "notes.png"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(good[: len(good) // 2])
    bad[2].write_text("not an image, just text with an image name\n" * 4)
    return bad


def test_predict_skips_unreadable_images_and_lists_them(
    trained_run: Path, train_cache: Path, folder_sample: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from skinclf.cli import app

    bad = _images_with_three_bad(folder_sample, tmp_path / "batch")
    out = tmp_path / "preds.csv"
    args = ["predict", str(trained_run), "--data", str(tmp_path / "batch"), "--out", str(out)]
    args += ["--cache-dir", str(train_cache), "--no-progress"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert len(frame) == 17 and not frame["image_id"].isin([b.name for b in bad]).any()
    errors = pd.read_csv(tmp_path / "preds.errors.csv")
    assert list(errors.columns) == ["path", "reason"]
    reasons = dict(zip(errors["path"], errors["reason"], strict=True))
    assert sorted(reasons) == sorted(str(b) for b in bad)
    assert reasons[str(bad[0])] == "image is empty (0 bytes)"
    assert "truncated" in reasons[str(bad[1])]
    assert "not a readable image" in reasons[str(bad[2])]
    summary = [line for line in result.output.splitlines() if "skipped" in line]
    assert len(summary) == 1 and "3 unreadable" in summary[0]
    assert all(b.name in summary[0] for b in bad) and "preds.errors.csv" in summary[0]

    strict = CliRunner().invoke(app, [*args, "--strict"], env={"COLUMNS": "300"})
    assert strict.exit_code == 1 and "3 unreadable" in strict.output
    assert len(pd.read_csv(out)) == 17  # the readable images are still written

    for b in bad:  # a clean batch leaves no stale errors file
        b.unlink()
    predict_file([trained_run], out, data=tmp_path / "batch", cache_dir=train_cache, progress=False)
    assert not (tmp_path / "preds.errors.csv").exists()


def _run_copy(trained_run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(trained_run, dest, ignore=shutil.ignore_patterns("last.ckpt")))


def test_ensemble_split_must_be_the_same_split(
    trained_run: Path, train_cache: Path, folder_sample: Path, tmp_path: Path
) -> None:
    quiet = {"cache_dir": train_cache, "progress": False}
    same = _run_copy(trained_run, tmp_path / "same")
    both = predict_file([trained_run, same], tmp_path / "ok.csv", split="test", **quiet)
    assert len(both) == (pd.read_csv(trained_run / "split.csv")["split"] == "test").sum()

    other = _run_copy(trained_run, tmp_path / "other")
    split = pd.read_csv(other / "split.csv", dtype=str)
    test_rows = split.index[split["split"] == "test"]
    train_rows = split.index[split["split"] == "train"]
    split.loc[test_rows[1], "split"] = "train"  # swap one test and one training image
    split.loc[train_rows[0], "split"] = "test"
    split.to_csv(other / "split.csv", index=False)
    moved = "|".join(split.loc[[test_rows[1], train_rows[0]], "image_id"])
    with pytest.raises(DataError, match=f"different splits: image '({moved})' is in") as info:
        predict_file([trained_run, other], tmp_path / "x.csv", split="test", **quiet)
    assert str(other / "split.csv") in str(info.value)
    images = tmp_path / "loose"
    images.mkdir()
    for i, f in enumerate(sorted(folder_sample.rglob("*.jpg"))[:3]):
        shutil.copy(f, images / f"img{i}.jpg")
    frame = predict_file([trained_run, other], tmp_path / "d.csv", data=images, **quiet)
    assert len(frame) == 3  # with --data the splits may differ


def test_msp_ts_takes_the_temperature_of_selective(
    trained_run: Path, train_cache: Path, folder_sample: Path, tmp_path: Path
) -> None:
    from skinclf.contracts.scores import msp_ts
    from skinclf.contracts.selective import Selective, save_selective

    images = tmp_path / "loose"
    images.mkdir()
    for i, f in enumerate(sorted(folder_sample.rglob("*.jpg"))[:4]):
        shutil.copy(f, images / f"img{i}.jpg")
    kwargs = {"data": images, "cache_dir": train_cache, "progress": False}
    with pytest.raises(ConfigError, match=r"msp_ts needs a temperature: give --selective"):
        predict_file(
            [trained_run],
            tmp_path / "x.csv",
            options=PredictOptions(scores=["msp", "msp_ts"]),
            **kwargs,
        )
    sel = save_selective(
        Selective("msp", 2.5, 0.5, 0.1, 0.05, True, "val", 5, 0.5, 0.0, 0.1),
        tmp_path / "selective.json",
    )
    out = tmp_path / "ts.csv"
    frame = predict_file(
        [trained_run],
        out,
        options=PredictOptions(scores=["msp", "msp_ts"], selective=sel),
        **kwargs,
    )
    logits = frame[[f"logit_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(frame["conf_msp_ts"], msp_ts(logits, 2.5), atol=1e-6)
    assert (frame["conf_msp_ts"] < frame["conf_msp"]).all()  # T > 1 flattens the softmax


def test_predict_skips_listed_images_whose_file_is_missing(
    trained_run: Path,
    train_cache: Path,
    learnable_sample: Path,
    make_sample,
    make_broken,
    tmp_path: Path,
) -> None:
    """A dataset (--data) or the run's own data (--split) listing an image whose file was
    deleted: the others are predicted, the missing one is listed in the errors file like an
    unreadable image; every other problem of the data still stops predict."""
    import json

    from skinclf.predict import errors_file

    quiet = {"cache_dir": train_cache, "progress": False}
    data = make_sample("ham10000")
    gone = sorted(data.rglob("*.jpg"))[2]
    gone.unlink()
    out = tmp_path / "data.csv"
    frame = predict_file([trained_run], out, data=data, **quiet)
    listed = pd.read_csv(data / "HAM10000_metadata.csv")["image_id"]
    assert len(frame) == len(listed) - 1 and gone.stem not in set(frame["image_id"])
    errors = pd.read_csv(errors_file(out))
    assert errors["path"].tolist() == [gone.stem]
    reason = errors["reason"][0]
    assert reason.startswith("image file is missing (") and "HAM10000_metadata.csv line" in reason
    assert frame.attrs["skipped"] == [[gone.stem, reason]]

    data_copy = Path(shutil.copytree(learnable_sample, tmp_path / "learn"))
    run = _run_copy(trained_run, tmp_path / "run")
    provenance = json.loads((run / "provenance.json").read_text())
    (run / "provenance.json").write_text(json.dumps({**provenance, "data_path": str(data_copy)}))
    split = pd.read_csv(run / "split.csv")
    test_ids = split.loc[split["split"] == "test", "image_id"].tolist()
    next(data_copy.rglob(f"{test_ids[0]}.*")).unlink()
    frame = predict_file([run], tmp_path / "test.csv", split="test", **quiet)
    assert sorted(frame["image_id"]) == sorted(test_ids[1:])
    assert [p for p, _ in frame.attrs["skipped"]] == [test_ids[0]]

    with pytest.raises(DataError, match="not a class"):  # other problems: as before
        predict_file([trained_run], tmp_path / "x.csv", data=make_broken("unknown-label"), **quiet)
    for f in data.rglob("*.jpg"):
        f.unlink()
    with pytest.raises(DataError, match=r"None of the \d+ images has its image file"):
        predict_file([trained_run], tmp_path / "y.csv", data=data, **quiet)


def test_calibrate_features_only_fits_the_statistics_and_nothing_else(
    trained_run: Path, train_cache: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from skinclf.cli import app

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    args = ["calibrate", str(run), "--features-only", "--cache-dir", str(train_cache)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (run / "feature_stats.npz").is_file() and not (run / "eval").exists()
    options = PredictOptions(scores=["mahalanobis"])
    frame = predict_file(
        [run],
        tmp_path / "p.csv",
        split="val",
        options=options,
        cache_dir=train_cache,
        progress=False,
    )
    assert np.isfinite(frame["conf_mahalanobis"]).all()
