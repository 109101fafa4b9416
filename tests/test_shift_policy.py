"""The gated selective classifier end to end on generated data: predict writes feature scores,
evaluate fits the OOD gate on in-distribution data only, predict --selective applies it row for
row as evaluate did, from the statistics saved beside selective.json."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.evaluate_kw import evaluate_kw

from skinclf.contracts.predictions import read_predictions
from skinclf.errors import ConfigError
from skinclf.predict import PredictOptions, fit_feature_statistics, predict_file

SCORES = [
    "msp",
    "energy",
    "mahalanobis",
    "rel_mahalanobis",
    "knn",
    "vim",
    "mahalanobis_stages",
    "mahalanobis_block3",
]


@pytest.fixture(scope="module")
def scored_run(trained_run: Path, train_cache: Path, pad_sample: Path, tmp_path_factory) -> dict:
    """A copy of the trained run with val/test/OOD predictions carrying every gate score."""
    root = tmp_path_factory.mktemp("shift")
    run = root / "run"
    shutil.copytree(trained_run, run)
    fit_feature_statistics(run, train_cache, progress=False)
    kw = {"cache_dir": train_cache, "progress": False, "options": PredictOptions(scores=SCORES)}
    files = {}
    for split in ("val", "test"):
        files[split] = root / f"{split}.csv"
        predict_file([run], files[split], split=split, **kw)
    files["ood"] = root / "pad.csv"
    predict_file([run], files["ood"], data=pad_sample, **kw)
    return {"run": run, "root": root, **files}


def test_predict_writes_every_gate_score_and_keeps_the_statistics(scored_run: dict) -> None:
    preds = read_predictions(scored_run["test"])
    for name in SCORES:
        assert name in preds.conf and np.isfinite(preds.conf[name]).all(), name
    stats = scored_run["run"] / "feature_stats.npz"
    assert stats.is_file()
    before = stats.stat().st_mtime_ns
    predict_file(
        [scored_run["run"]],
        scored_run["root"] / "again.csv",
        split="val",
        progress=False,
        cache_dir=scored_run["root"] / "nocache",
        options=PredictOptions(scores=["mahalanobis"]),
    )
    assert stats.stat().st_mtime_ns == before  # reused: no training images needed again
    again = read_predictions(scored_run["root"] / "again.csv")
    np.testing.assert_allclose(
        again.conf["mahalanobis"], read_predictions(scored_run["val"]).conf["mahalanobis"]
    )


def _evaluate(scored_run: dict, out: Path, **kw) -> dict:
    return evaluate_kw(
        test=scored_run["test"],
        out_dir=out,
        val=scored_run["val"],
        n_bootstrap=20,
        **kw,
    ).metrics


@pytest.mark.parametrize("ood_gate", ["mahalanobis+msp", "mahalanobis_stages"])
def test_gate_fitted_without_ood_data_and_reapplied_by_predict(
    scored_run: dict, train_cache: Path, tmp_path: Path, ood_gate: str
) -> None:
    out = tmp_path / "eval"
    metrics = _evaluate(
        scored_run,
        out,
        ood_gate=ood_gate,
        id_keep=0.9,
        gate_stats=scored_run["run"] / "feature_stats.npz",
        target_risk=0.5,
    )  # no --ood: the policy is fitted on validation images alone
    sel = json.loads((out / "selective.json").read_text())
    gate = sel["ood_gate"]
    assert sel["format_version"] == 2 and gate["score"] == ood_gate
    n_val = gate["n"]
    assert np.ceil(0.9 * n_val) <= round(gate["id_kept"] * n_val) <= np.ceil(0.9 * n_val) + 1
    assert (out / "selective_stats.npz").is_file()
    assert set(metrics["policy"]["sets"]) == {"test"}

    # predict --selective reproduces evaluate's decisions row for row
    frame = predict_file(
        [scored_run["run"]],
        tmp_path / "test_sel.csv",
        split="test",
        cache_dir=train_cache,
        progress=False,
        options=PredictOptions(selective=out / "selective.json"),
    )
    decisions = pd.read_csv(out / "decisions" / "test.csv", keep_default_na=False)
    mine = frame.set_index("image_id").loc[decisions["image_id"]]
    assert mine["abstain"].tolist() == decisions["abstain"].tolist()
    reasons = mine["abstain_reason"].fillna("").tolist()
    assert reasons == decisions["abstain_reason"].tolist()
    assert set(reasons) <= {"", "unfamiliar", "uncertain"}
    assert "unfamiliar" in reasons or metrics["policy"]["sets"]["test"]["gated"]["coverage"] > 0


def test_gated_policy_metrics_on_ood_and_choice_without_ood_labels(
    scored_run: dict, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    metrics = _evaluate(
        scored_run,
        out,
        ood=[scored_run["ood"]],
        external=[scored_run["test"]],
        choose_gate=True,
        gate_stats=scored_run["run"] / "feature_stats.npz",
        target_risk=0.5,
    )
    policy = metrics["policy"]
    assert policy["gate"]["score"] in policy["choice"]
    assert "no OOD label" in policy["choice_criterion"]
    assert min(policy["choice"].values()) == policy["choice"][policy["gate"]["score"]]
    assert len(policy["sets"]) == 3  # test, the external copy of test, PAD-UFES-20
    pad = next(v for k, v in policy["sets"].items() if k.startswith("pad"))
    g = pad["gated"]
    assert 0 <= g["silent_failure_rate"] <= 1 and g["semantic_ood_abstention"] is not None
    assert (
        g["reasons"]["accepted"] + g["reasons"]["unfamiliar"] + g["reasons"]["uncertain"] == g["n"]
    )
    assert "single_score" in pad and "coverage_ci95" in g
    ext = next(iter(metrics["external"].values()))
    assert "detection_vs_test" in ext and ext["balanced_accuracy_ci95"]
    assert all(len(p.read_text().splitlines()) > 1 for p in (out / "decisions").glob("*.csv"))


def test_feature_gate_needs_its_statistics(scored_run: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--gate-stats"):
        _evaluate(scored_run, tmp_path / "e", ood_gate="knn")
    with pytest.raises(ConfigError, match="needs score"):
        evaluate_kw(
            test=scored_run["test"],
            out_dir=tmp_path / "e2",
            val=scored_run["val"],
            ood_gate="no_such_score",
            n_bootstrap=5,
        )


def test_stage_gate_travels_with_the_exported_model(
    scored_run: dict, train_cache: Path, pad_sample: Path, tmp_path: Path, monkeypatch
) -> None:
    """A gate on the stages' outputs: the exported model abstains on exactly the images
    `predict --selective` abstains on, in both runtimes (the ONNX graph outputs the stages'
    pooled outputs); a graph exported without them (an older skinclf's) is refused in one
    sentence."""
    import skinclf
    from skinclf.predictor.export import export_model

    out = tmp_path / "eval"
    _evaluate(
        scored_run,
        out,
        ood_gate="mahalanobis_stages",
        id_keep=0.9,
        gate_stats=scored_run["run"] / "feature_stats.npz",
        target_risk=0.5,
    )
    model_dir = tmp_path / "model"
    onnx = importlib.util.find_spec("onnxruntime") is not None
    export_model(scored_run["run"], model_dir, selective=out / "selective.json", onnx=onnx)
    images = sorted((pad_sample / "images").glob("*.png"))[:6]
    folder = tmp_path / "images"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    ref = predict_file(
        [scored_run["run"]],
        tmp_path / "ref.csv",
        data=folder,
        cache_dir=train_cache,
        progress=False,
        options=PredictOptions(selective=out / "selective.json"),
    ).set_index("image_id")
    model = skinclf.load(model_dir)
    assert model.stages
    rows = model.predict(sorted(folder.iterdir()))
    assert [r["abstain"] for r in rows] == ref.loc[[p.name for p in sorted(folder.iterdir())]][
        "abstain"
    ].tolist()
    assert "unfamiliar" in {r["abstain_reason"] for r in rows}  # PAD-format images: gated
    if not onnx:
        pytest.skip("onnxruntime is not installed: the ONNX half is not checked")
    onnx_rows = skinclf.load(model_dir, runtime="onnx").predict(sorted(folder.iterdir()))
    assert [r["abstain_reason"] for r in onnx_rows] == [r["abstain_reason"] for r in rows]
    old_graph = tmp_path / "old-graph"
    monkeypatch.setattr("skinclf.inference.batch.stage_modules", lambda model: [])
    export_model(scored_run["run"], old_graph, selective=out / "selective.json", onnx=True)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="ONNX graph does not give"):
        skinclf.load(old_graph, runtime="onnx")
