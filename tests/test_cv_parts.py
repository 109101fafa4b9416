"""The parts of `skinclf cv` that need no training: K folds, logit offsets, the out-of-fold
summary, the refused settings, Shades of Gray colour constancy, and the checks of the files a
cv and a cv ensemble read."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tests.test_split import ham_like_table

from skinclf.classes import CLASSES
from skinclf.config import load_config
from skinclf.contracts.predictions import Predictions, softmax
from skinclf.contracts.scores import SCORES
from skinclf.data.split import fold_split, fold_split_file, group_leaks, merged_groups
from skinclf.errors import ConfigError, DataError
from skinclf.evaluate.crossval import out_of_fold_summary, set_summary
from skinclf.evaluate.metrics import balanced_accuracy
from skinclf.evaluate.offsets import (
    apply_offsets,
    cross_fitted,
    fit_logit_offsets,
    read_offsets,
    write_offsets,
)
from skinclf.models.classifier import shades_of_gray
from skinclf.pipeline.cv import scored_out_of_fold
from skinclf.pipeline.job import set_name


@pytest.fixture(scope="module")
def ham() -> pd.DataFrame:
    return ham_like_table(1)


@pytest.mark.parametrize("k,calib", [(5, 0.0), (3, 0.1)])
def test_folds_cover_every_image_once_grouped_and_stratified(ham, k, calib):
    folds = fold_split(ham, k, calib=calib, seed=0)
    assert folds["image_id"].tolist() == ham["image_id"].tolist()
    names = {str(i) for i in range(k)} | ({"calib"} if calib else set())
    assert set(folds["fold"]) == names
    lesions = pd.DataFrame({"group": merged_groups(ham), "fold": folds["fold"]})
    assert lesions.groupby("group")["fold"].nunique().max() == 1  # no lesion in two folds
    counts = pd.crosstab(ham["label"], folds["fold"])
    per_fold = counts[[str(i) for i in range(k)]]
    # every class spread evenly: within 3 images of the fold mean (lesions of up to 6 images)
    assert (per_fold.sub(per_fold.mean(axis=1), axis=0).abs() <= 3).all().all()
    if calib:
        share = (folds["fold"] == "calib").mean()
        assert abs(share - calib) < 0.01


def test_fold_split_files_hold_one_fold_out_each(ham):
    folds = fold_split(ham, 3, calib=0.1, seed=0)
    held_out = []
    for k in range(3):
        split = fold_split_file(folds, k)
        assert set(split["split"]) == {"train", "val", "calib"}
        assert group_leaks(ham, split) == []
        assert (split["split"] == "calib").equals(folds["fold"] == "calib")
        held_out += split.loc[split["split"] == "val", "image_id"].tolist()
    assert sorted(held_out) == sorted(folds.loc[folds["fold"] != "calib", "image_id"])


def test_folds_are_deterministic_and_refuse_bad_settings(ham):
    assert fold_split(ham, 4, seed=3).equals(fold_split(ham, 4, seed=3))
    assert not fold_split(ham, 4, seed=3).equals(fold_split(ham, 4, seed=4))
    with pytest.raises(ConfigError, match="at least 2 folds"):
        fold_split(ham, 1)
    with pytest.raises(ConfigError, match="calib fraction"):
        fold_split(ham, 3, calib=1.0)


def biased_logits(n: int = 700, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that separate the classes but favour class 5 (nv) by 2 nats."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=n)
    logits = rng.normal(0, 1, size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 2.0
    logits[:, 5] += 2.0
    return logits, y


def test_offsets_undo_a_class_bias_and_raise_balanced_accuracy():
    logits, y = biased_logits()
    before = balanced_accuracy(y, logits.argmax(1))
    b = fit_logit_offsets(logits, y)
    after = balanced_accuracy(y, apply_offsets(logits, b).argmax(1))
    assert after > before + 0.1
    assert abs(b.mean()) < 1e-9
    assert b[5] == b.min() and b[5] < -1.0  # the favoured class is pushed down


def test_offsets_stay_zero_where_nothing_is_to_gain():
    y = np.repeat(np.arange(len(CLASSES)), 10)
    logits = np.eye(len(CLASSES))[y] * 5.0  # already perfect: every offset 0 ties
    assert np.allclose(fit_logit_offsets(logits, y), 0.0)
    with pytest.raises(DataError, match="no labelled"):
        fit_logit_offsets(logits[:0], y[:0])


def test_cross_fitted_offsets_use_the_other_folds_only():
    logits, y = biased_logits()
    folds = np.arange(len(y)) % 3
    out = cross_fitted(logits, y, folds)
    for k in range(3):
        inside = folds == k
        b = fit_logit_offsets(logits[~inside], y[~inside])
        assert np.allclose(out[inside], logits[inside] + b)


def test_offsets_file_round_trip_and_bad_file(tmp_path):
    b = np.linspace(-1, 1, len(CLASSES))
    path = write_offsets(tmp_path / "logit_offsets.json", b, "out-of-fold predictions", 12)
    assert np.allclose(read_offsets(path), b)
    (tmp_path / "bad.json").write_text('{"offsets": {"nv": 1}}')
    with pytest.raises(DataError, match="bad.json is not a logit offsets file"):
        read_offsets(tmp_path / "bad.json")


def test_out_of_fold_summary_hand_checked():
    logits, y = biased_logits(300)
    folds = (np.arange(300) % 3).astype(str)
    summary = out_of_fold_summary(logits, y, folds, n_bootstrap=50)
    pred = logits.argmax(1)
    assert summary["pooled"]["balanced_accuracy"] == pytest.approx(balanced_accuracy(y, pred))
    assert summary["pooled"]["n"] == 300
    for k in "012":
        inside = folds == k
        got = summary["folds"][k]["balanced_accuracy"]
        assert got == pytest.approx(balanced_accuracy(y[inside], pred[inside]))
    lo, hi = summary["pooled"]["balanced_accuracy_ci95"]
    assert lo < summary["pooled"]["balanced_accuracy"] < hi
    nv = y == 5
    assert summary["pooled"]["recall"]["nv"] == pytest.approx((pred[nv] == 5).mean())
    assert summary["pooled_offsets"]["balanced_accuracy"] > summary["pooled"]["balanced_accuracy"]


def test_set_summary_takes_the_offsets_off_again():
    logits, y = biased_logits(200)
    b = fit_logit_offsets(logits, y)
    summary = set_summary(apply_offsets(logits, b), y, b, n_bootstrap=20)
    raw = balanced_accuracy(y, logits.argmax(1))
    assert summary["no_offsets"]["balanced_accuracy"] == pytest.approx(raw)
    adjusted = balanced_accuracy(y, apply_offsets(logits, b).argmax(1))
    assert summary["offsets"]["balanced_accuracy"] == pytest.approx(adjusted)


def test_cv_refuses_settings_that_choose_on_the_held_out_fold():
    from skinclf.pipeline.cv import fold_config

    cfg = fold_config(load_config("sample"))
    assert cfg.train.checkpoint == "last"
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        fold_config(load_config("sample", None, ["train.early_stopping_patience=2"]))


def test_shades_of_gray_removes_a_colour_cast_and_keeps_grey_images():
    rng = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 16, 16, generator=rng).expand(-1, 3, -1, -1) * 0.6
    assert torch.allclose(shades_of_gray(grey), grey, atol=1e-5)
    cast = grey * torch.tensor([1.0, 0.8, 0.55]).view(1, 3, 1, 1)
    corrected = shades_of_gray(cast)
    means = corrected.mean(dim=(2, 3))
    assert (means.max(1).values - means.min(1).values < 1e-3).all()  # channels balanced
    assert corrected.min() >= 0 and corrected.max() <= 1


def test_colour_constancy_is_part_of_the_model_and_of_the_cache_key():
    from skinclf.inference.feature_cache import backbone_key
    from skinclf.models.classifier import Classifier, ClassifierSpec

    def model(color: str) -> Classifier:
        torch.manual_seed(0)
        backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        return Classifier(ClassifierSpec("x", 4, color_constancy=color), backbone).eval()

    x = (torch.rand(1, 3, 8, 8) * 200).to(torch.uint8)
    tinted = (x.float() * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)).to(torch.uint8)
    on, off = model("shades_of_gray"), model("none")

    def colour(m: Classifier, v: torch.Tensor) -> torch.Tensor:
        """The channel shares of what the model's input layer sees (in [0, 1] pixels)."""
        means = (m.normalize(v) * m.std + m.mean).mean(dim=(2, 3))
        return means / means.sum()

    assert not torch.allclose(colour(off, x), colour(off, tinted), atol=0.01)
    assert torch.allclose(colour(on, x), colour(on, tinted), atol=0.01)  # the cast is gone
    assert backbone_key(on) != backbone_key(off)
    assert "color_constancy" not in backbone_key(off)  # earlier caches keep their keys


def _scored(ids: list[str], logits: np.ndarray, conf: dict) -> Predictions:
    n = len(ids)
    return Predictions(
        image_ids=np.array(ids), dataset=np.array(["d"] * n), y=np.zeros(n, dtype=int),
        semantic_ood=np.zeros(n, dtype=bool), logits=logits, probs=softmax(logits), conf=conf,
    )  # fmt: skip


def test_scored_out_of_fold_takes_each_fold_models_feature_scores_and_rescores_tta():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, len(CLASSES)))
    oof = _scored(["a", "b", "c", "d"], logits, {"msp": SCORES["msp"](logits)})
    # fold 0 held out b and d, fold 1 a and c; their tta column is without the offsets
    scored = [
        _scored(["d", "b"], logits[[3, 1]], {"tta": np.zeros(2), "knn": np.array([-4.0, -2.0])}),
        _scored(["a", "c"], logits[[0, 2]], {"tta": np.zeros(2), "knn": np.array([-1.0, -3.0])}),
    ]
    offsets = np.linspace(-1.0, 1.0, len(CLASSES))
    out = scored_out_of_fold(oof, scored, offsets)
    np.testing.assert_array_equal(out.conf["knn"], [-1.0, -2.0, -3.0, -4.0])  # by image
    shifted = softmax(apply_offsets(logits, offsets))
    np.testing.assert_allclose(out.probs, shifted)
    for name in ("msp", "tta"):  # both on the logits with the ensemble's offsets
        np.testing.assert_allclose(out.conf[name], shifted.max(axis=1))
    with pytest.raises(DataError, match="image a is missing .2 missing, 0 extra.; delete them"):
        scored_out_of_fold(oof, scored[:1], offsets)
    with pytest.raises(DataError, match="Image d is predicted twice"):
        scored_out_of_fold(oof, [scored[0], *scored], offsets)


def test_a_dataset_folder_is_never_named_as_an_internal_eval_file(tmp_path):
    used: set[str] = set()
    names = [set_name(tmp_path / n, used) for n in ("out_of_fold", "calib_corrupted", "val", "pad")]
    assert names == ["out_of_fold-2", "calib_corrupted-2", "val-2", "pad"]
    assert set_name(tmp_path / "pad", used) == "pad-2"  # and never twice the same


def test_a_members_unreadable_evaluation_is_named(tmp_path):
    from skinclf.pipeline.cv_ensemble import member_evaluation

    assert member_evaluation(tmp_path) is None  # no evaluation: no calibration part
    (tmp_path / "eval").mkdir()
    step = {"status": "done", "parts": {"settings": {"choose_gate": True}}}
    (tmp_path / "run_state.json").write_text(json.dumps({"steps": {"evaluate": step}}))
    (tmp_path / "eval" / "metrics.json").write_text('{"settings": {}}')
    with pytest.raises(DataError, match=r"evaluation of .*/metrics.json \(KeyError\('files'\)\)"):
        member_evaluation(tmp_path)
    files = {"ood": ["x/pad.csv"], "external": ["x/isic.csv"]}
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"settings": {"files": files}}))
    assert member_evaluation(tmp_path) == ({"choose_gate": True}, ["pad"], ["isic"])


def test_members_evaluated_with_other_settings_are_refused(tmp_path):
    from skinclf.errors import ConfigError
    from skinclf.pipeline.cv_ensemble import same_evaluation

    a, b = {"target_risk": 0.1, "id_keep": 0.95}, {"target_risk": 0.1, "id_keep": 0.9}
    same_evaluation([tmp_path / "a", tmp_path / "b"], [a, dict(a)])  # the same: no error
    with pytest.raises(
        ConfigError,
        match=r"a and .*b were evaluated with different --id-keep "
        r"\(0.95 and 0.9\)",
    ):
        same_evaluation([tmp_path / "a", tmp_path / "b"], [a, b])


def test_the_cv_folder_names_its_files_once(tmp_path) -> None:
    """The path class and the readers agree: folds found in fold order, a cv known by its
    folds file, an ensemble by its members file."""
    from skinclf.contracts.cv_folder import CvFolder, fold_folders, is_cv_folder, member_cvs

    cv = CvFolder(tmp_path)
    for k in (10, 2):
        cv.fold(k).mkdir()
    assert fold_folders(tmp_path) == [cv.fold(2), cv.fold(10)]
    assert cv.fold_split(2) == tmp_path / "splits" / "fold_2.csv"
    assert not is_cv_folder(tmp_path)
    cv.folds.write_text("image_id,fold\n")
    assert is_cv_folder(tmp_path) and member_cvs(tmp_path) == []
    cv.members.write_text('{"members": ["fold_2"]}')
    with pytest.raises(DataError, match="not a cross-validation folder"):
        member_cvs(tmp_path)
