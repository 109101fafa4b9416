"""benchmarks/compare_predictions.py: two models on the same images, and with --ood the OOD
detection of each model's maximum softmax probability."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import write_predictions
from skinclf.evaluate.ood import detection_auroc

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _write(path: Path, logits: np.ndarray, labels: list[str]) -> None:
    n = len(logits)
    ids = [f"img_{i}" for i in range(n)]
    write_predictions(path, ids, ["folder"] * n, labels, np.zeros(n, bool), logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _msp(logits: np.ndarray) -> np.ndarray:
    return _softmax(logits).max(axis=1)


def test_compare_with_ood_sets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(70) % 7
    labels = [CLASSES[i] for i in y]
    confident = rng.normal(size=(70, 7)) + 4.0 * np.eye(7)[y]  # a: right and sure
    unsure = rng.normal(size=(70, 7))  # b: guessing
    ood_a, ood_b = rng.normal(size=(30, 7)), rng.normal(size=(30, 7)) + 4.0 * np.eye(7)[0]
    files = {}
    for name, logits, lab in [
        ("a", confident, labels), ("b", unsure, labels),
        ("oa", ood_a, [CLASSES[0]] * 30), ("ob", ood_b, [CLASSES[0]] * 30),
    ]:  # fmt: skip
        files[name] = tmp_path / f"{name}.csv"
        _write(files[name], logits, lab)
    out = tmp_path / "cmp.json"
    cmd = [sys.executable, str(BENCH / "compare_predictions.py"), str(files["a"]), str(files["b"]),
           "--out", str(out), "--ood", str(files["oa"]), str(files["ob"]),
           "--resamples", "300"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=BENCH)
    d = json.loads(out.read_text())
    assert d["a"]["balanced_accuracy"] > 0.9 > d["b"]["balanced_accuracy"]
    assert d["paired_bootstrap_balanced_accuracy"]["p_a_greater"] > 0.99
    assert d["paired_bootstrap_balanced_accuracy"]["n_resamples"] == 300
    a_ood, b_ood = d["a"]["ood_msp"], d["b"]["ood_msp"]
    assert a_ood["n"] == 30 and a_ood["auroc"] == pytest.approx(
        detection_auroc(_msp(confident), _msp(ood_a))
    )
    assert a_ood["auroc"] > 0.9 and b_ood["auroc"] < 0.2  # b is surer on the OOD images


def test_average_predictions_means_probabilities_image_by_image(tmp_path: Path) -> None:
    """Rows matched by image id (the second file is in reverse order); differing sizes refused."""
    from skinclf.contracts.predictions import read_predictions
    from skinclf.evaluate.offsets import write_offsets

    rng = np.random.default_rng(1)
    y = np.arange(14) % 7
    labels = [CLASSES[i] for i in y]
    a, b = rng.normal(size=(14, 7)), rng.normal(size=(14, 7))
    _write(tmp_path / "a.csv", a, labels)
    n = len(b)
    write_predictions(tmp_path / "b.csv", [f"img_{i}" for i in range(n)][::-1], ["folder"] * n,
                      labels[::-1], np.zeros(n, bool), b[::-1])  # fmt: skip
    cmd = [sys.executable, str(BENCH / "average_predictions.py"), str(tmp_path / "a.csv"),
           str(tmp_path / "b.csv"), "--out", str(tmp_path / "mean.csv")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=BENCH)
    mean = read_predictions(tmp_path / "mean.csv")
    assert list(mean.image_ids) == [f"img_{i}" for i in range(14)] and list(mean.y) == list(y)
    assert np.allclose(mean.probs, (_softmax(a) + _softmax(b)) / 2, atol=1e-6)
    offsets = np.linspace(-1.0, 1.0, 7)
    write_offsets(tmp_path / "offsets.json", offsets, "test", 14)
    subprocess.run([*cmd[:-2], "--out", str(tmp_path / "shifted.csv"), "--offsets",
                    str(tmp_path / "offsets.json")], check=True, cwd=BENCH)  # fmt: skip
    shifted = read_predictions(tmp_path / "shifted.csv")
    expected = _softmax(np.log((_softmax(a) + _softmax(b)) / 2) + offsets)
    assert np.allclose(shifted.probs, expected, atol=1e-6)
    assert np.allclose(shifted.conf["ensemble"], expected.max(axis=1), atol=1e-6)
    _write(tmp_path / "short.csv", a[:7], labels[:7])
    cmd[3] = str(tmp_path / "short.csv")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH)
    assert proc.returncode != 0 and "different numbers of images" in proc.stderr
