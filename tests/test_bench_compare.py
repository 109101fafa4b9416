"""benchmarks/average_predictions.py: predictions files of the same images averaged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from tests.test_compare import reference_softmax, write_logits

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import ImageRows, write_predictions

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_average_predictions_means_probabilities_image_by_image(tmp_path: Path) -> None:
    """Rows matched by image id (the second file is in reverse order); differing sizes refused."""
    from skinclf.contracts.predictions import read_predictions
    from skinclf.evaluate.offsets import write_offsets

    rng = np.random.default_rng(1)
    y = np.arange(14) % 7
    labels = [CLASSES[i] for i in y]
    a, b = rng.normal(size=(14, 7)), rng.normal(size=(14, 7))
    write_logits(tmp_path / "a.csv", a, labels)
    n = len(b)
    rows = ImageRows([f"img_{i}" for i in range(n)][::-1], ["folder"] * n, labels[::-1],
                     np.zeros(n, bool))  # fmt: skip
    write_predictions(tmp_path / "b.csv", rows, b[::-1])
    cmd = [sys.executable, str(BENCH / "average_predictions.py"), str(tmp_path / "a.csv"),
           str(tmp_path / "b.csv"), "--out", str(tmp_path / "mean.csv")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=BENCH)
    mean = read_predictions(tmp_path / "mean.csv")
    assert list(mean.image_ids) == [f"img_{i}" for i in range(14)] and list(mean.y) == list(y)
    assert np.allclose(mean.probs, (reference_softmax(a) + reference_softmax(b)) / 2, atol=1e-6)
    offsets = np.linspace(-1.0, 1.0, 7)
    write_offsets(tmp_path / "offsets.json", offsets, "test", 14)
    subprocess.run([*cmd[:-2], "--out", str(tmp_path / "shifted.csv"), "--offsets",
                    str(tmp_path / "offsets.json")], check=True, cwd=BENCH)  # fmt: skip
    shifted = read_predictions(tmp_path / "shifted.csv")
    averaged = (reference_softmax(a) + reference_softmax(b)) / 2
    expected = reference_softmax(np.log(averaged) + offsets)
    assert np.allclose(shifted.probs, expected, atol=1e-6)
    assert np.allclose(shifted.conf["ensemble"], expected.max(axis=1), atol=1e-6)
    write_logits(tmp_path / "short.csv", a[:7], labels[:7])
    cmd[3] = str(tmp_path / "short.csv")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH)
    assert proc.returncode != 0 and "different numbers of images" in proc.stderr
