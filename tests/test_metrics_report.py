"""`MetricsReport`, metrics.json typed: the very same text back, NaN included, and one clear
error for a file that is missing, damaged or not an evaluation's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.evaluate_kw import evaluate_kw

from skinclf.classes import CLASSES
from skinclf.contracts.metrics_report import (
    MetricsReport,
    SetMetrics,
    Settings,
    read_metrics,
)
from skinclf.contracts.predictions import ImageRows, write_predictions
from skinclf.errors import DataError

# metrics.json of an earlier skinclf (policy format 2): every section but `external`
OLD = Path(__file__).parent / "fixtures" / "policy_format2" / "eval" / "metrics.json"


def _text(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def test_a_written_metrics_json_serialises_to_the_same_text() -> None:
    text = OLD.read_text()
    report = MetricsReport.model_validate(json.loads(text))
    assert _text(report.model_dump()) == report.to_json() == text
    assert read_metrics(OLD).to_json() == text


def _fake(path: Path, n: int, seed: int, dataset: str = "ham10000", scc: int = 0) -> Path:
    """Noisy logits right about 3 times in 4, `scc` semantic OOD rows, a sex column."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1.5, (n + scc, len(CLASSES)))
    logits[np.arange(n), y] += 3.0 * rng.uniform(0.2, 1.5, n)
    labels = [CLASSES[i] for i in y] + [""] * scc
    meta = {"sex": rng.choice(["female", "male"], n + scc).tolist()}
    ids = [f"{path.stem}_{i}" for i in range(n + scc)]
    rows = ImageRows(ids, dataset, labels, [False] * n + [True] * scc, meta=meta)
    return write_predictions(path, rows, logits)


def test_every_section_evaluate_writes_reads_back_as_the_same_text(tmp_path: Path) -> None:
    """SGR, an OOD and an external set, a gated policy with subgroups: `result.report` is
    metrics.json, and the file read back serialises to the very same text."""
    res = evaluate_kw(
        _fake(tmp_path / "test.csv", 300, 1), tmp_path / "eval",
        val=_fake(tmp_path / "val.csv", 300, 2), calib=_fake(tmp_path / "calib.csv", 300, 3),
        ood=[_fake(tmp_path / "pad.csv", 80, 4, "pad-ufes-20", scc=6)],
        external=[_fake(tmp_path / "isic.csv", 120, 5, "isic2018")],
        ood_gate="energy", id_keep=0.9, target_risk=0.3, n_bootstrap=20, examples=False,
    )  # fmt: skip
    text = res.metrics_path.read_text()
    assert res.report.to_json() == text == read_metrics(res.metrics_path).to_json()
    assert res.metrics == json.loads(text)  # the deprecated dict
    assert list(json.loads(text)) == [
        "test", "val", "calibration", "sgr", "ood", "external", "policy", "scores", "settings",
        "notes",
    ]  # fmt: skip
    policy = res.report.policy
    assert policy is not None and policy.gate is not None and policy.gate.score == "energy"
    assert set(policy.sets) == {"test", "isic2018", "pad-ufes-20"}
    assert set(policy.sets["test"].subgroups or {}) == {"sex"}
    assert 0 < policy.fit_outcome().n <= policy.gate.n  # the calibration images it keeps
    pad = res.report.ood["pad-ufes-20"]
    assert (pad.n, pad.n_mapped, pad.n_semantic_ood) == (86, 80, 6)
    assert pad.detection_vs_external["isic2018"]["msp"].auroc is not None
    assert res.report.external["isic2018"].detection_vs_test["msp"].auroc is not None


def test_the_sections_and_the_numbers_readers_use_are_typed() -> None:
    data = json.loads(OLD.read_text())
    report = read_metrics(OLD)
    assert report.test.balanced_accuracy == data["test"]["balanced_accuracy"]
    assert report.test.balanced_accuracy_ci95 == data["test"]["balanced_accuracy_ci95"]
    assert (
        report.test.selective["msp"].balanced_accuracy_at_coverage["0.8"]
        == (data["test"]["selective"]["msp"]["balanced_accuracy_at_coverage"]["0.8"])
    )
    sgr, policy = report.sgr, report.policy
    assert sgr is not None and policy is not None and policy.gate is not None
    assert sgr.fit_outcome().bound == data["sgr"][data["sgr"]["fitted_on"]]["bound"]
    assert policy.fit_outcome().coverage == data["policy"][policy.fitted_on]["coverage"]
    assert policy.gate.score == data["policy"]["gate"]["score"]
    gated = policy.sets["test"].gated
    assert gated.coverage == data["policy"]["sets"]["test"]["gated"]["coverage"]
    name, ood = next(iter((report.ood or {}).items()))
    assert ood.n_mapped == data["ood"][name]["n_mapped"]
    assert ood.detection["msp"].auroc == data["ood"][name]["detection"]["msp"]["auroc"]
    assert report.settings.coverages == data["settings"]["coverages"]
    assert (
        report.test.baselines.majority.class_name == data["test"]["baselines"]["majority"]["class"]
    )


def test_nan_ints_and_keys_no_field_names_survive() -> None:
    data = json.loads(OLD.read_text())
    data["test"]["accuracy"] = math.nan
    data["test"]["balanced_accuracy_ci95"] = [math.nan, 1]  # an int stays an int
    data["test"]["recall"]["df"] = math.nan
    data["test"]["a_new_number"] = math.nan  # a key the schema does not know, mid-block
    data["test"] = {"first": 1, **data["test"]}
    data["sgr"] = {"note": "", **data["sgr"]}  # a block in another order than declared
    text = _text(data)
    assert "NaN" in text
    report = MetricsReport.model_validate(json.loads(text))
    assert report.to_json() == text
    assert math.isnan(report.test.accuracy) and report.test.balanced_accuracy_ci95[1] == 1
    assert isinstance(report.test.balanced_accuracy_ci95[1], int)


def test_a_key_that_was_not_given_is_not_written() -> None:
    data = json.loads(OLD.read_text())
    for key in ("val", "calibration", "sgr", "ood", "policy"):
        del data[key]
    del data["test"]["baselines"]
    text = _text(data)
    report = MetricsReport.model_validate(data)
    assert report.val is None and report.test.baselines is None and report.external is None
    assert report.to_json() == text


def test_a_report_built_in_code_has_its_keys_in_the_declared_order() -> None:
    settings = Settings(target_risk=0.1, coverages=[1.0, 0.8])
    report = MetricsReport(notes=[], settings=settings, scores=["msp"], test=SetMetrics(n=3))
    assert list(report.model_dump()) == ["test", "scores", "settings", "notes"]
    assert report.model_dump()["settings"] == {"target_risk": 0.1, "coverages": [1.0, 0.8]}


def test_save_writes_the_same_bytes_atomically(tmp_path: Path) -> None:
    report = read_metrics(OLD)
    path = report.save(tmp_path / "metrics.json")
    assert path.read_bytes() == OLD.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such metrics.json"),
        ('{"test": {"n": 3}', "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"test": {"n": 3}, "scores": [], "notes": []}', "has no settings"),
        ('{"test": {"n": "3"}, "scores": [], "settings": {}}', "has a wrong test.n"),
        (
            '{"test": {"n": 3, "accuracy": true}, "scores": [], "notes": [],'
            ' "settings": {"target_risk": 0.1, "coverages": [1]}}',
            "has a wrong test.accuracy (input should be a number)",
        ),
    ],
)
def test_a_missing_damaged_or_invalid_file_is_one_sentence_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "eval" / "metrics.json"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    with pytest.raises(DataError) as info:
        read_metrics(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text and text.endswith(".")


def test_the_cli_does_not_load_the_schema_or_numpy_on_import() -> None:
    code = (
        "import sys, skinclf.cli; "
        "print('numpy' in sys.modules, 'skinclf.contracts.metrics_report' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
