"""Choosing the OOD gate without OOD labels: on in-distribution images under synthetic
corruption (--shifted), or, opt-in, on unlabelled target-domain images (--target-domain);
the corruptions themselves; kNN at other neighbour ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.evaluate_kw import evaluate_kw

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import ImageRows, read_predictions, write_predictions
from skinclf.contracts.score_registry import FEATURE_SCORES
from skinclf.data.corruptions import (
    CLINICAL,
    CORRUPTIONS,
    FAMILIES,
    assign_corruptions,
    corrupt_images,
    parse_corruptions,
)
from skinclf.errors import ConfigError
from skinclf.predict import PredictOptions, predict_file
from skinclf.scoring.feature_scores import fit_feature_stats


def _file(path: Path, n: int, seed: int, wrong: float, conf: dict, labelled: bool = True) -> Path:
    """A predictions file: `wrong` of the rows misclassified, the given conf_ columns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    pred = np.where(rng.random(n) < wrong, (y + 1) % len(CLASSES), y)
    logits = rng.normal(0, 0.3, (n, len(CLASSES)))
    logits[np.arange(n), pred] += 2.0
    return write_predictions(
        path,
        ImageRows(
            [f"img{i}" for i in range(n)], "ham", y if labelled else [""] * n, np.zeros(n, bool)
        ),
        logits,
        conf={k: f(rng, n) for k, f in conf.items()},
    )


def _normal(mean: float):
    return lambda rng, n: rng.normal(mean, 1.0, n)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("choice")
    same = {"mahalanobis": _normal(0), "knn": _normal(0)}
    return {
        "val": _file(root / "val.csv", 300, 0, 0.2, same),
        "test": _file(root / "test.csv", 300, 1, 0.2, same),
        # corrupted ID images: knn sees them (far below the ID values), mahalanobis does not
        "shifted": _file(
            root / "shifted.csv", 300, 2, 0.6, {"mahalanobis": _normal(0), "knn": _normal(-4)}
        ),
        # unlabelled target-domain images: mahalanobis sees them, knn does not
        "target": _file(
            root / "target.csv",
            100,
            3,
            0.6,
            {"mahalanobis": _normal(-4), "knn": _normal(0)},
            labelled=False,
        ),
        "root": root,
    }


def _evaluate(files: dict, out: Path, **kw) -> dict:
    return evaluate_kw(
        test=files["test"],
        out_dir=out,
        val=files["val"],
        choose_gate=True,
        gate_stats=files["root"] / "stats.npz",  # only copied; never read here
        confidence_gate="coverage",
        target_coverage=0.9,
        n_bootstrap=10,
        **kw,
    ).metrics


def _touch_stats(files: dict) -> None:
    (files["root"] / "stats.npz").write_bytes(b"stats")


def test_shifted_choice_picks_the_score_that_sees_the_corruption(files, tmp_path) -> None:
    _touch_stats(files)
    policy = _evaluate(files, tmp_path / "eval", shifted=files["shifted"])["policy"]
    assert policy["gate"]["score"] == "knn"
    assert policy["choice_mode"] == "shifted" and "no OOD label" in policy["choice_criterion"]
    table = policy["choice"]
    assert table["knn"] < table["mahalanobis"]  # silent failures on the corrupted images
    corrupted = policy["sets"]["corrupted"]["gated"]
    assert corrupted["silent_failure_rate"] == pytest.approx(table["knn"])
    assert corrupted["coverage"] < 0.1  # almost every corrupted image is turned away
    assert "gate" in policy and (tmp_path / "eval" / "selective.json").is_file()


def test_target_domain_choice_is_marked_apart(files, tmp_path) -> None:
    _touch_stats(files)
    out = tmp_path / "eval"
    policy = _evaluate(files, out, target_domain=files["target"])["policy"]
    assert policy["gate"]["score"] == "mahalanobis"
    assert policy["choice_mode"] == "target_domain"
    assert policy["choice"]["mahalanobis"] == pytest.approx(
        policy["sets"]["target_domain"]["gated"]["coverage"]
    )
    assert "target-domain mode" in (out / "report.html").read_text()


def test_choice_options_that_do_not_fit_together(files, tmp_path) -> None:
    _touch_stats(files)
    with pytest.raises(ConfigError, match="not both"):
        _evaluate(files, tmp_path / "a", shifted=files["shifted"], target_domain=files["target"])
    with pytest.raises(ConfigError, match="--choose-gate"):
        evaluate_kw(
            test=files["test"], out_dir=tmp_path / "b", val=files["val"], shifted=files["shifted"]
        )
    with pytest.raises(ConfigError, match="labelled"):
        _evaluate(files, tmp_path / "c", shifted=files["target"])


def test_knn_at_other_ranks_by_hand() -> None:
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    stats = fit_feature_stats(bank, np.array([0, 1, 0, 1]))
    q = np.array([[2.0, 0.0]])  # cosines to the bank: 1, 0, 1/sqrt(2), -1
    got = stats.scores(q, ("knn_k1",))["knn_k1"]
    assert got == pytest.approx([1.0])
    from skinclf.scoring.feature_scores import KNN

    assert KNN(stats.knn.bank, 2).score(q) == pytest.approx([1 / np.sqrt(2)])
    assert KNN(stats.knn.bank, 3).score(q) == pytest.approx([0.0])
    assert "knn_k5" in FEATURE_SCORES and stats.scorer("knn_k5").k == 5
    assert stats.scorer("not_a_score") is None


def test_corruptions_are_seeded_and_change_the_image() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    names = parse_corruptions("mix")
    assert names == tuple(CORRUPTIONS)
    assert parse_corruptions("clinical") == tuple(CLINICAL)
    assert parse_corruptions("all") == (*CORRUPTIONS, *CLINICAL)
    for name, fn in FAMILIES.items():
        out = fn(images[0], np.random.default_rng(1))
        assert out.shape == images[0].shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - images[0]).mean() > 1.0, name  # visibly changed
    a, fam = corrupt_images(images, [5, 0, 3], names, seed=3)
    b, _ = corrupt_images(images, [5, 0, 3], names, seed=3)
    np.testing.assert_array_equal(a, b)
    assert list(fam) == list(assign_corruptions(3, names, 3))
    one, _ = corrupt_images(images, [0], ("contrast",), seed=0)
    np.testing.assert_array_equal(one[0], CORRUPTIONS["contrast"](images[0], None))
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        parse_corruptions("contrast,fog")


def test_predict_corrupt_marks_the_file_and_changes_the_predictions(
    trained_run: Path, train_cache: Path, tmp_path: Path
) -> None:
    kw = {"split": "val", "cache_dir": train_cache, "progress": False}
    predict_file([trained_run], tmp_path / "plain.csv", **kw)
    predict_file([trained_run], tmp_path / "c1.csv", options=PredictOptions(corrupt="mix"), **kw)
    predict_file([trained_run], tmp_path / "c2.csv", options=PredictOptions(corrupt="mix"), **kw)
    plain, c1 = read_predictions(tmp_path / "plain.csv"), read_predictions(tmp_path / "c1.csv")
    assert all(str(d).endswith(":corrupted") for d in c1.dataset)
    assert list(c1.image_ids) == list(plain.image_ids)
    assert not np.allclose(c1.logits, plain.logits)
    np.testing.assert_array_equal(c1.logits, read_predictions(tmp_path / "c2.csv").logits)
    with pytest.raises(ConfigError, match="--corrupt 'fog'"):
        predict_file(
            [trained_run], tmp_path / "bad.csv", options=PredictOptions(corrupt="fog"), **kw
        )


def test_a_policy_without_confidence_threshold_is_never_chosen() -> None:
    from types import SimpleNamespace

    from skinclf.policy.choice import choose_gate_by_policy

    policies = {"a": SimpleNamespace(solution_exists=False, rating=0.0)}
    policies["b"] = SimpleNamespace(solution_exists=True, rating=0.3)
    best, table, excluded = choose_gate_by_policy(
        ["a", "b"], policies.__getitem__, lambda p: p.rating
    )
    assert best == "b" and set(table) == {"b"} and "target risk" in excluded["a"]


def test_shifted_choice_with_an_unreachable_risk_chooses_the_gate_alone(files, tmp_path) -> None:
    _touch_stats(files)
    metrics = evaluate_kw(
        test=files["test"],
        out_dir=tmp_path / "eval",
        val=files["val"],
        choose_gate=True,
        shifted=files["shifted"],
        gate_stats=files["root"] / "stats.npz",
        target_risk=0.01,  # 20 % errors: no threshold certifies 1 %
        n_bootstrap=10,
    ).metrics
    assert metrics["policy"]["gate"]["score"] == "knn"  # still the score that sees the shift
    assert any("confidence gate off" in n for n in metrics["notes"])
    assert all("target risk" in why for why in metrics["policy"]["choice_excluded"].values())
    assert metrics["policy"]["sets"]["test"]["gated"]["coverage"] == 0.0  # says it abstains


def test_shifted_file_without_the_feature_scores_is_refused(files, tmp_path) -> None:
    _touch_stats(files)
    bare = _file(tmp_path / "bare.csv", 50, 5, 0.5, {})
    with pytest.raises(ConfigError, match="no conf_mahalanobis column"):
        _evaluate(files, tmp_path / "eval", shifted=bare)


def test_the_clinical_shifts_do_what_their_names_say() -> None:
    from skinclf.data.corruptions import exposure, field_of_view, vignetting, white_balance

    grey = np.full((40, 40, 3), 128, dtype=np.uint8)
    lesion = grey.copy()
    lesion[10:30, 10:30] = (90, 40, 30)  # a dark lesion on grey skin
    corners = vignetting(grey, np.random.default_rng(0))
    assert corners[0, 0].mean() < 0.6 * 128 and corners[20, 20].mean() > 0.95 * 128
    wider = field_of_view(lesion, np.random.default_rng(0))
    assert abs(wider[:5].mean() - 128) < 6  # skin of the border's colour around it
    dark = (wider.astype(int).sum(axis=2) < 250).sum()
    assert 0.2 * 400 < dark < 0.5 * 400  # the lesion at about 0.55 of its side (0.3 of its area)
    tints = {tuple(white_balance(grey, np.random.default_rng(s))[0, 0]) for s in range(20)}
    assert tints == {(151, 128, 105), (105, 128, 151)}  # warm or cool, seeded
    levels = {int(exposure(grey, np.random.default_rng(s))[0, 0, 0]) for s in range(20)}
    assert len(levels) == 2 and min(levels) < 100 < 170 < max(levels)  # under or over
