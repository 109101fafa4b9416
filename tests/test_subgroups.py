"""Metadata in the predictions file (meta_<name>, image_path) and the chosen policy's numbers
per subgroup."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import (
    ImageRows,
    Predictions,
    read_predictions,
    write_predictions,
)
from skinclf.evaluate.subgroups import (
    add_subgroups,
    age_bands,
    subgroup_outcomes,
    subgroup_tables,
)
from skinclf.predict import predict_file


def _logits(pred: list[int]) -> np.ndarray:
    logits = np.zeros((len(pred), len(CLASSES)))
    logits[np.arange(len(pred)), pred] = 4.0
    return logits


def test_metadata_and_image_path_round_trip(tmp_path: Path) -> None:
    path = write_predictions(
        tmp_path / "p.csv",
        ImageRows(
            ["a", "b", "c", "d"],
            "ham10000",
            ["mel", "nv", "", "bcc"],
            [False, False, True, False],
            image_path=["/x/a.jpg", "/x/b.jpg", "", "/x/d, with comma.jpg"],
            meta={"age": [45.0, np.nan, "30", None], "sex": ["male", "", "female", pd.NA]},
        ),
        _logits([4, 5, 0, 1]),
    )
    header = path.read_text().splitlines()[0].split(",")
    assert header[-3:] == ["image_path", "meta_age", "meta_sex"]
    p = read_predictions(path)
    assert p.meta["age"].tolist() == ["45", "", "30", ""]  # a whole float without ".0"
    assert p.meta["sex"].tolist() == ["male", "", "female", ""]
    assert p.image_path is not None
    assert p.image_path.tolist() == ["/x/a.jpg", "/x/b.jpg", "", "/x/d, with comma.jpg"]
    part = p.subset(np.array([False, True, False, True]))
    assert part.meta["sex"].tolist() == ["", ""] and part.meta["age"].tolist() == ["", ""]
    assert part.image_path is not None and part.image_path.tolist()[1].endswith("comma.jpg")

    # a file written without them still reads, with no metadata
    old = write_predictions(
        tmp_path / "old.csv", ImageRows(["a"], "x", ["mel"], [False]), _logits([4])
    )
    q = read_predictions(old)
    assert q.meta == {} and q.image_path is None
    assert q.subset(np.array([True])).meta == {}


def test_write_checks_metadata_length(tmp_path: Path) -> None:
    rows = ImageRows(["a", "b"], "x", ["mel", "nv"], [False, False], meta={"sex": ["male"]})
    with pytest.raises(ValueError, match="meta\\['sex'\\] has 1 entries, expected 2"):
        write_predictions(tmp_path / "p.csv", rows, _logits([4, 5]))


def test_age_bands() -> None:
    ages = np.array(["0", "29", "30", "44.5", "45", "59", "60", "74", "75", "90", "", "abc", "-3"])
    assert age_bands(ages).tolist() == [
        "<30", "<30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74", "75+", "75+",
        "unknown", "unknown", "unknown",
    ]  # fmt: skip


def _preds(meta: dict[str, list[str]]) -> Predictions:
    """Six rows: labels mel, nv, nv, bcc, (SCC, semantic OOD), unlabelled; predictions mel, mel,
    nv, bcc, nv, nv."""
    y = np.array([4, 5, 5, 1, -1, -1])
    pred = [4, 4, 5, 1, 5, 5]
    logits = _logits(pred)
    return Predictions(
        image_ids=np.array([f"i{i}" for i in range(6)], dtype=object),
        dataset=np.full(6, "pad-ufes-20", dtype=object),
        y=y,
        semantic_ood=np.array([False, False, False, False, True, False]),
        logits=logits,
        probs=np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
        meta={k: np.array(v, dtype=object) for k, v in meta.items()},
    )


def test_subgroup_numbers_by_hand() -> None:
    p = _preds({"gender": ["MALE", "MALE", "FEMALE", "FEMALE", "FEMALE", ""],
                "age": ["25", "70", "33", "41", "", "88"]})  # fmt: skip
    abstain = np.array([False, False, True, False, False, True])
    reason = np.array(["", "", "uncertain", "", "", "unfamiliar"], dtype=object)
    out = subgroup_outcomes(p, abstain, reason)
    assert list(out) == ["gender", "age"]
    assert list(out["gender"]) == ["FEMALE", "MALE", "unknown"]
    male = out["gender"]["MALE"]  # rows 0 (right), 1 (wrong), both accepted
    assert male["n"] == 2 and male["coverage"] == 1.0
    assert male["accepted_accuracy"] == 0.5 and male["silent_failure_rate"] == 0.5
    female = out["gender"]["FEMALE"]  # row 2 abstained, row 3 right, row 4 an accepted SCC
    assert female["n"] == 3 and female["coverage"] == pytest.approx(2 / 3)
    assert female["accepted_accuracy"] == 1.0
    assert female["silent_failure_rate"] == pytest.approx(1 / 3)  # the SCC over 3 judged
    assert female["reasons"] == {"accepted": 2, "unfamiliar": 0, "uncertain": 1}
    unknown = out["gender"]["unknown"]  # one unlabelled row, rejected: coverage only
    assert unknown["n"] == 1 and unknown["coverage"] == 0.0
    assert unknown["accepted_accuracy"] is None and unknown["silent_failure_rate"] is None
    assert list(out["age"]) == ["<30", "30-44", "60-74", "75+", "unknown"]
    assert out["age"]["30-44"]["n"] == 2 and out["age"]["30-44"]["coverage"] == 0.5

    sets = {"pad": {"gated": {}}, "test": {"gated": {}}}
    decisions = {"pad": (p.image_ids, abstain, reason), "test": (p.image_ids, abstain, reason)}
    plain = _preds({})
    add_subgroups(sets, {"pad": p, "test": plain}, decisions)
    assert sets["pad"]["subgroups"] == out and "subgroups" not in sets["test"]
    tables = subgroup_tables({"sets": sets})
    assert [(t["set"], t["column"]) for t in tables] == [("pad", "gender"), ("pad", "age")]
    assert tables[0]["rows"][1] == ["MALE", 2, 1.0, 0.5, 0.5, "2 / 0 / 0"]


def test_predict_writes_metadata_and_image_paths(
    trained_run: Path,
    train_cache: Path,
    ham_sample: Path,
    pad_sample: Path,
    folder_sample: Path,
    tmp_path: Path,
) -> None:
    kw = {"cache_dir": train_cache, "progress": False}
    predict_file([trained_run], tmp_path / "ham.csv", data=ham_sample, **kw)
    ham = read_predictions(tmp_path / "ham.csv")
    assert set(ham.meta) == {"age", "sex", "localization"}
    table = pd.read_csv(ham_sample / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    table = table.set_index("image_id").loc[list(ham.image_ids)]
    assert ham.meta["sex"].tolist() == table["sex"].tolist()
    assert ham.meta["localization"].tolist() == table["localization"].tolist()
    ages = [str(int(float(a))) if a else "" for a in table["age"]]
    assert ham.meta["age"].tolist() == ages
    assert ham.image_path is not None
    for image_id, path in zip(ham.image_ids, ham.image_path, strict=True):
        assert os.path.isabs(path) and Path(path).is_file() and Path(path).stem == image_id

    predict_file([trained_run], tmp_path / "pad.csv", data=pad_sample, **kw)
    pad = read_predictions(tmp_path / "pad.csv", require_labels=False)
    assert set(pad.meta) == {"age", "gender", "fitspatrick", "region"}
    pad_table = pd.read_csv(pad_sample / "metadata.csv", dtype=str, keep_default_na=False)
    pad_table = pad_table.set_index("img_id").loc[list(pad.image_ids)]
    fitz = [str(int(float(f))) if f else "" for f in pad_table["fitspatrick"]]
    assert pad.meta["fitspatrick"].tolist() == fitz and "" in fitz  # empty where missing
    assert pad.meta["gender"].tolist() == pad_table["gender"].tolist()
    assert pad.image_path is not None and all(Path(x).is_file() for x in pad.image_path)

    predict_file([trained_run], tmp_path / "folder.csv", data=folder_sample, **kw)
    plain = read_predictions(tmp_path / "folder.csv", require_labels=False)
    assert plain.meta == {}
    assert plain.image_path is not None and all(Path(x).is_file() for x in plain.image_path)
