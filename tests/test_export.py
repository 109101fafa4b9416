"""`skinclf export`: the model folder of a run (manifest, members, selective classifier, card),
its format version, a fold ensemble of two runs, and `skinclf predict MODEL_DIR` against the run.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinclf.classes import CLASSES
from skinclf.cli import main
from skinclf.contracts.selective import load_selective
from skinclf.errors import ConfigError, DataError
from skinclf.predict import PredictOptions, predict_file
from skinclf.predictor.export import export_model
from skinclf.predictor.manifest import MANIFEST_FILE, PACKAGE_FORMAT_VERSION, read_manifest

PROBS = [f"prob_{c}" for c in CLASSES]


def _manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / MANIFEST_FILE).read_text())


def _images(folder_sample: Path, dest: Path, n: int = 6) -> Path:
    dest.mkdir()
    for f in sorted(folder_sample.rglob("*.jpg"))[:n]:
        shutil.copy(f, dest / f"{f.parent.name}_{f.name}")
    return dest


def test_manifest_members_and_files(exported_model: Path, trained_run: Path) -> None:
    from skinclf.models.classifier import load_classifier

    m = _manifest(exported_model)
    # no logit offsets: format version 1, which every skinclf that reads packages reads
    assert (m["format"], m["format_version"], m["logit_offsets"]) == ("skinclf-model", 1, None)
    assert re.fullmatch(r"run-[0-9a-f]{12}", m["model_id"])
    assert m["classes"] == list(CLASSES)
    prep = m["preprocessing"]
    original = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    assert (prep["image_size"], prep["resize"]) == (original.spec.image_size, "squash")
    assert prep["normalisation"]["inside_model"] is True
    assert prep["normalisation"]["mean"] == pytest.approx(list(original.spec.mean))
    # `auto` precision: bf16 autocast on a CPU with native bf16, else fp32 (as trained)
    from skinclf.config import read_config
    from skinclf.inference.precision import resolve_precision

    cfg = read_config(trained_run / "config.yaml")
    expected = resolve_precision(cfg.trainer.precision, training=False)
    assert m["inference"] == {"precision": expected, "tta": "none", "batch_size": 64}
    assert m["members"] == ["members/0/classifier.ckpt"]
    member = load_classifier(exported_model / m["members"][0])
    assert member.spec == original.spec
    for (k, a), b in zip(member.state_dict().items(), original.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), k
    for name in ("config.yaml", "split.csv", "provenance.json"):
        assert (exported_model / "members" / "0" / name).is_file()
    prov = m["provenance"]
    assert prov["run"] == "run" and prov["exported"] and prov["data_path"]

    sel = load_selective(exported_model / m["selective"])  # the gate, pointing at the stats
    assert sel.gate is not None and sel.gate.stats_file == m["feature_stats"]
    assert (exported_model / m["feature_stats"]).is_file()


def test_model_card(exported_model: Path) -> None:
    card = json.loads((exported_model / "model_card.json").read_text())
    assert card["model_id"] == _manifest(exported_model)["model_id"]
    assert "not a diagnosis" in card["intended_use"]
    data = card["training_data"]
    assert sum(data["splits"].values()) == data["n_images"]
    assert data["licence"]["licence"].startswith("CC BY-NC")
    test = card["metrics"]["test"]  # from RUN/eval/metrics.json: with its interval
    lo, hi = test["balanced_accuracy_ci95"]
    assert lo <= test["balanced_accuracy"] <= hi
    sel = card["selective"]
    assert sel["ood"]["score"] == "mahalanobis+msp" and sel["chosen_on"] == "val"
    assert sel["target_risk"] == 0.5 and sel["files"]["val"].endswith("val.csv")
    md = (exported_model / "MODEL_CARD.md").read_text()
    for heading in ("Intended use", "Training data", "Metrics", "Selective classifier"):
        assert f"## {heading}" in md
    assert "OOD gate" in md and card["model_id"] in md


def test_format_version_is_checked(exported_model: Path, tmp_path: Path) -> None:
    import skinclf

    other = tmp_path / "future"
    other.mkdir()
    manifest = {**_manifest(exported_model), "format_version": PACKAGE_FORMAT_VERSION + 1}
    (other / MANIFEST_FILE).write_text(json.dumps(manifest))
    pattern = rf"{MANIFEST_FILE} is 'skinclf-model' format version 3, .*version 1 or 2; upgrade"
    with pytest.raises(DataError, match=pattern):
        read_manifest(other)
    with pytest.raises(DataError, match=pattern):
        skinclf.load(other)
    with pytest.raises(DataError, match=pattern):
        predict_file([other], tmp_path / "x.csv", data=tmp_path, progress=False)
    (other / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 0}))
    with pytest.raises(DataError, match="version 0, .*; export the model again"):
        read_manifest(other)


def test_predict_model_dir_is_predict_run(
    exported_model: Path, train_cache: Path, folder_sample: Path, tmp_path: Path
) -> None:
    images = _images(folder_sample, tmp_path / "images")
    run = Path(_manifest(exported_model)["provenance"]["source"])
    kw = {"data": images, "cache_dir": train_cache, "progress": False}
    mine = predict_file([exported_model], tmp_path / "model.csv", **kw)  # its own selective.json
    ref = predict_file(
        [run],
        tmp_path / "run.csv",
        options=PredictOptions(selective=run / "eval" / "selective.json"),
        **kw,
    )
    assert list(mine.columns) == list(ref.columns)
    np.testing.assert_array_equal(mine[PROBS].to_numpy(), ref[PROBS].to_numpy())
    assert mine["abstain"].tolist() == ref["abstain"].tolist()
    assert mine["abstain_reason"].fillna("").tolist() == ref["abstain_reason"].fillna("").tolist()
    assert "conf_mahalanobis" in mine  # the gate's component

    split = predict_file(
        [exported_model], tmp_path / "test.csv", split="test", **kw | {"data": None}
    )
    assert len(split) == (pd.read_csv(run / "split.csv")["split"] == "test").sum()


def _cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["skinclf", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_fold_ensemble(
    trained_run: Path,
    train_cache: Path,
    folder_sample: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    cv = tmp_path / "cv"
    for fold in ("fold_0", "fold_1"):
        shutil.copytree(trained_run, cv / fold, ignore=shutil.ignore_patterns("last*", "eval"))
    out = tmp_path / "model"
    assert _cli(monkeypatch, "export", str(cv), "--out", str(out)) == 0
    assert "2 member(s)" in capsys.readouterr().out
    m = _manifest(out)
    assert m["members"] == ["members/0/classifier.ckpt", "members/1/classifier.ckpt"]
    assert m["ensemble"] == "mean probabilities" and m["selective"] is None
    assert m["provenance"]["runs"] == ["fold_0", "fold_1"]

    images = _images(folder_sample, tmp_path / "images")
    kw = {"data": images, "cache_dir": train_cache, "progress": False}
    mine = predict_file([out], tmp_path / "model.csv", **kw)
    ref = predict_file([cv / "fold_0", cv / "fold_1"], tmp_path / "runs.csv", **kw)
    np.testing.assert_allclose(mine[PROBS].to_numpy(), ref[PROBS].to_numpy(), atol=1e-7)
    assert "conf_ensemble" in mine and "abstain" not in ref
    assert not mine["abstain"].any() and mine["abstain_reason"].isna().all()  # all ""

    assert _cli(monkeypatch, "export", str(cv), "--out", str(out)) == 0  # replaces a model


def test_export_refusals(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a model: give a run folder"):
        export_model(tmp_path, tmp_path / "m")
    (tmp_path / "cv" / "fold_0").mkdir(parents=True)
    with pytest.raises(DataError, match="fold_0 has no checkpoints/best.ckpt"):
        export_model(tmp_path / "cv", tmp_path / "m")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not an exported model folder"):
        export_model(trained_run, taken)
    with pytest.raises(DataError, match="no such selective.json"):
        export_model(trained_run, tmp_path / "m", selective=tmp_path / "none.json")
    assert not (tmp_path / "m").exists() and (taken / "notes.txt").is_file()
