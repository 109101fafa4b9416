"""The one model object: `Predictor.from_path` of a `skinclf run` output folder, and the user's
path on it (predict, export, export --onnx, load, serve) abstaining exactly as OUT/eval measured;
packages refused in one sentence when a file is broken; the default policy that answers.

One `skinclf run --sample` (a small generated sample, the default `--target-risk auto`) is shared
by the module (read-only: copy before changing anything).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import skinclf
from skinclf.cli import app
from skinclf.errors import DataError
from skinclf.pipeline import SampleData
from skinclf.predictor import Predictor, model_kind

pytestmark = pytest.mark.slow

SAMPLE = SampleData(n=16, size=32, ood_n=6, seed=0)
SETTINGS = [
    "data.image_size=32",
    "transfer.epochs=8",
    "train.epochs=2",
    "train.batch_size=8",
    "trainer.precision=32",
]


def cli(*args: str | Path, sample: bool = False):
    with pytest.MonkeyPatch.context() as mp:
        if sample:
            mp.setattr("skinclf.pipeline.SampleData", lambda: SAMPLE)
        return CliRunner().invoke(app, [*map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of `skinclf run --sample` with the default policy settings (read-only)."""
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("job") / "out"
    cache = tmp_path_factory.mktemp("job-cache")
    args = ["run", "--sample", "--out", out, "--cache-dir", cache, "--bootstrap", "50"]
    result = cli(*args, "--no-progress", *SETTINGS, sample=True)
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def stage_job(job: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `job` whose policy gates on a backbone stage (`mahalanobis_block1`, given
    rather than chosen), fitted on its own eval files as `skinclf run` fits a policy: what the
    ONNX and broken-package tests need, whichever gate the sample's own choice picks."""
    from tests.evaluate_kw import evaluate_kw

    out = Path(shutil.copytree(job, tmp_path_factory.mktemp("stage") / "out"))
    ev, pad = out / "eval", out / "eval" / "pad-ufes-20.csv"
    evaluate_kw(
        test=ev / "test.csv", out_dir=ev, val=ev / "val.csv", calib=ev / "calib.csv", ood=[pad],
        ood_gate="mahalanobis_block1", gate_stats=out / "run" / "feature_stats.npz",
        target_risk="auto", n_bootstrap=20, set_names={pad: "pad-ufes-20"}, examples=False,
    )  # fmt: skip
    return out


def decisions(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "eval" / "decisions" / f"{name}.csv", keep_default_na=False)


def test_a_run_output_folder_loads_as_one_model_with_its_policy(job: Path) -> None:
    assert model_kind(job) == "job" and model_kind(job / "run") == "run"
    model = skinclf.load(job)
    assert isinstance(model, Predictor)
    assert model.policy_path == job / "eval" / "selective.json"
    assert model.policy is not None and model.policy_note == ""
    assert [m.path for m in model.members] == [job / "run"]
    # a plain run folder that was never evaluated has no policy and says so
    assert Predictor.from_path(job / "run").policy is None
    assert "never abstains" in Predictor.from_path(job / "run").policy_note


def test_the_default_policy_answers_and_states_its_target(job: Path) -> None:
    from skinclf.contracts.selective import load_selective
    from skinclf.policy.sgr import AUTO_MIN_COVERAGE, RISK_GRID

    metrics = json.loads((job / "eval" / "metrics.json").read_text())
    choice = metrics["settings"]["target_risk_choice"]
    assert choice["requested"] == "auto" and choice["chosen"] == metrics["settings"]["target_risk"]
    assert choice["delta_per_risk"] == pytest.approx(choice["delta"] / len(RISK_GRID))
    sel = load_selective(job / "eval" / "selective.json")
    assert sel.threshold is not None and "auto" in sel.note  # it answers, and says how
    assert metrics["policy"]["target_risk"] == sel.target_risk in RISK_GRID
    if sel.confidence_gate == "sgr":  # a certified risk: at least 70 % of the kept images
        assert sel.calib_coverage >= AUTO_MIN_COVERAGE and sel.bound < sel.target_risk
    else:  # too few calibration images to certify any risk: a 70 % coverage gate, said so
        assert sel.confidence_gate == "coverage" and sel.target_coverage == AUTO_MIN_COVERAGE
        assert "no risk guarantee" in sel.note
    # the whole policy answers on most calibration images (the gate keeps 95 % of them)
    calib = decisions_of(job, "calib")
    assert (calib["abstain_reason"] == "").mean() >= 0.95 * AUTO_MIN_COVERAGE - 0.1


def decisions_of(job: Path, name: str) -> pd.DataFrame:
    """The policy's decisions on OUT/eval/NAME.csv, through the Predictor's own policy."""
    from skinclf.contracts.predictions import read_predictions
    from skinclf.contracts.scores import compute_score
    from skinclf.contracts.selective import apply_policy

    model = skinclf.load(job)
    p = read_predictions(job / "eval" / f"{name}.csv")
    values = {}
    for component in model.policy.gate.components:
        values[component] = (
            p.conf[component]
            if component in p.conf
            else compute_score(component, p.logits, model.policy.temperature)
        )
    _, abstain, reason = apply_policy(model.policy, p.logits, values)
    return pd.DataFrame({"image_id": p.image_ids, "abstain": abstain, "abstain_reason": reason})


def test_predict_of_the_output_folder_abstains_as_its_evaluation(job: Path, tmp_path) -> None:
    out = tmp_path / "pad.csv"
    data = job / "data" / "pad-ufes-20"
    result = cli("predict", job, "--data", data, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    mine = pd.read_csv(out, keep_default_na=False).set_index("image_id")
    theirs = decisions(job, "pad-ufes-20").set_index("image_id")
    assert mine["abstain"].astype(bool).to_dict() == theirs["abstain"].astype(bool).to_dict()
    assert mine["abstain_reason"].to_dict() == theirs["abstain_reason"].to_dict()


def test_export_of_the_output_folder_and_its_onnx_graph_abstain_alike(stage_job: Path, tmp_path):
    pytest.importorskip("onnxruntime")
    job = stage_job
    package = tmp_path / "model"
    result = cli("export", job, "--out", package, "--onnx")
    assert result.exit_code == 0, result.output
    assert "selective classifier" in result.output and "warning" not in result.output
    manifest = json.loads((package / "skinclf-model.json").read_text())
    assert "stages" in manifest["onnx"]["outputs"]
    torch_model = skinclf.load(package)
    onnx_model = skinclf.load(package, runtime="onnx")
    images = sorted((job / "data" / "pad-ufes-20" / "images").glob("*.png"))
    images += sorted((job / "data" / "ham10000").rglob("*.jpg"))[:40]
    a, b = torch_model.predict(images), onnx_model.predict(images)
    assert torch_model.stages, "the gate reads no stage: this checks nothing"
    gate = torch_model.policy.gate
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True))
              if x["abstain_reason"] != y["abstain_reason"]]  # fmt: skip
    for i in differ:  # only an image on the gate's threshold (a calibration image's score) may
        gap = abs(a[i]["scores"][gate.score] - gate.threshold)  # flip, by float error alone
        assert gap <= 1e-4 * max(1.0, abs(gate.threshold)), (i, gap)
    assert len(differ) <= 1
    assert 0 < sum(r["abstain"] for r in a) < len(a)
    pa = np.array([list(r["probabilities"].values()) for r in a])
    pb = np.array([list(r["probabilities"].values()) for r in b])
    np.testing.assert_allclose(pa, pb, atol=1e-4)
    # the package abstains as OUT/eval measured
    by_name = {Path(p).name: r["abstain_reason"] for p, r in zip(images, a, strict=True)}
    theirs = decisions(job, "pad-ufes-20")
    for image_id, reason in zip(theirs["image_id"], theirs["abstain_reason"], strict=True):
        assert by_name[Path(image_id).name] == reason


def test_a_model_without_a_policy_says_so_at_export_and_in_its_answers(job: Path, tmp_path):
    package = tmp_path / "bare"
    result = cli("export", job / "run", "--out", package)
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "never abstains" in result.output
    model = skinclf.load(package)
    rows = model.predict(sorted((job / "data" / "pad-ufes-20" / "images").glob("*.png"))[:3])
    assert all(not r["abstain"] and "never abstains" in r["message"] for r in rows)


def test_the_server_says_when_its_model_cannot_abstain(job: Path, tmp_path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from skinclf.serve.app import create_app

    for model, note in ((skinclf.load(job), ""), (Predictor.from_path(job / "run"), "never")):
        with TestClient(create_app(model=model)) as client:
            health = client.get("/health").json()
            assert (note in health["policy_note"]) if note else health["policy_note"] == ""
            image = next((job / "data" / "pad-ufes-20" / "images").glob("*.png")).read_bytes()
            body = client.post("/predict", files={"files": ("a.png", image)}).json()
            assert body["policy_note"] == health["policy_note"]


def _package(job: Path, tmp_path: Path) -> Path:
    package = tmp_path / "model"
    assert cli("export", job, "--out", package).exit_code == 0
    return package


def test_broken_packages_are_refused_when_they_load_in_one_sentence(stage_job: Path, tmp_path):
    package = _package(stage_job, tmp_path)  # its gate reads feature_stats.npz
    cases = {}
    bad = Path(shutil.copytree(package, tmp_path / "threshold"))
    sel = json.loads((bad / "selective.json").read_text())
    sel["threshold"] = "abc"
    (bad / "selective.json").write_text(json.dumps(sel))
    cases[bad] = "threshold must be a number"
    bad = Path(shutil.copytree(package, tmp_path / "stats"))
    stats = bad / "feature_stats.npz"
    stats.write_bytes(stats.read_bytes()[: stats.stat().st_size // 2])
    cases[bad] = "cannot read feature statistics"
    bad = Path(shutil.copytree(package, tmp_path / "member"))
    manifest = json.loads((bad / "skinclf-model.json").read_text())
    manifest["members"] = ["../other/members/0/classifier.ckpt"]
    (bad / "skinclf-model.json").write_text(json.dumps(manifest))
    cases[bad] = "outside the package folder"
    bad = Path(shutil.copytree(package, tmp_path / "tta"))
    manifest = json.loads((bad / "skinclf-model.json").read_text())
    manifest["inference"]["tta"] = "d8"
    (bad / "skinclf-model.json").write_text(json.dumps(manifest))
    cases[bad] = "inference.tta"
    for folder, words in cases.items():
        with pytest.raises(DataError, match=words):
            skinclf.load(folder)
    # the server refuses such a package at start-up, in one sentence
    folder = tmp_path / "threshold"
    cmd = [sys.executable, "-m", "skinclf", "serve", str(folder), "--port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "threshold must be a number" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_run_output_folder_whose_training_is_unfinished_names_the_command(job, tmp_path):
    out = Path(shutil.copytree(job, tmp_path / "out", ignore=shutil.ignore_patterns("data")))
    (out / "run" / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(DataError, match="run the same `skinclf run` command again"):
        Predictor.from_path(out)


def test_calibrate_gives_a_run_of_skinclf_train_the_policy_predict_applies(
    trained_run: Path, train_cache: Path, tmp_path: Path
) -> None:
    run = Path(
        shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("last*"))
    )
    assert Predictor.from_path(run).policy is None  # trained, never calibrated
    result = cli("calibrate", run, "--cache-dir", train_cache, "--bootstrap", "20", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "policy: target risk (auto)" in result.output
    for name in ("selective.json", "metrics.json", "report.html", "val.csv", "test.csv"):
        assert (run / "eval" / name).is_file(), name
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["policy"]["choice_mode"] == "shifted"  # chosen on the corrupted val images
    model = skinclf.load(run)
    assert model.policy is not None and model.policy_path == run / "eval" / "selective.json"
    # predict RUN now abstains on the test images exactly as the evaluation measured
    out = tmp_path / "test.csv"
    args = ["predict", run, "--split", "test", "--out", out, "--cache-dir", train_cache]
    assert cli(*args, "--no-progress").exit_code == 0
    mine = pd.read_csv(out, keep_default_na=False)
    theirs = pd.read_csv(run / "eval" / "decisions" / "test.csv", keep_default_na=False)
    assert mine["abstain_reason"].tolist() == theirs["abstain_reason"].tolist()
    # a folder that is not a `skinclf train` run is refused in one sentence
    with pytest.raises(DataError, match="is not a model"):
        cli("calibrate", tmp_path)
