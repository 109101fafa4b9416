"""The report's grid of accepted and rejected example images, and an evaluate run with a gate
that writes the subgroup tables and the grid."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests.evaluate_kw import evaluate_kw

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions
from skinclf.evaluate.examples import THUMB, example_grid, pick
from skinclf.predict import PredictOptions, predict_file


def test_pick_is_evenly_spaced_by_confidence() -> None:
    conf = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    rows = np.arange(10)
    assert pick(rows, conf, 3).tolist() == [9, 7, 0]  # lowest, middle (0.4), highest
    assert pick(rows, conf, 20).tolist() == np.argsort(conf).tolist()  # all, by confidence
    assert pick(np.array([4, 6]), conf, 8).tolist() == [4, 6]
    assert pick(np.array([], dtype=int), conf, 8).tolist() == []


def _preds(tmp_path: Path, n: int = 12, with_files: bool = True) -> Predictions:
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        if with_files:
            Image.new("RGB", (40 + i, 30), (20 * i % 256, 100, 50)).save(path)
        paths.append(str(path))
    pred = np.arange(n) % len(CLASSES)
    y = pred.copy()
    y[4] = (pred[4] + 1) % len(CLASSES)  # one wrong
    logits = np.zeros((n, len(CLASSES)))
    logits[np.arange(n), pred] = 3.0
    semantic = np.zeros(n, bool)
    semantic[2] = True
    y[2] = -1
    return Predictions(
        image_ids=np.array([f"img{i}" for i in range(n)], dtype=object),
        dataset=np.full(n, "ham10000", dtype=object),
        y=y,
        semantic_ood=semantic,
        logits=logits,
        probs=np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
        image_path=np.array(paths, dtype=object),
    )


def _decisions(n: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    reason = np.array(["", "", "unfamiliar", "uncertain"] * (n // 4), dtype=object)
    return np.linspace(0.1, 0.9, n), reason != "", reason


def test_grid_picks_accepted_and_rejected_images(tmp_path: Path) -> None:
    p = _preds(tmp_path)
    conf, abstain, reason = _decisions()
    grid = example_grid(p, conf, abstain, reason, "msp", n=4)
    assert grid["note"] is None
    names = [g["name"] for g in grid["groups"]]
    assert names == ["accepted", "unfamiliar", "uncertain"]
    accepted, unfamiliar, uncertain = grid["groups"]
    assert accepted["n"] == 6 and len(accepted["images"]) == 4
    assert unfamiliar["n"] == 3 and [t["image_id"] for t in unfamiliar["images"]] == [
        "img2", "img6", "img10",
    ]  # fmt: skip
    assert all(t["image_id"] in {"img0", "img1", "img4", "img5", "img8", "img9"}
               for t in accepted["images"])  # fmt: skip
    assert [t["image_id"] for t in accepted["images"]][0] == "img0"  # the lowest confidence
    first = accepted["images"][0]
    image = Image.open(io.BytesIO(base64.b64decode(first["data"])))
    assert image.format == "JPEG" and image.size == (THUMB, THUMB)
    assert first["lines"] == ["true akiec · pred akiec", "msp 0.10 · accepted"]
    assert [t["image_id"] for t in accepted["images"]] == ["img0", "img4", "img5", "img9"]
    wrong = accepted["images"][1]
    assert wrong["lines"][0] == "true nv · pred mel" and wrong["wrong"]
    assert not first["wrong"] and unfamiliar["images"][0]["wrong"]  # a semantic OOD row
    assert unfamiliar["images"][0]["lines"][0].startswith("true semantic OOD")
    assert unfamiliar["images"][0]["lines"][1].endswith("unfamiliar")
    # the same inputs give the same grid
    assert example_grid(p, conf, abstain, reason, "msp", n=4) == grid


def test_grid_says_so_when_the_images_are_not_there(tmp_path: Path) -> None:
    conf, abstain, reason = _decisions()
    gone = _preds(tmp_path / "nowhere", with_files=False)
    grid = example_grid(gone, conf, abstain, reason, "msp")
    assert grid["groups"] == []
    assert "none of the 12 image files" in grid["note"]

    no_column = _preds(tmp_path, with_files=True)
    no_column.image_path = None
    grid = example_grid(no_column, conf, abstain, reason, "msp")
    assert grid["groups"] == [] and "no image_path column" in grid["note"]

    some = _preds(tmp_path)
    Path(some.image_path[0]).unlink()
    (tmp_path / "img5.png").write_bytes(b"not an image")  # unreadable: skipped, no failure
    grid = example_grid(some, conf, abstain, reason, "msp")
    shown = [t["image_id"] for g in grid["groups"] for t in g["images"]]
    assert "img0" not in shown and "img5" not in shown and "img4" in shown
    assert grid["note"].startswith("1 of the 12 image files are not here")


@pytest.fixture(scope="module")
def gated_eval(trained_run: Path, train_cache: Path, pad_sample: Path, tmp_path_factory) -> dict:
    """val/test predictions of the trained run and PAD-UFES-20 as OOD, evaluated with a gate."""
    root = tmp_path_factory.mktemp("examples")
    options = PredictOptions(scores=["msp", "energy"])
    kw = {"cache_dir": train_cache, "progress": False, "options": options}
    files = {}
    for split in ("val", "test"):
        files[split] = root / f"{split}.csv"
        predict_file([trained_run], files[split], split=split, **kw)
    files["ood"] = root / "pad.csv"
    predict_file([trained_run], files["ood"], data=pad_sample, **kw)
    out = root / "eval"
    metrics = evaluate_kw(
        test=files["test"],
        out_dir=out,
        val=files["val"],
        ood=[files["ood"]],
        ood_gate="energy",
        id_keep=0.9,
        target_risk=0.5,
        n_bootstrap=20,
    ).metrics
    return {"root": root, "out": out, "metrics": metrics, **files}


def test_evaluate_with_a_gate_writes_subgroups_and_the_grid(gated_eval: dict) -> None:
    sets = gated_eval["metrics"]["policy"]["sets"]
    test_groups = sets["test"]["subgroups"]
    assert set(test_groups) == {"age", "sex", "localization"}
    n_test = sets["test"]["gated"]["n"]
    assert sum(g["n"] for g in test_groups["sex"].values()) == n_test
    assert set(test_groups["age"]) <= {"<30", "30-44", "45-59", "60-74", "75+", "unknown"}
    pad = next(name for name in sets if name != "test")
    assert {"fitspatrick", "gender", "region", "age"} <= set(sets[pad]["subgroups"])
    saved = json.loads((gated_eval["out"] / "metrics.json").read_text())
    assert saved["policy"]["sets"]["test"]["subgroups"] == test_groups

    html = (gated_eval["out"] / "report.html").read_text()
    assert "<h3>Subgroups</h3>" in html and "fitspatrick" in html
    assert "<h3>Example images</h3>" in html
    assert html.count('src="data:image/jpeg;base64,') >= 2
    assert 'class="thumbs"' in html and "true " in html and " · pred " in html


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from skinclf.cli import main

    monkeypatch.setattr(sys, "argv", ["skinclf", "evaluate", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_no_examples_and_moved_images(gated_eval: dict, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "plain"
    code = _main(
        monkeypatch, "--test", str(gated_eval["test"]), "--val", str(gated_eval["val"]),
        "--out", str(out), "--ood-gate", "energy", "--target-risk", "0.5", "--bootstrap", "20",
        "--no-examples",
    )  # fmt: skip
    assert code == 0
    html = (out / "report.html").read_text()
    assert "<h3>Subgroups</h3>" in html
    assert "Example images" not in html and "data:image/jpeg" not in html

    # predictions whose images are elsewhere: the report says so and is still written
    frame = pd.read_csv(gated_eval["test"], dtype=str, keep_default_na=False)
    frame["image_path"] = [str(tmp_path / "gone" / Path(x).name) for x in frame["image_path"]]
    moved = tmp_path / "moved.csv"
    frame.to_csv(moved, index=False)
    evaluate_kw(
        test=moved,
        out_dir=tmp_path / "moved",
        val=gated_eval["val"],
        ood_gate="energy",
        target_risk=0.5,
        n_bootstrap=20,
    )
    html = (tmp_path / "moved" / "report.html").read_text()
    assert "No example images: none of the" in html and "data:image/jpeg" not in html
