"""`SelectivePolicy`: the post-hoc policy as one fitted object (fit / apply / save / load), and
`evaluate` measuring a given policy without fitting. The fixture folder was written by skinclf
before the policy object (tests/fixtures/policy_format2/make.py): its policy files must load and
decide as they did, and the same inputs must give the same metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.evaluate_kw import evaluate_kw

from skinclf.contracts.predictions import read_predictions
from skinclf.errors import ConfigError, DataError
from skinclf.policy.fit import PolicySettings, SelectivePolicy

OLD = Path(__file__).parent / "fixtures" / "policy_format2"
SETS = {"test": "test", "pad-ufes-20": "ood", "corrupted": "shifted"}  # decisions -> file


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {
            k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}/{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, sub in enumerate(value) for k, v in _flat(sub, f"{prefix}[{i}]").items()
        }
    return {prefix: value}


def _differences(a: dict, b: dict, skip: str = "/settings/files") -> list[str]:
    fa, fb = _flat(a), _flat(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key.startswith(skip):
            continue
        x, y = fa.get(key, "<missing>"), fb.get(key, "<missing>")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
        if numbers and (math.isclose(x, y, rel_tol=0, abs_tol=1e-9) or x != x and y != y):
            continue
        if x != y:
            out.append(f"{key}: {x!r} != {y!r}")
    return out


def _inputs(**kw) -> dict:
    return dict(
        test=OLD / "test.csv",
        val=OLD / "val.csv",
        calib=OLD / "calib.csv",
        ood=[OLD / "ood.csv"],
        shifted=OLD / "shifted.csv",
        n_bootstrap=20,
        examples=False,
        **kw,
    )


def _fitted() -> SelectivePolicy:
    settings = PolicySettings(target_risk="auto", choose_gate=True)
    return SelectivePolicy(settings).fit(
        read_predictions(OLD / "val.csv"),
        read_predictions(OLD / "calib.csv"),
        shifted=read_predictions(OLD / "shifted.csv"),
        gate_stats=OLD / "stats.npz",
    )


def test_a_policy_file_written_before_the_policy_object_decides_as_it_did() -> None:
    policy = SelectivePolicy.load(OLD / "eval" / "selective.json")
    assert policy.gated is not None and policy.gated.gate is not None
    assert policy.gate_stats == OLD / "eval" / "selective_stats.npz"
    for name, file in SETS.items():
        old = pd.read_csv(OLD / "eval" / "decisions" / f"{name}.csv", keep_default_na=False)
        _, abstain, reason = policy.apply(read_predictions(OLD / f"{file}.csv", False))
        assert abstain.tolist() == old["abstain"].tolist(), name
        assert reason.tolist() == old["abstain_reason"].tolist(), name
        assert 0 < abstain.sum() < len(abstain)  # a check that could fail either way


def test_the_same_inputs_fit_the_same_policy_and_metrics_as_before(tmp_path: Path) -> None:
    evaluate_kw(
        out_dir=tmp_path,
        choose_gate=True,
        gate_stats=OLD / "stats.npz",
        target_risk="auto",
        **_inputs(),
    )
    old = json.loads((OLD / "eval" / "metrics.json").read_text())
    new = json.loads((tmp_path / "metrics.json").read_text())
    assert _differences(old, new) == []
    stored = json.loads((tmp_path / "selective.json").read_text())
    assert "fit" in stored  # the record of the fit, beside the stored classifier's fields
    stored.pop("fit")
    assert stored == json.loads((OLD / "eval" / "selective.json").read_text())


def test_evaluate_measures_a_given_policy_and_fits_nothing(tmp_path: Path) -> None:
    fitted_here = evaluate_kw(
        out_dir=tmp_path / "fit",
        choose_gate=True,
        gate_stats=OLD / "stats.npz",
        target_risk="auto",
        **_inputs(),
    ).metrics
    _fitted().save(tmp_path / "policy")
    given = SelectivePolicy.load(tmp_path / "policy")
    measured = evaluate_kw(out_dir=tmp_path / "eval", policy=given, **_inputs()).metrics
    assert _differences(fitted_here, measured) == []
    assert not (tmp_path / "eval" / "selective.json").exists()  # evaluate wrote no fitted state
    assert (tmp_path / "eval" / "decisions" / "test.csv").is_file()


def test_save_and_load_keep_the_whole_fit(tmp_path: Path) -> None:
    policy = _fitted()
    path = policy.save(tmp_path)
    assert path == tmp_path / "selective.json"
    assert (tmp_path / "selective_stats.npz").read_bytes() == (OLD / "stats.npz").read_bytes()
    back = SelectivePolicy.load(path)
    assert back.settings == policy.settings
    assert back.temperature == pytest.approx(policy.temperature)
    assert back.single == policy.single and back.gated == policy.gated
    assert back.record["gate_choice"]["choice"] == policy.record["gate_choice"]["choice"]
    assert back.notes == policy.notes
    test = read_predictions(OLD / "test.csv")
    for a, b in zip(policy.apply(test), back.apply(test), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_old_policy_file_is_measured_like_the_old_evaluation(tmp_path: Path) -> None:
    policy = SelectivePolicy.load(OLD / "eval")  # a folder: its selective.json
    metrics = evaluate_kw(out_dir=tmp_path, policy=policy, **_inputs()).metrics
    old = json.loads((OLD / "eval" / "metrics.json").read_text())
    for name in SETS:
        assert metrics["policy"]["sets"][name]["gated"] == old["policy"]["sets"][name]["gated"]
    assert metrics["test"]["balanced_accuracy"] == old["test"]["balanced_accuracy"]


def test_the_policy_says_what_is_wrong_in_one_sentence(tmp_path: Path) -> None:
    val = read_predictions(OLD / "val.csv")
    with pytest.raises(ConfigError, match="not both"):
        SelectivePolicy(PolicySettings(ood_gate="knn", choose_gate=True)).fit(val)
    with pytest.raises(ConfigError, match=r"--id-keep 1.5 is not a number in \(0, 1\]"):
        SelectivePolicy(PolicySettings(ood_gate="knn", id_keep=1.5)).fit(val)
    with pytest.raises(ConfigError, match="add --choose-gate"):
        SelectivePolicy().fit(val, shifted=read_predictions(OLD / "shifted.csv"))
    with pytest.raises(DataError, match="nothing to save"):
        SelectivePolicy().fit(None).save(tmp_path)
    bad = tmp_path / "selective.json"
    data = json.loads((OLD / "eval" / "selective.json").read_text())
    bad.write_text(json.dumps({**data, "fit": {"settings": {"no_such": 1}}}))
    with pytest.raises(DataError, match="its `fit` record is malformed"):
        SelectivePolicy.load(bad)


def test_the_evaluate_command_measures_a_policy_file(tmp_path: Path, monkeypatch) -> None:
    import sys

    from skinclf.cli import main

    args = ["--test", str(OLD / "test.csv"), "--ood", str(OLD / "ood.csv"), "--out",
            str(tmp_path), "--policy", str(OLD / "eval" / "selective.json"), "--bootstrap", "20",
            "--no-examples"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["skinclf", "evaluate", *args])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    old = json.loads((OLD / "eval" / "metrics.json").read_text())
    assert metrics["policy"]["sets"]["test"]["gated"] == old["policy"]["sets"]["test"]["gated"]
    assert not (tmp_path / "selective.json").exists()
