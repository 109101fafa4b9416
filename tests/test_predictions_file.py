"""The predictions file: round trip, derived columns, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import (
    LOGIT_COLUMNS,
    PROB_COLUMNS,
    ImageRows,
    read_predictions,
    softmax,
    write_predictions,
)
from skinclf.errors import DataError


def _write(tmp_path: Path, n: int = 6, **kwargs) -> Path:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, len(CLASSES)))
    labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
    semantic = [False] * n
    labels[-1], semantic[-1] = "", True  # one semantic OOD row without a label
    rows = ImageRows([f"img_{i}" for i in range(n)], "ham10000", labels, semantic)
    return write_predictions(tmp_path / "p.csv", rows, logits, **kwargs)


def _rewrite(path: Path, change) -> Path:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = change(frame)
    frame.to_csv(path, index=False)
    return path


def test_round_trip_keeps_every_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 7))
    conf = {"msp": softmax(logits).max(1), "knn": rng.normal(size=4)}
    rows = ImageRows(
        ["a", "b", "c", "d"],
        ["ham10000", "ham10000", "pad-ufes-20", "pad-ufes-20"],
        [0, 4, -1, 6],  # class indices, -1 = no label
        [False, False, True, False],
    )
    path = write_predictions(
        tmp_path / "sub" / "p.csv", rows, logits, conf=conf, abstain=[True, False, False, True]
    )
    header = path.read_text().splitlines()[0].split(",")
    expected = ["image_id", "dataset", "label", "semantic_ood", *LOGIT_COLUMNS, *PROB_COLUMNS]
    assert header == [*expected, "conf_msp", "conf_knn", "abstain"]
    p = read_predictions(path)
    assert p.image_ids.tolist() == ["a", "b", "c", "d"]
    assert p.y.tolist() == [0, 4, -1, 6]
    assert p.semantic_ood.tolist() == [False, False, True, False]
    np.testing.assert_allclose(p.logits, logits)
    np.testing.assert_allclose(p.probs, softmax(logits))
    np.testing.assert_allclose(p.conf["knn"], conf["knn"])
    assert p.abstain.tolist() == [True, False, False, True]
    assert p.dataset.tolist()[2] == "pad-ufes-20"
    assert p.labelled.tolist() == [True, True, False, True]
    assert p.pred.tolist() == softmax(logits).argmax(1).tolist()


def test_prob_only_and_logit_only_files(tmp_path: Path) -> None:
    path = _write(tmp_path)
    full = read_predictions(path)
    _rewrite(path, lambda f: f.drop(columns=list(LOGIT_COLUMNS)))
    probs_only = read_predictions(path)
    np.testing.assert_allclose(probs_only.probs, full.probs)
    np.testing.assert_allclose(softmax(probs_only.logits), full.probs, atol=1e-9)

    path = _write(tmp_path)
    _rewrite(path, lambda f: f.drop(columns=list(PROB_COLUMNS)))
    np.testing.assert_allclose(read_predictions(path).probs, full.probs)


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_predictions(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_columns(tmp_path: Path) -> None:
    path = _rewrite(_write(tmp_path), lambda f: f.drop(columns=["label", "logit_mel"]))
    message = _error(path)
    assert "label" in message and "logit_mel" in message and "missing column" in message


def test_probabilities_must_sum_to_one(tmp_path: Path) -> None:
    def scale(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[2, "prob_nv"] = str(float(f.loc[2, "prob_nv"]) + 0.01)
        return f

    message = _error(_rewrite(_write(tmp_path), scale))
    assert "line 4" in message and "sum to" in message


def test_small_rounding_of_probabilities_is_accepted(tmp_path: Path) -> None:
    def nudge(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[0, "prob_nv"] = str(float(f.loc[0, "prob_nv"]) + 5e-4)
        return f

    assert read_predictions(_rewrite(_write(tmp_path), nudge)).n == 6


@pytest.mark.parametrize("bad", ["NaN", "", "nan"])
def test_nan_values(tmp_path: Path, bad: str) -> None:
    def poison(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[1, "logit_bcc"] = bad
        return f

    message = _error(_rewrite(_write(tmp_path), poison))
    assert "line 3" in message and "logit_bcc" in message and "NaN" in message


def test_non_numeric_value(tmp_path: Path) -> None:
    def poison(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[0, "prob_df"] = "high"
        return f

    message = _error(_rewrite(_write(tmp_path), poison))
    assert "'high'" in message and "prob_df" in message


def test_label_outside_class_list(tmp_path: Path) -> None:
    def relabel(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[3, "label"] = "scc"
        return f

    message = _error(_rewrite(_write(tmp_path), relabel))
    assert "'scc'" in message and "line 5" in message and "akiec" in message


def test_empty_label_needs_semantic_ood(tmp_path: Path) -> None:
    def unlabel(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[0, "label"] = ""
        return f

    path = _rewrite(_write(tmp_path), unlabel)
    message = _error(path)
    assert "semantic_ood" in message and "line 2" in message
    assert read_predictions(path, require_labels=False).y[0] == -1


def test_upper_case_label_is_read(tmp_path: Path) -> None:
    def upper(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[0, "label"] = "AKIEC"
        return f

    assert read_predictions(_rewrite(_write(tmp_path), upper)).y[0] == 0


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in _error(empty)
    header = tmp_path / "header.csv"
    header.write_text(_write(tmp_path).read_text().splitlines()[0] + "\n")
    assert "no rows" in _error(header)


def test_not_a_csv(tmp_path: Path) -> None:
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert "not a readable CSV" in _error(binary)
    json_file = tmp_path / "p.json"
    json_file.write_text('{"image_id": 1}\n')
    assert "missing column" in _error(json_file)
    assert "no such" in _error(tmp_path / "absent.csv")


def test_bad_boolean_and_duplicate_ids(tmp_path: Path) -> None:
    def maybe(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[0, "semantic_ood"] = "maybe"
        return f

    assert "'maybe'" in _error(_rewrite(_write(tmp_path), maybe))

    def duplicate(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[2, "image_id"] = f.loc[1, "image_id"]
        return f

    assert "more than once" in _error(_rewrite(_write(tmp_path), duplicate))


def test_nan_in_conf_column(tmp_path: Path) -> None:
    path = _write(tmp_path, conf={"mahalanobis": np.r_[np.nan, np.zeros(5)]})
    assert "conf_mahalanobis" in _error(path)


def test_write_checks_shapes(tmp_path: Path) -> None:
    rows = ImageRows(["a"], "d", ["nv"], [False])
    with pytest.raises(ValueError):
        write_predictions(tmp_path / "x.csv", rows, np.zeros((1, 3)))
