"""`skinclf compare`: two models on the same images (predictions files here; runs in
test_run.py, cvs in test_cv.py), and with --ood the OOD detection of each model's maximum
softmax probability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skinclf.classes import CLASSES
from skinclf.cli import app
from skinclf.contracts.predictions import ImageRows, write_predictions
from skinclf.errors import ConfigError, DataError
from skinclf.evaluate.ood import detection_auroc


def invoke(*args: str | Path):
    return CliRunner().invoke(app, ["compare", *map(str, args)], catch_exceptions=False)


def write_logits(path: Path, logits: np.ndarray, labels: list[str]) -> None:
    """A predictions file of `logits` (images img_0, img_1, ...), labelled `labels`."""
    n = len(logits)
    ids = [f"img_{i}" for i in range(n)]
    write_predictions(path, ImageRows(ids, ["folder"] * n, labels, np.zeros(n, bool)), logits)


def reference_softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax written out here, independent of the package's."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _msp(logits: np.ndarray) -> np.ndarray:
    return reference_softmax(logits).max(axis=1)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """a: right and sure; b: guessing; oa/ob: each one's predictions of 30 OOD images (b is
    sure of class 0 on them)."""
    rng = np.random.default_rng(0)
    y = np.arange(70) % 7
    labels = [CLASSES[i] for i in y]
    logits = {
        "a": rng.normal(size=(70, 7)) + 4.0 * np.eye(7)[y],
        "b": rng.normal(size=(70, 7)),
        "oa": rng.normal(size=(30, 7)),
        "ob": rng.normal(size=(30, 7)) + 4.0 * np.eye(7)[0],
    }
    out = {}
    for name, value in logits.items():
        out[name] = tmp_path / f"{name}.csv"
        write_logits(out[name], value, labels if len(value) == 70 else [CLASSES[0]] * 30)
    out["logits"] = logits  # type: ignore[assignment]
    return out


def test_compare_two_files_with_ood_sets(files, tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    result = invoke(files["a"], files["b"], "--out", out, "--ood", files["oa"], files["ob"],
                    "--resamples", "300")  # fmt: skip
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    assert d["a"]["balanced_accuracy"] > 0.9 > d["b"]["balanced_accuracy"]
    assert d["paired_bootstrap_balanced_accuracy"]["p_a_greater"] > 0.99
    assert d["paired_bootstrap_balanced_accuracy"]["n_resamples"] == 300
    a_ood, b_ood = d["a"]["ood_msp"], d["b"]["ood_msp"]
    logits = files["logits"]
    assert a_ood["n"] == 30 and a_ood["auroc"] == pytest.approx(
        detection_auroc(_msp(logits["a"]), _msp(logits["oa"]))
    )
    assert a_ood["auroc"] > 0.9 and b_ood["auroc"] < 0.2  # b is surer on the OOD images
    # the printed table: one row, both intervals, the difference and P(A > B)
    a_ba, lo, hi = d["a"]["balanced_accuracy"], *d["a"]["balanced_accuracy_ci95"]
    assert f"{a_ba:.3f} [{lo:.3f}, {hi:.3f}]" in result.output
    assert f"{d['paired_bootstrap_balanced_accuracy']['difference']:+.3f}" in result.output


def test_the_same_seed_gives_the_same_comparison_and_another_seed_another(files, tmp_path):
    for name, seed in (("one", 0), ("two", 0), ("three", 5)):
        assert invoke(files["a"], files["b"], "--out", tmp_path / f"{name}.json", "--seed",
                      seed, "--resamples", "200").exit_code == 0  # fmt: skip
    paired = {
        name: json.loads((tmp_path / f"{name}.json").read_text())[
            "paired_bootstrap_balanced_accuracy"]
        for name in ("one", "two", "three")
    }  # fmt: skip
    assert paired["one"] == paired["two"]
    assert paired["one"]["difference_ci95"] != paired["three"]["difference_ci95"]


def test_compare_refuses_what_it_cannot_pair(files, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "eval").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is a predictions file and .* a run folder"):
        invoke(files["a"], folder)
    with pytest.raises(DataError, match="nothing.csv does not exist"):
        invoke(files["a"], tmp_path / "nothing.csv")
    with pytest.raises(ConfigError, match="--offsets .* needs two cv folders"):
        invoke(files["a"], files["b"], "--offsets")
    with pytest.raises(ConfigError, match="--external needs two run or cv folders"):
        invoke(files["a"], files["b"], "--external", "isic")
    with pytest.raises(DataError, match="has no predictions of 'test'"):
        invoke(folder, folder)
    with pytest.raises(DataError, match="do not hold the same labelled images"):
        invoke(files["a"], files["oa"])
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        invoke(files["a"], files["b"], "--out", tmp_path)


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SKIP = {"date", "machine", "versions", "file"}  # where and when, not what was measured


def _numbers(d: object, key: str = "") -> dict:
    if isinstance(d, dict):
        return {k: v for kk, vv in d.items() if kk not in SKIP
                for k, v in _numbers(vv, f"{key}.{kk}").items()}  # fmt: skip
    if isinstance(d, list):
        return {k: v for i, vv in enumerate(d) for k, v in _numbers(vv, f"{key}[{i}]").items()}
    return {key: d}


@pytest.mark.parametrize(
    ("published", "a", "b", "options"),
    [
        ("distill_vs_default_isic.json", "tune/finetune-default/distill-oof/isic2018-test-dev.csv",
         "tune/finetune-default/baseline/isic2018-test-dev.csv", []),
        ("cv3_sog_vs_default.json", "cv/cv3-sog", "cv/cv3-default",
         ["--external", "isic2018-test-dev"]),
    ],
)  # fmt: skip
def test_compare_reproduces_a_published_comparison(published, a, b, options, tmp_path) -> None:
    """The kept predictions in benchmarks/results (a file pair, and an unfinished cv against a
    finished one) give every number of the JSON the old comparison scripts wrote."""
    if not (RESULTS / a).exists():
        pytest.skip(f"benchmarks/results/{a} is not in this checkout")
    out = tmp_path / "again.json"
    assert invoke(RESULTS / a, RESULTS / b, *options, "--out", out).exit_code == 0
    old = _numbers(json.loads((RESULTS / published).read_text()))
    new = _numbers(json.loads(out.read_text()))
    assert new.keys() == old.keys()
    for key, value in old.items():
        if isinstance(value, float):
            assert new[key] == pytest.approx(value, rel=0, abs=1e-12), key
        else:
            assert new[key] == value, key
