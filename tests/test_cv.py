"""`skinclf cv` end to end on generated data: every image predicted once by the fold that did not
train on it, no lesion in a fold's train and held-out parts, caches built once for all folds,
resumed after a kill, and the fold models predicting as one ensemble.

One uninterrupted cross-validation (module-scoped) is the reference; the killed one is a
subprocess stopped by `skinclf.faults.fault_point` (SKINCLF_FAULT), as in test_run.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from killing import killed_at  # tests/killing.py
from skinclf.cli import app
from skinclf.data.formats import load_dataset
from skinclf.data.synthetic import write_sample

pytestmark = pytest.mark.slow

FOLDS = 3
# tiny and single-threaded (the killed subprocess and the in-process runs compute alike); two
# fine-tuning epochs on cached frozen-stage activations
SETTINGS = [
    "data.image_size=32",
    "transfer.epochs=4",
    "train.epochs=2",
    "train.batch_size=8",
    "train.frozen_cache=true",
    "train.frozen_views=2",
    "trainer.precision=32",
    "trainer.threads=1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cv-data")
    return {
        "ham": write_sample(root / "ham", "ham10000", n=7, seed=2, size=32),
        "isic": write_sample(root / "isic", "isic2018", n=2, seed=3, size=32),
        "pad": write_sample(root / "pad", "pad-ufes-20", n=2, seed=4, size=32),
    }


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cv_args(data: dict[str, Path], out: Path, cache: Path) -> list[str]:
    return [
        "--data", str(data["ham"]), "--folds", str(FOLDS), "--calib", "0.2",
        "--test", str(data["isic"]), "--ood", str(data["pad"]), "--out", str(out),
        "--preset", "sample", "--cache-dir", str(cache), "--target-risk", "0.3",
        "--bootstrap", "50", "--no-progress", *SETTINGS,
    ]  # fmt: skip


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory: pytest.TempPathFactory, one_thread):
    """An uninterrupted `skinclf cv` (read-only): its folder, cache folder and output."""
    root = tmp_path_factory.mktemp("cv")
    out, cache = root / "cv", root / "cache"
    result = invoke(["cv", *cv_args(data, out, cache)])
    assert result.exit_code == 0, result.output
    return out, cache, result.output


def test_every_image_is_predicted_once_by_the_fold_that_did_not_train_on_it(reference, data):
    out, _, output = reference
    folds = pd.read_csv(out / "folds.csv", dtype=str)
    oof = pd.read_csv(out / "oof_predictions.csv", dtype={"image_id": str})
    in_folds = folds.loc[folds["fold"] != "calib", "image_id"]
    assert sorted(oof["image_id"]) == sorted(in_folds)  # each once, calib in none
    assert oof["image_id"].is_unique
    table = load_dataset(data["ham"])
    group = dict(zip(table["image_id"], table["group"], strict=True))
    for k in range(FOLDS):
        split = pd.read_csv(out / f"fold_{k}" / "split.csv", dtype=str)
        held_out = split.loc[split["split"] == "val", "image_id"]
        assert set(held_out) == set(folds.loc[folds["fold"] == str(k), "image_id"])
        train = split.loc[split["split"] == "train", "image_id"]
        assert not {group[i] for i in train} & {group[i] for i in held_out}  # no lesion in both
        own = pd.read_csv(out / f"fold_{k}" / "val_predictions.csv", dtype={"image_id": str})
        mine = oof.set_index("image_id").loc[own["image_id"]]
        assert np.allclose(mine.filter(like="prob_").to_numpy(), own.filter(like="prob_"))
        best = torch.load(out / f"fold_{k}/checkpoints/best.ckpt", weights_only=False)
        assert best["epoch"] == 1  # the last of two epochs, not one chosen on the held-out fold
    summary = json.loads((out / "cv_summary.json").read_text())
    pooled = summary["out_of_fold"]["pooled"]
    assert pooled["n"] == len(oof) and set(summary["out_of_fold"]["folds"]) == {"0", "1", "2"}
    lo, hi = pooled["balanced_accuracy_ci95"]
    assert lo <= pooled["balanced_accuracy"] <= hi
    assert f"{pooled['balanced_accuracy']:.3f}" in output
    for name in ("metrics.json", "selective.json", "report.html", "calib.csv", "isic.csv"):
        assert (out / "eval" / name).is_file(), name
    # with --calib the ensemble's offsets are fitted on its calib predictions without offsets
    from skinclf.contracts.predictions import read_predictions
    from skinclf.evaluate.offsets import fit_logit_offsets, read_offsets

    raw = read_predictions(out / "eval" / "calib_no_offsets.csv")
    offsets = read_offsets(out / "logit_offsets.json")
    assert np.allclose(offsets, fit_logit_offsets(raw.logits, raw.y))
    calib = read_predictions(out / "eval" / "calib.csv")
    assert np.allclose(calib.logits, raw.logits + offsets, atol=1e-4)
    # the OOD gate is chosen as a run chooses it: by silent failures on corrupted images, here
    # the calibration part's (the same images, each after one synthetic corruption)
    corrupted = read_predictions(out / "eval" / "calib_corrupted.csv")
    assert list(corrupted.image_ids) == list(calib.image_ids)
    assert set(corrupted.dataset) == {f"{d}:corrupted" for d in set(calib.dataset)}
    assert not np.allclose(corrupted.probs, calib.probs, atol=1e-3)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert (
        metrics["policy"]["choice_mode"] == "shifted" and metrics["policy"]["fitted_on"] == "calib"
    )
    # its test set: the out-of-fold predictions with the offsets and each fold model's feature
    # scores of its own held-out fold
    assert metrics["settings"]["files"]["test"] == str(out / "eval" / "out_of_fold.csv")
    scored = read_predictions(out / "eval" / "out_of_fold.csv")
    plain = read_predictions(out / "oof_predictions.csv")
    assert list(scored.image_ids) == list(plain.image_ids)
    assert np.allclose(scored.logits, plain.logits + offsets, atol=1e-4)
    assert {"msp", "knn", "mahalanobis"} <= set(scored.conf)
    row = {image: i for i, image in enumerate(scored.image_ids)}
    for k in range(FOLDS):
        own = read_predictions(out / f"fold_{k}" / "val_scored.csv")
        assert set(own.image_ids) == set(folds.loc[folds["fold"] == str(k), "image_id"])
        assert np.allclose(scored.conf["knn"][[row[i] for i in own.image_ids]], own.conf["knn"])


def test_caches_are_built_once_for_all_folds(reference):
    _, cache, _ = reference
    assert len(list((cache / "decoded").glob("*.npy"))) == 3  # HAM, ISIC, PAD: one each
    assert len(list((cache / "features").glob("*.npy"))) == 1  # stage 1: all folds' images
    # frozen-stage activations: the training views and the plain images, all folds' images
    assert len(list((cache / "activations").glob("*.npy"))) == 2


def test_the_fold_models_predict_as_one_ensemble(reference, data, tmp_path: Path):
    from skinclf.contracts.predictions import read_predictions, softmax
    from skinclf.evaluate.offsets import read_offsets

    out, cache, _ = reference
    ens = tmp_path / "ens.csv"
    result = invoke(
        ["predict", str(out), "--data", str(data["isic"]), "--out", str(ens),
         "--cache-dir", str(cache), "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    members = []
    for k in range(FOLDS):
        path = tmp_path / f"fold_{k}.csv"
        result = invoke(
            ["predict", str(out / f"fold_{k}"), "--data", str(data["isic"]), "--out", str(path),
             "--cache-dir", str(cache), "--no-progress"]
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        members.append(read_predictions(path).probs)
    p = read_predictions(ens)
    offsets = read_offsets(out / "logit_offsets.json")
    assert np.allclose(softmax(p.logits - offsets), np.mean(members, axis=0), atol=1e-4)
    assert np.allclose(p.probs, softmax(p.logits), atol=1e-4)  # the offsets are in the decision
    assert np.allclose(p.probs, read_predictions(out / "eval" / "isic.csv").probs, atol=1e-6)
    plain = tmp_path / "plain.csv"
    result = invoke(
        ["predict", str(out), "--data", str(data["isic"]), "--out", str(plain), "--no-offsets",
         "--cache-dir", str(cache), "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.allclose(read_predictions(plain).probs, np.mean(members, axis=0), atol=1e-4)
    result = invoke(["evaluate", "--test", str(ens), "--out", str(tmp_path / "eval"),
                     "--bootstrap", "20"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_killed_in_a_fold_then_the_same_command_skips_finished_folds_and_ends_the_same(
    reference, data, tmp_path: Path
):
    ref, cache, _ = reference
    out = tmp_path / "cut"
    args = cv_args(data, out, cache)
    killed_at("cv", "write/last.ckpt:after=3", args)  # fold 0 saved two epochs; fold 1 its first
    steps = json.loads((out / "run_state.json").read_text())["steps"]
    assert steps["train-fold_0"]["status"] == "done"
    assert steps["train-fold_1"]["status"] == "started"
    result = invoke(["cv", *args])
    assert result.exit_code == 0, result.output
    assert "4/18 train-fold_0 up to date, skipped" in result.output
    assert "interrupted before: continues where it stopped" in result.output
    oof = "oof_predictions.csv"
    assert (out / oof).read_bytes() == (ref / oof).read_bytes()
    assert (out / "cv_summary.json").read_text() == (ref / "cv_summary.json").read_text()
    assert not list(out.rglob("*.tmp"))


def test_an_unfinished_cross_validation_is_no_model(reference, data, tmp_path: Path):
    import shutil

    from skinclf.errors import DataError
    from skinclf.predictor import Predictor

    out, _, _ = reference
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    (copy / "fold_2" / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(DataError, match="folds are not all trained .*fold_2"):
        Predictor.from_path(copy)
    assert len(Predictor.from_path(out).members) == FOLDS


def test_compare_pairs_two_cvs_on_the_same_folds_only(reference, tmp_path: Path):
    import shutil

    from skinclf.errors import DataError

    out, _, _ = reference
    result_file = tmp_path / "same.json"
    cmd = ["compare", str(out), str(out), "--out", str(result_file)]
    result = invoke([*cmd, "--external", "isic", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    result = json.loads(result_file.read_text())
    paired = result["out_of_fold"]["paired_bootstrap_balanced_accuracy"]
    assert paired["difference"] == 0.0 and paired["difference_ci95"] == [0.0, 0.0]
    assert paired["n_resamples"] == result["isic"]["paired_bootstrap_balanced_accuracy"][
        "n_resamples"] == 200  # fmt: skip
    assert result["out_of_fold"]["offsets"] is False and "own" in result["isic"]["offsets"]
    summary = json.loads((out / "cv_summary.json").read_text())["out_of_fold"]["pooled"]
    assert result["out_of_fold"]["a"]["balanced_accuracy"] == pytest.approx(
        summary["balanced_accuracy"]
    )
    assert result["isic"]["a"]["n"] == len(pd.read_csv(out / "eval" / "isic.csv")) == 14
    assert invoke([*cmd, "--offsets"]).exit_code == 0  # cross-fitted offsets on both sides
    shifted = json.loads(result_file.read_text())
    assert shifted["offsets"] is True
    assert shifted["a"]["balanced_accuracy"] == pytest.approx(
        json.loads((out / "cv_summary.json").read_text())["out_of_fold"]["pooled_offsets"][
            "balanced_accuracy"
        ]  # fmt: skip
    )
    other = Path(shutil.copytree(out, tmp_path / "other", ignore=shutil.ignore_patterns("fold_*")))
    folds = pd.read_csv(other / "folds.csv", dtype=str)
    first = folds.index[folds["fold"] == "0"][0]
    folds.loc[first, "fold"] = "1"
    folds.to_csv(other / "folds.csv", index=False)
    with pytest.raises(DataError, match="use different folds"):
        invoke(["compare", str(out), str(other)])


def test_cv_ensemble_averages_cvs_and_predicts_and_exports_as_one_model(
    reference, data, tmp_path: Path
):
    import shutil

    import skinclf
    from skinclf.contracts.predictions import (
        ImageRows,
        read_predictions,
        softmax,
        write_predictions,
    )
    from skinclf.errors import ConfigError, DataError
    from skinclf.evaluate.offsets import read_offsets
    from skinclf.pipeline.cv_ensemble import ensemble_cvs, evaluate_cv_ensemble
    from skinclf.predict import predict_file
    from skinclf.predictor import Predictor

    out, cache, _ = reference
    twin = Path(shutil.copytree(out, tmp_path / "twin"))
    ens = tmp_path / "ens"
    result = invoke(["cv-ensemble", str(out), str(twin), "--out", str(ens), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    mine = json.loads((out / "cv_summary.json").read_text())
    same = json.loads((ens / "cv_summary.json").read_text())
    for key in ("balanced_accuracy", "accuracy", "recall"):
        assert same["out_of_fold"]["pooled"][key] == pytest.approx(
            mine["out_of_fold"]["pooled"][key]
        )
    # refitted on the average of two identical calibration predictions: the cv's own offsets
    offsets = read_offsets(ens / "logit_offsets.json")
    assert np.allclose(offsets, read_offsets(out / "logit_offsets.json"))
    isic = read_predictions(ens / "eval" / "isic.csv")
    assert np.allclose(isic.probs, read_predictions(out / "eval" / "isic.csv").probs, atol=1e-6)
    assert "conf_knn" in pd.read_csv(ens / "eval" / "pad.csv").columns  # the first member's

    # the two cvs averaged by predict itself: offsets fitted for each are not added, and it says so
    pair = tmp_path / "pair.csv"
    result = invoke(["predict", str(out), str(twin), "--data", str(data["isic"]), "--out",
                     str(pair), "--cache-dir", str(cache), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "offsets of" in result.output and "were not added" in " ".join(result.output.split())
    plain = softmax(isic.logits - offsets)  # the members' mean probabilities
    assert np.allclose(read_predictions(pair).probs, plain, atol=1e-5)
    frame = predict_file(
        [out], tmp_path / "one.csv", data=data["isic"], cache_dir=cache, progress=False
    )
    assert frame.attrs["unused_offsets"] == []  # one cv: its offsets are added

    # its own selective classifier, fitted as the cv fits its own, on the averaged calib part
    metrics = json.loads((ens / "eval" / "metrics.json").read_text())
    assert (
        metrics["policy"]["choice_mode"] == "shifted" and metrics["policy"]["fitted_on"] == "calib"
    )
    assert metrics["settings"]["files"]["calib"] == str(ens / "eval" / "calib.csv")
    assert [Path(f).stem for f in metrics["settings"]["files"]["ood"]] == ["pad"]
    mine = json.loads((out / "eval" / "selective.json").read_text())
    same = json.loads((ens / "eval" / "selective.json").read_text())  # identical members: same
    assert same["ood_gate"]["score"] == mine["ood_gate"]["score"]
    assert same["ood_gate"]["threshold"] == pytest.approx(mine["ood_gate"]["threshold"], rel=1e-3)
    assert (same["score"], same["solution_exists"]) == (mine["score"], mine["solution_exists"])

    assert len(Predictor.from_path(ens).members) == 2 * FOLDS  # every member's fold models
    predicted = tmp_path / "predicted.csv"
    result = invoke(["predict", str(ens), "--data", str(data["isic"]), "--out", str(predicted),
                     "--cache-dir", str(cache), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.allclose(read_predictions(predicted).probs, isic.probs, atol=1e-5)

    # exported, the ensemble keeps its offsets: skinclf.load predicts as skinclf predict does
    model_dir = tmp_path / "model"
    result = invoke(["export", str(ens), "--out", str(model_dir)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((model_dir / "skinclf-model.json").read_text())
    assert manifest["logit_offsets"] == "logit_offsets.json" and len(manifest["members"]) == 6
    assert manifest["format_version"] == 2  # a reader of version 1 would drop the offsets
    assert manifest["selective"] == "selective.json"  # the exported ensemble abstains
    images = sorted(p for p in Path(data["isic"]).rglob("*.jpg"))
    rows = skinclf.load(model_dir).predict(images)
    by_id = dict(zip(isic.image_ids, isic.probs, strict=True))
    loaded = np.array([[r["probabilities"][c] for c in r["probabilities"]] for r in rows])
    expected = np.array([by_id[p.stem] for p in images])
    assert np.allclose(loaded, expected, atol=1e-5)
    assert "logit offsets" in (model_dir / "MODEL_CARD.md").read_text()

    other = Path(shutil.copytree(out, tmp_path / "other", ignore=shutil.ignore_patterns("fold_*")))
    oof = read_predictions(other / "oof_predictions.csv")
    one_hot = np.full_like(oof.logits, -30.0)
    one_hot[:, 0] = 0.0  # this member says akiec for every image
    rows = ImageRows(oof.image_ids, oof.dataset, oof.y, oof.semantic_ood)
    write_predictions(other / "oof_predictions.csv", rows, one_hot)
    ensemble_cvs([out, other], tmp_path / "mixed", n_bootstrap=20)
    mixed = read_predictions(tmp_path / "mixed" / "oof_predictions.csv")
    expected = (oof.probs + np.eye(oof.probs.shape[1])[0]) / 2
    assert np.allclose(mixed.probs, expected, atol=1e-6)
    # averaged again into `ens` with a member that has no calibration part: nothing of the
    # former selective classifier stays behind for export to pack
    (other / "eval" / "metrics.json").unlink()
    ensemble_cvs([out, other], ens, n_bootstrap=20)
    assert not evaluate_cv_ensemble([out, other], ens)
    assert not (ens / "eval" / "selective.json").exists()
    assert (ens / "eval" / "isic.csv").is_file()

    with pytest.raises(ConfigError, match="at least two"):
        ensemble_cvs([out], tmp_path / "x")
    folds = pd.read_csv(other / "folds.csv", dtype=str)
    folds.loc[folds["fold"] == "0", "fold"], folds.loc[folds["fold"] == "1", "fold"] = "1", "0"
    folds.to_csv(other / "folds.csv", index=False)
    with pytest.raises(DataError, match="use different folds"):
        ensemble_cvs([out, other], tmp_path / "x")
    with pytest.raises(DataError, match="itself an ensemble"):
        ensemble_cvs([out, ens], tmp_path / "x")


def test_cv_result_keeps_what_a_paired_comparison_needs(reference, tmp_path: Path):
    """cv_result.py --keep: the kept copy alone compares with the cv folder as equal."""
    out, _, _ = reference
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    kept = tmp_path / "kept"
    cmd = [sys.executable, str(bench / "cv_result.py"), str(out), "--out",
           str(tmp_path / "cv.json"), "--keep", str(kept)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (kept / "eval" / "isic.csv").is_file()
    in_folds = {str(p.relative_to(kept)) for p in kept.glob("fold_*/**/*") if p.is_file()}
    assert in_folds <= {f"fold_{k}/eval/isic.csv" for k in range(FOLDS)}  # no model, no held-out
    assert len(json.loads((tmp_path / "cv.json").read_text())["kept"]) >= 4
    cmd = ["compare", str(kept), str(out), "--out", str(tmp_path / "same.json"),
           "--external", "isic"]  # fmt: skip
    assert invoke(cmd).exit_code == 0
    result = json.loads((tmp_path / "same.json").read_text())
    assert result["out_of_fold"]["paired_bootstrap_balanced_accuracy"]["difference"] == 0.0
    same = ({k: v for k, v in result["isic"][side].items() if k != "file"} for side in "ab")
    assert next(same) == next(same)


def test_cv_result_of_an_unfinished_cv_summarises_its_finished_folds(reference, tmp_path: Path):
    """No cv_summary.json yet: each finished fold's held-out predictions, kept with --keep."""
    import shutil

    out, _, _ = reference
    cv = Path(shutil.copytree(out, tmp_path / "cv", ignore=shutil.ignore_patterns("*.ckpt")))
    (cv / "cv_summary.json").unlink()
    (cv / "fold_2" / "val_predictions.csv").unlink()
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    cmd = [sys.executable, str(bench / "cv_result.py"), str(cv), "--out",
           str(tmp_path / "cv.json"), "--keep", str(tmp_path / "kept")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "cv.json").read_text())
    assert result["folds"] == FOLDS and result["out_of_fold"]["finished"] == ["fold_0", "fold_1"]
    folds = pd.read_csv(cv / "folds.csv", dtype=str)
    for k in (0, 1):
        held = result["out_of_fold"]["folds"][f"fold_{k}"]
        assert held["n"] == (folds["fold"] == str(k)).sum()
        assert (tmp_path / "kept" / f"fold_{k}" / "val_predictions.csv").is_file()
    assert not (tmp_path / "kept" / "fold_2").exists()


def test_compare_of_an_unfinished_cv_pairs_the_folds_both_finished(reference, tmp_path: Path):
    """No oof_predictions.csv on one side: the held-out images of the shared finished folds,
    and with --external each fold model against the same fold's model of the other."""
    import shutil

    from skinclf.errors import DataError

    out, _, _ = reference
    cv = Path(shutil.copytree(out, tmp_path / "cv", ignore=shutil.ignore_patterns("*.ckpt")))
    (cv / "oof_predictions.csv").unlink()
    (cv / "fold_2" / "val_predictions.csv").unlink()
    cmd = ["compare", str(cv), str(out), "--out", str(tmp_path / "r.json")]
    with pytest.raises(DataError, match="fold_0/eval/isic.csv is missing"):
        invoke([*cmd, "--external", "isic"])
    kept = shutil.copytree(out, tmp_path / "kept", ignore=shutil.ignore_patterns("fold_*"))
    cmd[2] = str(kept)  # finished, without fold folders: its held-out images from its oof file
    assert invoke(cmd).exit_code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    n = pd.read_csv(out / "folds.csv", dtype=str)["fold"].isin(["0", "1"]).sum()
    assert result["folds"] == ["fold_0", "fold_1"] and result["a"]["n"] == result["b"]["n"] == n
    assert result["paired_bootstrap_balanced_accuracy"]["difference"] == 0.0
    for k in (0, 1):  # as cv_result.py --external would leave them (here: the ensemble's)
        (cv / f"fold_{k}" / "eval").mkdir(exist_ok=True)
        shutil.copy(out / "eval" / "isic.csv", cv / f"fold_{k}" / "eval" / "isic.csv")
    other = Path(shutil.copytree(cv, tmp_path / "other"))
    (other / "fold_1" / "val_predictions.csv").unlink()
    cmd[1:3] = [str(other), str(cv)]
    assert invoke([*cmd, "--external", "isic"]).exit_code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    held = result["out_of_fold"]
    folds = pd.read_csv(out / "folds.csv", dtype=str)
    assert held["folds"] == ["fold_0"] and held["a"]["n"] == (folds["fold"] == "0").sum()
    assert held["paired_bootstrap_balanced_accuracy"]["difference"] == 0.0
    assert list(result["isic_by_fold"]) == ["fold_0"]
    assert result["isic_by_fold"]["fold_0"]["a"]["n"] == 14


def test_cv_detection_reads_each_score_of_an_ensemble_on_two_sets(reference, tmp_path: Path):
    from skinclf.contracts.predictions import read_predictions
    from skinclf.evaluate.ood import detection_auroc

    out, _, _ = reference
    other = tmp_path / "other"
    (other / "eval").mkdir(parents=True)
    (other / "eval" / "isic.csv").write_bytes((out / "eval" / "isic.csv").read_bytes())
    frame = pd.read_csv(out / "eval" / "pad.csv")
    frame["conf_msp"] = -1.0  # below every in-distribution image: a perfect msp detector
    frame.to_csv(other / "eval" / "pad.csv", index=False)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cv_detection.py"
    result = tmp_path / "detection.json"
    proc = subprocess.run([sys.executable, str(script), str(out), str(other), "--id", "isic",
                           "--ood", "pad", "--out", str(result), "--bootstrap", "30"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(result.read_text())
    isic = read_predictions(out / "eval" / "isic.csv")
    pad = read_predictions(out / "eval" / "pad.csv", require_labels=False)
    kept = isic.labelled
    assert found["n_id"] == kept.sum() and found["n_ood"] == pad.n
    first = found["folders"][str(out)]["scores"]
    for score in ("msp", "knn"):
        expected = detection_auroc(isic.conf[score][kept], pad.conf[score])
        assert first[score]["auroc"] == pytest.approx(expected)
        lo, hi = first[score]["auroc_ci95"]
        assert lo <= expected <= hi
    second = found["folders"][str(other)]
    assert second["scores"]["msp"]["auroc"] == 1.0
    msp = second["vs_first"]["msp"]
    assert msp["difference"] == pytest.approx(1.0 - first["msp"]["auroc"])
    assert second["vs_first"]["knn"]["difference"] == pytest.approx(0.0)
