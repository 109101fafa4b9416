"""The two post-hoc steps `skinclf run`, `skinclf cv`, `skinclf cv-ensemble` and
`skinclf calibrate` share: **calibrate** fits the policy on held-out predictions files and writes
it (FOLDER/eval/selective.json, the gate's statistics beside it), **evaluate** measures every set
under that policy file and fits nothing (metrics.json, report.html, decisions/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skinclf.contracts.predictions import read_predictions
from skinclf.contracts.run_folder import POLICY_FILE
from skinclf.evaluate.evaluation import EvaluationOptions, PredictionSets, evaluate_predictions
from skinclf.policy.fit import PolicySettings, SelectivePolicy


@dataclass(frozen=True)
class PolicyData:
    """The held-out predictions files a policy is fitted on: the temperature on `val`, the
    confidence gate on `calib` (None: `val`), the OOD gate chosen without OOD labels by the
    silent failures on `shifted` (in-distribution images under synthetic corruption), with the
    feature statistics `gate_stats`."""

    val: Path
    calib: Path | None
    shifted: Path
    gate_stats: Path


def fit_policy(
    out_dir: Path, data: PolicyData, target_risk: float | str, id_keep: float
):  # -> SelectivePolicy
    """The policy fitted on `data`, written to OUT_DIR/selective.json."""

    settings = PolicySettings(target_risk=target_risk, choose_gate=True, id_keep=id_keep)
    policy = SelectivePolicy(settings).fit(
        read_predictions(data.val),
        read_predictions(data.calib) if data.calib is not None else None,
        shifted=read_predictions(data.shifted, require_labels=False),
        gate_stats=data.gate_stats,
    )
    policy.save(out_dir)
    return policy


def evaluate_policy(
    out_dir: Path,
    sets: PredictionSets,
    n_bootstrap: int,
    seed: int,
    on_step: Callable[[str], None] | None = None,
):  # -> EvaluationResult
    """Every set measured under OUT_DIR/selective.json (the calibrate step's); nothing fitted."""

    policy = SelectivePolicy.load(out_dir / POLICY_FILE)
    options = EvaluationOptions(n_bootstrap=n_bootstrap, seed=seed)
    return evaluate_predictions(sets, out_dir, policy, options, on_step=on_step)
