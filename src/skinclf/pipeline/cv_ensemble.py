"""`skinclf cv-ensemble`: several `skinclf cv` results on the same folds (other backbones,
recipes, resolutions) as one model whose numbers are measured like a cv's.

Every image of the folds is still predicted only by models that did not train on it: the
members' out-of-fold probabilities are averaged image by image. The ensemble's logit offsets
are refitted on that average (with a calibration part, on the average of the members'
calibration predictions without offsets), and each set every member predicted (its
OUT/eval/NAME.csv) is averaged the same way, each member's own offsets taken off first.

OUT (a cross-validation folder, `skinclf.contracts.cv_folder`)::

    cv_members.json       the member cv folders, relative to OUT
    folds.csv             the members' folds (the same in every member)
    oof_predictions.csv   the members' out-of-fold probabilities averaged
    logit_offsets.json    refitted on the average
    eval/<set>.csv        the members' predictions of each set averaged, the offsets added
    cv_summary.json       as `skinclf cv` writes it, with the members named
    eval/                 when every member has a calibration part: metrics.json,
                          selective.json, report.html, fitted as `skinclf cv --calib` fits them

`skinclf predict OUT` predicts with every member's fold models (mean probabilities: each cv
weighs the same, as all have K folds) and adds OUT's offsets; `skinclf export OUT` packs them.
Confidence scores: the logit scores follow the averaged logits; the feature scores are the
first member's (as `skinclf predict` takes them from its first model).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf import atomic
from skinclf.classes import CLASSES
from skinclf.contracts.cv_folder import (
    OOF_FILE,
    CvFolder,
    cv_runs,
    is_cv_folder,
    member_cvs,
    same_folds,
)
from skinclf.contracts.predictions import (
    Predictions,
    read_predictions,
    save_predictions,
)
from skinclf.contracts.run_folder import FEATURE_STATS_FILE, RunOutput
from skinclf.contracts.scores import with_logits
from skinclf.errors import ConfigError, DataError
from skinclf.evaluate.crossval import out_of_fold_summary, set_summary
from skinclf.evaluate.offsets import (
    OFFSETS_FILE,
    apply_offsets,
    fit_logit_offsets,
    read_offsets,
    write_offsets,
)
from skinclf.pipeline.cv import CALIB_RAW, EVALUATION_SETS, ensemble_policy_data, ensemble_sets
from skinclf.pipeline.posthoc import evaluate_policy, fit_policy
from skinclf.pipeline.state import RunState
from skinclf.scoring.ensemble import mean_predictions


def _check_members(cvs: list[Path], out: Path) -> pd.DataFrame:
    if len(cvs) < 2:
        raise ConfigError("Give at least two cross-validation folders to average.")
    for cv in cvs:
        if not is_cv_folder(cv) or not CvFolder(cv).oof.is_file():
            raise DataError(f"{cv} is not a finished `skinclf cv` folder (no {OOF_FILE}).")
        if member_cvs(cv):
            raise DataError(f"{cv} is itself an ensemble of cvs: name its members instead.")
        if cv.resolve() == out.resolve():
            raise ConfigError(f"--out {out} is one of the members; give a new folder.")
    if out.exists() and any(out.iterdir()) and not CvFolder(out).members.is_file():
        raise ConfigError(f"{out} exists and is not a cv ensemble folder; give a new one.")
    folds = same_folds(cvs[0], cvs[1])
    for cv in cvs[2:]:
        same_folds(cvs[0], cv)
    return folds


def own_offsets(cv: Path) -> np.ndarray:
    """The offsets a cv added to its ensemble's predictions (zeros when it has none)."""
    path = cv / OFFSETS_FILE
    return read_offsets(path) if path.is_file() else np.zeros(len(CLASSES))


def without_offsets(p: Predictions, offsets: np.ndarray) -> Predictions:
    """`p` with `offsets` taken off its logits (probabilities and logit scores recomputed)."""
    return with_logits(p, apply_offsets(p.logits, -offsets))


def shared_sets(cvs: list[Path]) -> list[str]:
    """The eval/NAME.csv names every cv has (its --test, --ood and calibration sets)."""
    names = [{f.stem for f in (cv / "eval").glob("*.csv")} for cv in cvs]
    return sorted(set.intersection(*names) - {CALIB_RAW})


def _offsets(cvs: list[Path], oof: Predictions, out: Path) -> np.ndarray:
    """Offsets refitted on the calibration part (when every member has one) or out of fold."""
    raw = [cv / "eval" / f"{CALIB_RAW}.csv" for cv in cvs]
    if all(f.is_file() for f in raw):
        calib = mean_predictions([read_predictions(f) for f in raw])
        save_predictions(out / "eval" / f"{CALIB_RAW}.csv", calib)
        calib = calib.subset(calib.labelled)
        offsets = fit_logit_offsets(calib.logits, calib.y)
        write_offsets(out / OFFSETS_FILE, offsets, "calibration part", calib.n)
        return offsets
    offsets = fit_logit_offsets(oof.logits, oof.y)
    write_offsets(out / OFFSETS_FILE, offsets, "out-of-fold predictions", oof.n)
    return offsets


def ensemble_cvs(cvs: list[Path], out: Path, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Write the ensemble folder OUT of the cv folders `cvs`; returns its cv_summary.json."""
    cvs, out = [Path(cv) for cv in cvs], Path(out)
    folds = _check_members(cvs, out)
    shutil.rmtree(out / "eval", ignore_errors=True)  # a former average's (its selective.json)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    names = [Path(os.path.relpath(cv.resolve(), out.resolve())).as_posix() for cv in cvs]
    atomic.write_text(CvFolder(out).members, json.dumps({"members": names}, indent=2) + "\n")
    atomic.write_text(CvFolder(out).folds, folds.to_csv(index=False))
    oof = mean_predictions([read_predictions(CvFolder(cv).oof) for cv in cvs])
    save_predictions(CvFolder(out).oof, oof)
    offsets = _offsets(cvs, oof, out)
    fold_of = dict(zip(folds["image_id"], folds["fold"], strict=True))
    fold = np.array([fold_of[i] for i in oof.image_ids])
    summary = {
        "members": [str(cv) for cv in cvs],
        "folds": len(set(fold)),
        "settings": {"bootstrap": n_bootstrap, "seed": seed},
        "out_of_fold": out_of_fold_summary(oof.logits, oof.y, fold, n_bootstrap, seed),
        "logit_offsets": dict(zip(CLASSES, offsets.tolist(), strict=True)),
        "ensemble": {},
    }
    for name in shared_sets(cvs):
        files = [cv / "eval" / f"{name}.csv" for cv in cvs]
        members = [
            without_offsets(read_predictions(f, require_labels=False), own_offsets(cv))
            for f, cv in zip(files, cvs, strict=True)
        ]
        p = mean_predictions(members, offsets)
        save_predictions(out / "eval" / f"{name}.csv", p)
        if name not in EVALUATION_SETS and (p.y >= 0).any() and not p.semantic_ood.all():
            summary["ensemble"][name] = set_summary(p.logits, p.y, offsets, n_bootstrap, seed)
    atomic.write_text(CvFolder(out).summary, json.dumps(summary, indent=2) + "\n")
    return summary


def member_evaluation(cv: Path) -> tuple[dict, list[str], list[str]] | None:
    """The settings of a cv's policy (its calibrate step) and the names of the OOD and --test
    sets it evaluated; None when it has none (no calibration part)."""
    state, metrics = RunOutput(cv).state, RunOutput(cv).metrics
    if not state.is_file() or not metrics.is_file():
        return None
    try:
        steps = RunState.load(cv).steps
        # the policy's settings: its calibrate step's (a cv written before that step: evaluate's)
        step = steps.get("calibrate") or steps.get("evaluate")
        settings = step.parts.get("settings", {}) if step else {}
        if step is None or step.status != "done" or not settings.get("choose_gate"):
            return None  # (a cv evaluated before the gate was chosen on corrupted images)
        files = json.loads(metrics.read_text())["settings"]["files"]
        ood, tests = [Path(f).stem for f in files["ood"]], [Path(f).stem for f in files["external"]]
    except (ConfigError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"Cannot read the evaluation of {cv} from {state} and {metrics} ({exc!r}); "
            f"delete {metrics} and run its `skinclf cv` command again."
        ) from None
    return settings, ood, tests


CHOSEN_BY_USER = ("target_risk", "id_keep")  # a cv's evaluation settings its command names


def same_evaluation(cvs: list[Path], settings: list[dict]) -> None:
    """ConfigError naming the first setting of `CHOSEN_BY_USER` two members were evaluated with
    differently (the ensemble's selective classifier would silently take the first's)."""
    for key in CHOSEN_BY_USER:
        for cv, other in zip(cvs[1:], settings[1:], strict=True):
            if other.get(key) != settings[0].get(key):
                option = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{cvs[0]} and {cv} were evaluated with different {option} "
                    f"({settings[0].get(key)} and {other.get(key)}); run one's `skinclf cv` "
                    f"again with the other's {option} to fit the ensemble's selective classifier."
                )


def evaluate_cv_ensemble(
    cvs: list[Path], out: Path, n_bootstrap: int = 1000, seed: int = 0, on_step=None
) -> bool:
    """With a calibration part: the ensemble's selective classifier, fitted and evaluated as
    `skinclf cv --calib` fits its own (the members' target risk and ID keep, the same in all; the
    first member's feature statistics: the ensemble's feature scores are its first member's).
    False when a member has none."""
    evaluated = [member_evaluation(cv) for cv in cvs]
    if any(e is None for e in evaluated):
        return False
    same_evaluation(cvs, [e[0] for e in evaluated])
    settings, ood, tests = evaluated[0]
    present = shared_sets(cvs)
    stats = cv_runs(cvs[0])[0] / FEATURE_STATS_FILE  # the first model's, whose scores it has
    eval_dir = out / "eval"
    data = ensemble_policy_data(eval_dir, stats)
    fit_policy(eval_dir, data, settings["target_risk"], settings["id_keep"])
    ood, tests = [n for n in ood if n in present], [n for n in tests if n in present]
    evaluate_policy(eval_dir, ensemble_sets(eval_dir, ood, tests), n_bootstrap, seed, on_step)
    return True
