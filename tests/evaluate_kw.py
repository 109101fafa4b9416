"""`evaluate_kw`: the tests' keyword form of `evaluate_predictions` (sets, options and policy
settings by name), so that each test names only what it varies. Without `policy`, the policy
is fitted from the settings given, at a target risk of 0.10 unless one is given."""

from __future__ import annotations

from pathlib import Path

from skinclf.evaluate.evaluation import (
    EvaluationOptions,
    EvaluationResult,
    PredictionSets,
    evaluate_predictions,
)
from skinclf.evaluate.selective import DEFAULT_COVERAGES
from skinclf.policy.fit import PolicySettings, SelectivePolicy

SET_KEYS = ("val", "calib", "ood", "external", "shifted", "target_domain", "set_names")
OPTION_KEYS = ("scores", "coverages", "n_bootstrap", "seed", "examples")


def evaluate_kw(
    test: Path, out_dir: Path, policy: SelectivePolicy | None = None, **kw
) -> EvaluationResult:
    sets = {k: kw.pop(k) for k in SET_KEYS if k in kw}
    sets["names"] = sets.pop("set_names", None)
    options = {"coverages": DEFAULT_COVERAGES} | {k: kw.pop(k) for k in OPTION_KEYS if k in kw}
    gate_stats, on_step = kw.pop("gate_stats", None), kw.pop("on_step", None)
    to_fit = policy or PolicySettings(**{"target_risk": 0.10, **kw})
    return evaluate_predictions(
        PredictionSets(test, **sets), out_dir, to_fit, EvaluationOptions(**options),
        gate_stats, on_step,
    )  # fmt: skip
