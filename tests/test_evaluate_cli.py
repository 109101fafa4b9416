"""`skinclf evaluate` end to end on generated predictions files, and its error messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.evaluate_kw import evaluate_kw

from skinclf.classes import CLASSES
from skinclf.cli import main
from skinclf.contracts.predictions import ImageRows, read_predictions, write_predictions
from skinclf.contracts.selective import apply_selective, load_selective

PRIOR = np.array([183, 264, 583, 60, 491, 4323, 80]) / 5984
PAD_PRIOR = np.array([34, 70, 39, 0, 16, 51, 0]) / 210


def _fake(path: Path, n: int, seed: int, strength: float = 3.0, prior=PRIOR, scc: int = 0) -> Path:
    """Over-confident noisy logits whose arg-max is right about 75 % of the time."""
    rng = np.random.default_rng(seed)
    y = rng.choice(7, size=n, p=prior)
    logits = rng.normal(0, 1.5, (n, 7)) + 0.7 * np.log(PRIOR)
    logits[np.arange(n), y] += strength * rng.uniform(0.2, 1.5, n)
    labels = [CLASSES[i] for i in y]
    semantic = [False] * n
    if scc:
        logits = np.vstack([logits, rng.normal(0, 1.5, (scc, 7)) + np.log(PRIOR)])
        labels += [""] * scc
        semantic += [True] * scc
    logits *= 1.6
    ids = [f"{path.stem}_{i}" for i in range(len(labels))]
    conf = {"mc_dropout": logits.max(1) + rng.normal(0, 0.3, len(labels))}
    dataset = "pad-ufes-20" if scc else "ham10000"
    return write_predictions(path, ImageRows(ids, dataset, labels, semantic), logits, conf=conf)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("preds")
    return {
        "val": _fake(d / "val.csv", 500, 1),
        "test": _fake(d / "test.csv", 500, 2),
        "calib": _fake(d / "calib.csv", 500, 3),
        "ood": _fake(d / "pad.csv", 120, 4, strength=1.5, prior=PAD_PRIOR, scc=7),
    }


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["skinclf", "evaluate", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_full_evaluation(files, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "eval"
    args = ["--test", str(files["test"]), "--val", str(files["val"]), "--calib"]
    args += [str(files["calib"]), "--ood", str(files["ood"]), "--out", str(out)]
    assert _run(monkeypatch, *args, "--bootstrap", "50") == 0
    assert "balanced accuracy" in capsys.readouterr().out

    m = json.loads((out / "metrics.json").read_text())
    t = m["test"]
    assert t["n"] == 500
    lo, hi = t["balanced_accuracy_ci95"]
    assert lo <= t["balanced_accuracy"] <= hi
    assert set(t["recall"]) == set(CLASSES)
    for key in ("accuracy", "macro_f1", "nll", "brier", "ece", "baselines"):
        assert key in t
    assert t["baselines"]["majority"]["class"] == "nv"
    expected_scores = {"msp", "msp_ts", "max_logit", "margin", "neg_entropy", "doctor", "energy"}
    assert set(t["selective"]) == expected_scores | {"mc_dropout"}
    msp = t["selective"]["msp"]
    for key in ("aurc", "augrc", "aurc_balanced", "augrc_balanced", "e_aurc", "failure_auroc"):
        assert 0 <= msp[key] <= 1
    assert set(msp["balanced_accuracy_at_coverage"]) == {"1.0", "0.9", "0.8", "0.7", "0.5"}
    assert msp["balanced_accuracy_at_coverage"]["1.0"] == pytest.approx(t["balanced_accuracy"])

    cal = m["calibration"]
    assert cal["temperature"] > 1.0  # the fake model is over-confident
    assert cal["test"]["ece_after"] < cal["test"]["ece_before"]

    g = m["sgr"]
    assert g["fitted_on"] == "calib" and g["note"] == ""
    # the default target risk is auto: the one SGR certified, stated in the settings
    assert g["target_risk"] == m["settings"]["target_risk"] != "auto"
    assert g["solution_exists"] and g["calib"]["bound"] < g["target_risk"]
    assert 0 < g["test"]["coverage"] < 1

    pad = m["ood"]["pad-ufes-20"]
    assert (pad["n"], pad["n_mapped"], pad["n_semantic_ood"]) == (127, 120, 7)
    assert set(pad["detection"]) == set(t["selective"])
    assert 0.5 < pad["detection"]["msp"]["auroc"] <= 1  # OOD is less confident
    assert pad["recall"]["df"] is None  # df is absent from the mapped classes
    assert 0 <= pad["semantic_ood"]["abstention_rate"] <= 1
    assert "sgr" in pad and "selective" in pad

    # selective.json reproduces the test coverage through apply_selective
    sel = load_selective(out / "selective.json")
    assert sel.score == g["score"] and sel.threshold == g["threshold"]
    test = read_predictions(files["test"])
    _, abstain = apply_selective(sel, test.logits)
    assert 1 - abstain.mean() == pytest.approx(g["test"]["coverage"])

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # 5 figures, all embedded
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for heading in ("Baselines", "Calibration", "SGR", "OOD detection", "Confidence histograms"):
        assert heading in html


def test_only_test_file(files, tmp_path: Path) -> None:
    res = evaluate_kw(files["test"], tmp_path / "e", n_bootstrap=20)
    assert res.selective_path is None and not (tmp_path / "e" / "selective.json").exists()
    assert "sgr" not in res.metrics and "calibration" not in res.metrics
    assert "msp_ts" not in res.metrics["test"]["selective"]
    assert any("No --val" in note for note in res.metrics["notes"])
    assert (tmp_path / "e" / "report.html").is_file()


def test_val_only_fits_sgr_on_val_and_says_so(files, tmp_path: Path) -> None:
    res = evaluate_kw(
        files["test"],
        tmp_path / "e",
        val=files["val"],
        scores=["msp", "msp_ts"],
        n_bootstrap=20,
    )
    assert res.metrics["sgr"]["fitted_on"] == "val"
    assert "also chose the checkpoint" in res.metrics["sgr"]["note"]
    assert "also chose the checkpoint" in (tmp_path / "e" / "report.html").read_text()
    assert set(res.metrics["test"]["selective"]) == {"msp", "msp_ts"}
    assert res.selective.score in {"msp", "msp_ts"}
    stored = load_selective(res.selective_path)
    assert stored.fitted_on == "val"
    assert stored.temperature == pytest.approx(res.metrics["calibration"]["temperature"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-risk", "0"], "target risk"),
        (["--target-risk", "1.5"], "target risk"),
        (["--delta", "1"], "delta"),
        (["--coverages", "1,0.9,1.2"], "coverage"),
        (["--coverages", "0,0.5"], "coverage"),
        (["--coverages", "a"], "coverage"),
        (["--scores", "msp,nonsense"], "nonsense"),
        (["--scores", "msp_ts"], "needs --val"),
    ],
)
def test_bad_options_give_one_clear_error(
    files, tmp_path: Path, monkeypatch, capsys, args, message
) -> None:
    code = _run(monkeypatch, "--test", str(files["test"]), "--out", str(tmp_path / "e"), *args)
    err = capsys.readouterr().err
    assert code == 1
    assert "error:" in err and message in err and "Traceback" not in err


def test_bad_predictions_file_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,label\nx,nv\n")
    code = _run(monkeypatch, "--test", str(bad), "--out", str(tmp_path / "e"))
    err = capsys.readouterr().err
    assert code == 1 and str(bad.name) in err and "missing column" in err


def test_unlabelled_ood_set_gets_detection_and_coverage_only(files, tmp_path: Path) -> None:
    p = read_predictions(files["ood"])
    unlabelled = write_predictions(
        tmp_path / "images.csv",
        ImageRows(p.image_ids.tolist(), "images", [""] * p.n, np.zeros(p.n, bool)),
        p.logits,
    )
    res = evaluate_kw(
        files["test"], tmp_path / "e", val=files["val"], ood=[unlabelled], n_bootstrap=20
    )
    entry = res.metrics["ood"]["images"]
    assert entry["n_mapped"] == 0 and "accuracy" not in entry and "sgr" not in entry
    assert 0.5 < entry["detection"]["msp"]["auroc"] <= 1
    _, abstain = apply_selective(res.selective, p.logits)  # the stored score and threshold
    assert entry["coverage_at_threshold"] == pytest.approx(1 - abstain.mean())
    assert "images (unlabelled)" in res.report_path.read_text()


def test_target_risk_auto_is_the_lowest_grid_risk_sgr_certifies_at_70_percent(files, tmp_path):
    from skinclf.policy.sgr import RISK_GRID, sgr

    out = tmp_path / "auto"
    result = evaluate_kw(
        test=files["test"], out_dir=out, val=files["val"], calib=files["calib"],
        target_risk="auto", n_bootstrap=20,
    )  # fmt: skip
    choice = result.metrics["settings"]["target_risk_choice"]
    sel = load_selective(out / "selective.json")
    calib = read_predictions(files["calib"])
    conf = apply_selective(sel, calib.logits)[0]
    wrong = (calib.pred != calib.y).astype(float)
    each = 0.05 / len(RISK_GRID)
    coverages = {r: sgr(conf, wrong, r, each) for r in RISK_GRID}
    expected = min(r for r, f in coverages.items() if f.solution_exists and f.coverage >= 0.7)
    assert choice["chosen"] == expected == sel.target_risk and choice["reached"]
    assert sel.delta == pytest.approx(each) and sel.threshold is not None
    assert sel.calib_coverage >= 0.7 and sel.bound < expected
    # a lower grid risk is not reached at 70 % (else it would have been chosen)
    lower = [r for r in RISK_GRID if r < expected]
    assert all(coverages[r].coverage < 0.7 or not coverages[r].solution_exists for r in lower)
    assert any("--target-risk auto chose" in n for n in result.metrics["notes"])


def test_target_risk_auto_without_any_certified_risk_keeps_70_percent(tmp_path: Path) -> None:
    """A few dozen calibration images, half of them wrong: SGR certifies no risk of the grid,
    so auto stores a confidence gate at 70 % coverage (said to carry no guarantee), not a
    policy that abstains on every image."""
    from skinclf.pipeline.summary import key_numbers, policy_warning

    rng = np.random.default_rng(3)
    n = 28
    y = np.arange(n) % 7
    logits = rng.normal(0, 1, (n, 7))
    logits[np.arange(n), y] += 1.5 * (np.arange(n) % 2)  # every other image right
    ids, labels = [f"i{i}" for i in range(n)], [CLASSES[i] for i in y]
    files = {
        name: write_predictions(
            tmp_path / f"{name}.csv", ImageRows(ids, "ham10000", labels, [False] * n), logits
        )
        for name in ("val", "calib", "test")
    }
    result = evaluate_kw(
        test=files["test"], out_dir=tmp_path / "e", val=files["val"], calib=files["calib"],
        target_risk="auto", n_bootstrap=20,
    )  # fmt: skip
    sel = load_selective(tmp_path / "e" / "selective.json")
    assert not result.metrics["settings"]["target_risk_choice"]["certified"]
    assert sel.confidence_gate == "coverage" and sel.target_coverage == 0.7
    assert sel.threshold is not None and sel.calib_coverage >= 0.7
    assert sel.calib_risk <= sel.bound < 1  # the stated risk: its binomial upper bound
    abstain = apply_selective(sel, read_predictions(files["calib"]).logits)[1]
    assert 0.2 < abstain.mean() <= 0.3
    assert any("keeps 70% of them instead, with no risk guarantee" in n
               for n in result.metrics["notes"])  # fmt: skip
    assert policy_warning(result.metrics) == ""
    rows = dict(key_numbers(result.metrics))
    assert rows["policy: coverage target, no SGR guarantee (auto)"] == f"{sel.calib_coverage:.3f}"
    assert rows["policy: stated risk (upper bound, calib coverage 0.714)"] == f"{sel.bound:.3f}"


def _temperature_case(folder: Path, val_logits, calib_logits, y) -> dict:
    n = len(y)
    ids, labels = [f"i{i}" for i in range(n)], [CLASSES[i] for i in y]
    files = {}
    for name, logits in (("val", val_logits), ("test", calib_logits), ("calib", calib_logits)):
        rows = ImageRows(ids, "ham10000", labels, [False] * n)
        files[name] = write_predictions(folder / f"{name}.csv", rows, logits)
    return evaluate_kw(
        test=files["test"], out_dir=folder / "e", val=files["val"], calib=files["calib"],
        target_risk=0.5, n_bootstrap=20,
    ).metrics  # fmt: skip


def test_a_degenerate_temperature_is_replaced_by_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    noise = rng.normal(0, 1, (300, 7))
    # every label the least likely class: the NLL falls as T grows, to the upper bound (100)
    m = _temperature_case(tmp_path, noise, noise, noise.argmin(axis=1))
    assert m["calibration"]["temperature"] == 1.0
    assert any("replaced by 1.0: within 1.5x of its search bound" in n for n in m["notes"])
    # validation all right, calibration often wrong: a tiny T that calibration pays for
    right = noise.copy()
    right[np.arange(300), y] += 6.0
    wrong = noise.copy()
    wrong[np.arange(300), (y + 1) % 7] += 3.0 * (np.arange(300) % 3 == 0)
    wrong[np.arange(300), y] += 2.0
    (tmp_path / "b").mkdir()
    m = _temperature_case(tmp_path / "b", right, wrong, y)
    assert m["calibration"]["temperature"] == 1.0
    assert any("raises the calibration NLL above that of T = 1" in n for n in m["notes"])
    # a sound fit is kept
    (tmp_path / "c").mkdir()
    m = _temperature_case(tmp_path / "c", wrong, wrong, y)
    assert m["calibration"]["temperature"] != 1.0
    assert not any("temperature" in n for n in m["notes"])


def test_a_policy_that_abstains_on_everything_is_one_warning_line(
    files, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "never"
    args = ["--test", str(files["test"]), "--calib", str(files["calib"]), "--out", str(out)]
    assert _run(monkeypatch, *args, "--target-risk", "0.001", "--bootstrap", "20") == 0
    printed = capsys.readouterr().out
    assert "abstains on every image" in printed and "--target-risk auto" in printed
    assert _run(monkeypatch, *args, "--target-risk", "nope") == 1
    assert "neither auto nor a number" in capsys.readouterr().err


def test_a_coverage_gate_states_the_risk_bound_of_what_it_accepts(tmp_path: Path) -> None:
    """--confidence-gate coverage: the threshold keeps the target share of the calibration
    images, and the policy states the binomial upper bound of their error (1 - delta)."""
    from skinclf.policy.gates import fit_gated_policy
    from skinclf.policy.settings import PolicySettings
    from skinclf.policy.sgr import binomial_upper_bound

    rng = np.random.default_rng(5)
    n = 400
    y = np.arange(n) % 7
    logits = rng.normal(0, 1, (n, 7))
    logits[np.arange(n), y] += 2.0
    ids, labels = [f"i{i}" for i in range(n)], [CLASSES[i] for i in y]
    rows = ImageRows(ids, "ham10000", labels, [False] * n)
    p = read_predictions(write_predictions(tmp_path / "calib.csv", rows, logits))
    settings = PolicySettings(target_risk=0.2, confidence_gate="coverage", target_coverage=0.8)
    policy = fit_gated_policy(p, "calib", "msp", None, settings)
    conf = p.probs.max(axis=1)
    keep = conf >= policy.threshold
    wrong = p.pred != p.y
    assert policy.calib_coverage == pytest.approx(keep.mean()) and keep.mean() >= 0.8
    assert policy.bound == pytest.approx(
        binomial_upper_bound(int(wrong[keep].sum()), int(keep.sum()), 0.05)
    )
    assert policy.calib_risk < policy.bound < 1
