"""Fitting the gates of a selective classifier: an out-of-distribution gate before the
confidence gate.

A gated selective classifier decides in two steps:

1. the **OOD gate** accepts an image when a gate score (a feature-space score such as
   Mahalanobis, or a combination) is at least a threshold chosen so that a stated share
   (`id_keep`, e.g. 0.95) of in-distribution calibration images pass; a rejected image is
   `unfamiliar`;
2. the **confidence gate** accepts what passed gate 1 when its confidence score is at least an
   SGR threshold (or a target-coverage threshold) fitted on the calibration images that passed
   gate 1; a rejected image is `uncertain`.

A combined score ranks each component against its stored calibration values (the empirical
CDF) and averages the ranks, so one image gets the same decision alone or in a batch. Policies
are fitted on in-distribution data only; nothing here looks at OOD labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace

import numpy as np

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.score_registry import FEATURE_SCORES
from skinclf.contracts.scores import compute_score, score_values
from skinclf.contracts.selective import (
    OODGate,
    RankCombination,
    Selective,
    apply_policy,
    combination_parts,
)
from skinclf.errors import ConfigError
from skinclf.policy.risk_coverage import threshold_at_coverage
from skinclf.policy.settings import PolicySettings
from skinclf.policy.sgr import AUTO, fit_coverage, lowest_certified_risk, sgr


def fit_combination(name: str, values: Mapping[str, np.ndarray]) -> RankCombination:
    parts = combination_parts(name)
    return RankCombination(
        tuple(parts), tuple(np.sort(np.asarray(values[p], dtype=np.float64)) for p in parts)
    )


# The highest threshold that accepts (conf >= threshold) at least `keep` of `conf`.
keep_threshold = threshold_at_coverage


def fit_ood_gate(
    score: str,
    component_values: Mapping[str, np.ndarray],
    id_keep: float,
    fitted_on: str,
    stats_file: str | None = None,
    chosen_by: str = "",
) -> OODGate:
    """Fit gate 1 on in-distribution calibration values of each component score."""
    combination = None
    if len(combination_parts(score)) > 1:
        comb = fit_combination(score, component_values)
        values = comb.score(component_values)
        combination = comb.to_json()
    else:
        values = np.asarray(component_values[score], dtype=np.float64)
    threshold = keep_threshold(values, id_keep)
    return OODGate(
        score=score,
        threshold=threshold,
        id_keep=float(id_keep),
        id_kept=float(np.mean(values >= threshold)),
        fitted_on=fitted_on,
        n=len(values),
        combination=combination,
        stats_file=stats_file,
        chosen_by=chosen_by,
    )


def component_values(
    p: Predictions, gate: str, temperature: float | None, what: str
) -> dict[str, np.ndarray]:
    out = {}
    for name in combination_parts(gate):
        values = score_values(p, name, temperature)
        if values is None:
            hint = f" (predict with --scores {name})" if name in FEATURE_SCORES else ""
            raise ConfigError(f"The OOD gate needs score {name!r}, missing in {what}{hint}.")
        out[name] = values
    return out


def fit_gated_policy(
    fit_p: Predictions,
    fitted_on: str,
    confidence_score: str,
    temperature: float | None,
    settings: PolicySettings,
    stats_file: str | None = None,
    chosen_by: str = "",
) -> Selective:
    """Gate 1 (`settings.ood_gate`; none when unset) at `settings.id_keep` on the labelled
    in-distribution rows of `fit_p`, then the confidence gate (`settings.confidence_gate`: SGR
    at `target_risk`, a `target_coverage` threshold, or off) on the rows that passed it.
    `target_risk` "auto": the lowest risk of `sgr.RISK_GRID` that SGR certifies on those rows at
    `sgr.AUTO_MIN_COVERAGE` (`sgr.lowest_certified_risk`, delta split over the grid).
    `stats_file` and `chosen_by` are recorded in the gate."""
    m = fit_p.labelled
    gate = None
    passed = np.ones(int(m.sum()), bool)
    if settings.ood_gate:
        parts = component_values(fit_p, settings.ood_gate, temperature, "")
        values = {k: v[m] for k, v in parts.items()}
        gate = fit_ood_gate(
            settings.ood_gate, values, settings.id_keep, fitted_on, stats_file, chosen_by
        )
        passed = gate.accept(values)
    conf = compute_score(confidence_score, fit_p.logits[m], temperature)[passed]
    residuals = (fit_p.pred[m] != fit_p.y[m])[passed].astype(float)
    target, note = _confidence_target(conf, residuals, fitted_on, settings)
    threshold, exists, risk, bound, coverage = _fit_confidence_gate(conf, residuals, target)
    return Selective(
        score=confidence_score,
        temperature=float(temperature) if temperature is not None else None,
        threshold=threshold,
        target_risk=float(0.10 if target.target_risk == AUTO else target.target_risk),
        delta=float(target.delta),
        solution_exists=exists,
        fitted_on=fitted_on,
        n_calib=len(conf),
        calib_coverage=coverage,
        calib_risk=risk,
        bound=bound,
        note=note,
        confidence_gate=target.confidence_gate,
        target_coverage=target.target_coverage,
        ood_gate=asdict(gate) if gate is not None else None,
    )


def _confidence_target(
    conf: np.ndarray, residuals: np.ndarray, fitted_on: str, settings: PolicySettings
) -> tuple[PolicySettings, str]:
    """The settings of the confidence gate with `--target-risk auto` resolved on the rows that
    gate 1 kept (too few for any guarantee: a coverage target instead), and a note saying how
    ("" when nothing was resolved)."""
    if settings.confidence_gate != "sgr":
        return settings, ""
    if len(conf) < 2:
        raise ConfigError(f"Only {len(conf)} {fitted_on} image(s) pass the OOD gate.")
    if settings.target_risk != AUTO:
        return settings, ""
    choice = lowest_certified_risk(conf, residuals, settings.delta)
    resolved = replace(settings, target_risk=choice.target_risk, delta=choice.delta)
    if not choice.certified:  # too few images for any guarantee: a coverage target
        by_coverage = replace(
            resolved, confidence_gate="coverage", target_coverage=choice.min_coverage
        )
        return by_coverage, (
            f"--target-risk auto: SGR certifies no risk up to {choice.target_risk:g} on the "
            f"{len(conf)} {fitted_on} images the OOD gate keeps, so the confidence gate "
            f"keeps {choice.min_coverage:.0%} of them instead, with no risk guarantee"
        )
    return resolved, (
        f"target risk {choice.target_risk:g} chosen by --target-risk auto on the {fitted_on} "
        f"images the OOD gate keeps (the lowest certified at {choice.min_coverage:.0%} "
        f"coverage{'' if choice.reached else ': none reached it'}; delta "
        f"{choice.overall_delta:g} split over {len(choice.coverages)} risks)"
    )


def _fit_confidence_gate(
    conf: np.ndarray, residuals: np.ndarray, target: PolicySettings
) -> tuple[float | None, bool, float | None, float | None, float]:
    """(threshold, solution exists, risk, bound, coverage) of the confidence gate `target`
    fitted on the rows that gate 1 kept (an unknown gate: abstain on everything)."""
    if target.confidence_gate == "sgr":
        fit = sgr(conf, residuals, target.target_risk, target.delta)
        return fit.threshold, fit.solution_exists, fit.risk, fit.bound, fit.coverage
    if target.confidence_gate == "coverage":
        if target.target_coverage is None:
            raise ConfigError("--confidence-gate coverage needs --target-coverage.")
        fit = fit_coverage(conf, residuals, target.target_coverage, target.delta, 0.0)
        return fit.threshold, True, fit.risk, fit.bound, fit.coverage
    if target.confidence_gate == "off":
        return None, True, float(residuals.mean()) if len(conf) else None, None, 1.0
    return None, False, None, None, 0.0


def apply_to(selective: Selective, p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, abstain, reason) of `selective` on a predictions file's rows."""
    gate = selective.gate
    values = None
    if gate is not None:
        values = component_values(p, gate.score, selective.temperature, str(p.path))
    return apply_policy(selective, p.logits, values)


def silent_failure_rate(
    abstain: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    labelled: np.ndarray,
    semantic_ood: np.ndarray,
) -> float | None:
    """Accepted and wrong over all judged rows (labelled or semantic OOD; an accepted semantic
    OOD row counts as wrong); None when no row can be judged."""
    accepted = ~np.asarray(abstain, bool)
    labelled, semantic_ood = np.asarray(labelled, bool), np.asarray(semantic_ood, bool)
    wrong = labelled & (np.asarray(pred) != np.asarray(y))
    judged = labelled | semantic_ood
    if not judged.any():
        return None
    return float((accepted & (wrong | semantic_ood)).sum() / judged.sum())
