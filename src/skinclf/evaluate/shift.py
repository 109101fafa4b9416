"""Fitting and measuring gated selective classifiers on predictions files (`skinclf evaluate
--ood-gate`): the policy is fitted on in-distribution calibration (or validation) rows only,
then measured on every set by coverage, accepted (balanced) accuracy and silent failures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.scores import compute_score, score_values
from skinclf.contracts.selective import Selective, apply_policy, combination_parts
from skinclf.errors import ConfigError
from skinclf.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
from skinclf.evaluate.gates import fit_ood_gate, policy_outcome
from skinclf.evaluate.metrics import balanced_accuracy
from skinclf.evaluate.sgr import AUTO, fit_coverage, lowest_certified_risk, sgr
from skinclf.scoring.feature_scores import FEATURE_SCORES

CHOOSE_GATE_CRITERION = (
    "lowest error rate of the validation/calibration images that pass the gate at --id-keep "
    "(the gate that, for the same in-distribution cost, turns away the most misclassified "
    "in-distribution images); no OOD label or image is used"
)
SHIFTED_CRITERION = (
    "lowest silent failure rate (accepted and wrong, over all images) of the whole policy on "
    "the in-distribution images under synthetic corruption (--shifted: `skinclf predict "
    "--corrupt`), each candidate fitted at --id-keep on the uncorrupted images; no OOD label "
    "or image is used"
)
TARGET_DOMAIN_CRITERION = (
    "lowest share of the unlabelled target-domain images (--target-domain) that the whole "
    "policy accepts, each candidate fitted at --id-keep on the in-distribution images; this "
    "uses target-domain images, so its numbers are reported apart from in-distribution-only "
    "choices"
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


def gate_candidates(p: Predictions, confidence_score: str) -> list[str]:
    """Feature scores present in `p`, energy, and each feature score combined with the
    confidence score."""
    feats = [s for s in FEATURE_SCORES if s in p.conf]
    return [*feats, "energy", *[f"{f}+{confidence_score}" for f in feats]]


def choose_gate(
    fit_p: Predictions, candidates: Sequence[str], id_keep: float, temperature: float | None
) -> tuple[str, dict[str, float]]:
    """The candidate whose gate, at `id_keep`, leaves the lowest error rate on `fit_p`."""
    m = fit_p.labelled
    wrong = fit_p.pred[m] != fit_p.y[m]
    table = {}
    for name in candidates:
        values = {k: v[m] for k, v in component_values(fit_p, name, temperature, "").items()}
        gate = fit_ood_gate(name, values, id_keep, "")
        table[name] = float(wrong[gate.accept(values)].mean())
    best = min(table, key=lambda k: (table[k], len(combination_parts(k))))
    return best, table


def choose_gate_by_policy(
    candidates: Sequence[str],
    fit: Callable[[str], Selective],
    judge: Callable[[Selective], float | None],
    allow_empty: bool = False,
) -> tuple[str, dict[str, float], dict[str, str]]:
    """The candidate whose fitted policy `judge` rates lowest (ties: fewer components), each
    candidate's rating, and the candidates left out with why: a policy whose confidence gate
    has no solution abstains on everything, which would rate best while being useless.
    With `allow_empty`, no usable candidate gives ("", {}, excluded) instead of a ConfigError."""
    table: dict[str, float] = {}
    excluded: dict[str, str] = {}
    for name in candidates:
        try:
            policy = fit(name)
        except ConfigError as exc:
            excluded[name] = str(exc)
            continue
        if not policy.solution_exists:
            excluded[name] = "no confidence threshold meets the target risk after this gate"
            continue
        value = judge(policy)
        if value is not None:
            table[name] = float(value)
    if not table and allow_empty:
        return "", table, excluded
    if not table:
        raise ConfigError(
            "No gate candidate leaves a usable policy for --choose-gate (each one: "
            f"{'; '.join(f'{k}: {v}' for k, v in excluded.items())}); raise --target-risk or "
            "use --confidence-gate coverage."
        )
    best = min(table, key=lambda k: (table[k], len(combination_parts(k)), k))
    return best, table, excluded


def require_components(p: Predictions, candidates: Sequence[str], option: str) -> None:
    """ConfigError naming the first conf_ column a candidate needs that `p` lacks."""
    for name in candidates:
        for part in combination_parts(name):
            if part in FEATURE_SCORES and part not in p.conf:
                raise ConfigError(
                    f"{option} {p.path}: no conf_{part} column, which the gate candidate "
                    f"{name!r} needs; predict it with the same --scores as the validation file."
                )


def silent_failures(p: Predictions) -> Callable[[Selective], float | None]:
    """Rates a policy by its silent failure rate on `p` (synthetically shifted labelled rows)."""

    def judge(selective: Selective) -> float | None:
        _, abstain, reason = apply_to(selective, p)
        return policy_outcome(
            abstain, reason, p.y, p.pred, p.labelled, p.semantic_ood
        ).silent_failure_rate

    return judge


def accepted_share(p: Predictions) -> Callable[[Selective], float]:
    """Rates a policy by the share of the (unlabelled) rows of `p` it accepts."""

    def judge(selective: Selective) -> float:
        return float(1.0 - apply_to(selective, p)[1].mean())

    return judge


def fit_gated_policy(
    fit_p: Predictions,
    fitted_on: str,
    confidence_score: str,
    temperature: float | None,
    gate_score: str | None,
    id_keep: float,
    confidence_gate: str,
    target_risk: float | str,
    delta: float,
    target_coverage: float | None,
    stats_file: str | None,
    chosen_by: str = "",
) -> Selective:
    """Gate 1 at `id_keep` on the labelled in-distribution rows of `fit_p`, then the
    confidence gate (SGR at `target_risk`, a `target_coverage` threshold, or off) on the rows
    that passed it. `target_risk` "auto": the lowest risk of `sgr.RISK_GRID` that SGR certifies
    on those rows at `sgr.AUTO_MIN_COVERAGE` (`sgr.lowest_certified_risk`, delta split over the
    grid)."""
    m = fit_p.labelled
    gate = None
    passed = np.ones(int(m.sum()), bool)
    if gate_score:
        values = {k: v[m] for k, v in component_values(fit_p, gate_score, temperature, "").items()}
        gate = fit_ood_gate(gate_score, values, id_keep, fitted_on, stats_file, chosen_by)
        passed = gate.accept(values)
    conf = compute_score(confidence_score, fit_p.logits[m], temperature)[passed]
    residuals = (fit_p.pred[m] != fit_p.y[m])[passed].astype(float)
    threshold, exists, risk, bound, coverage = None, False, None, None, 0.0
    note = ""
    if confidence_gate == "sgr":
        if len(conf) < 2:
            raise ConfigError(f"Only {len(conf)} {fitted_on} image(s) pass the OOD gate.")
        if target_risk == AUTO:
            choice = lowest_certified_risk(conf, residuals, delta)
            target_risk, delta = choice.target_risk, choice.delta
            note = (
                f"target risk {target_risk:g} chosen by --target-risk auto on the {fitted_on} "
                f"images the OOD gate keeps (the lowest certified at {choice.min_coverage:.0%} "
                f"coverage{'' if choice.reached else ': none reached it'}; delta "
                f"{choice.overall_delta:g} split over {len(choice.coverages)} risks)"
            )
            if not choice.certified:  # too few images for any guarantee: a coverage target
                confidence_gate, target_coverage = "coverage", choice.min_coverage
                note = (
                    f"--target-risk auto: SGR certifies no risk up to {target_risk:g} on the "
                    f"{len(conf)} {fitted_on} images the OOD gate keeps, so the confidence gate "
                    f"keeps {choice.min_coverage:.0%} of them instead, with no risk guarantee"
                )
    if confidence_gate == "sgr":
        fit = sgr(conf, residuals, target_risk, delta)
        threshold, exists, risk = fit.threshold, fit.solution_exists, fit.risk
        bound, coverage = fit.bound, fit.coverage
    if confidence_gate == "coverage":
        if target_coverage is None:
            raise ConfigError("--confidence-gate coverage needs --target-coverage.")
        fit = fit_coverage(conf, residuals, target_coverage, delta, 0.0)
        threshold, exists, risk = fit.threshold, True, fit.risk
        bound, coverage = fit.bound, fit.coverage
    elif confidence_gate == "off":
        exists, coverage, risk = True, 1.0, float(residuals.mean()) if len(conf) else None
    return Selective(
        score=confidence_score,
        temperature=float(temperature) if temperature is not None else None,
        threshold=threshold,
        target_risk=float(0.10 if target_risk == AUTO else target_risk),
        delta=float(delta),
        solution_exists=exists,
        fitted_on=fitted_on,
        n_calib=len(conf),
        calib_coverage=coverage,
        calib_risk=risk,
        bound=bound,
        note=note,
        confidence_gate=confidence_gate,
        target_coverage=target_coverage,
        ood_gate=asdict(gate) if gate is not None else None,
    )


def apply_to(selective: Selective, p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, abstain, reason) of `selective` on a predictions file's rows."""
    gate = selective.gate
    values = None
    if gate is not None:
        values = component_values(p, gate.score, selective.temperature, str(p.path))
    return apply_policy(selective, p.logits, values)


def _strata(p: Predictions) -> np.ndarray:
    """Bootstrap strata: the class, -2 for semantic OOD, -1 for unlabelled rows."""
    return np.where(p.semantic_ood, -2, p.y)


def outcome(
    selective: Selective, p: Predictions, n_bootstrap: int, seed: int
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The policy's outcome on `p` with bootstrap intervals, plus its abstain and reasons."""
    _, abstain, reason = apply_to(selective, p)
    y, pred, lab, sem = p.y, p.pred, p.labelled, p.semantic_ood
    result = asdict(policy_outcome(abstain, reason, y, pred, lab, sem))

    def stat(key: str):
        def f(i: np.ndarray) -> float:
            value = getattr(
                policy_outcome(abstain[i], reason[i], y[i], pred[i], lab[i], sem[i]), key
            )
            return np.nan if value is None else value

        return f

    for key in ("coverage", "silent_failure_rate", "accepted_balanced_accuracy"):
        if result[key] is not None:
            result[f"{key}_ci95"] = list(bootstrap_ci(stat(key), _strata(p), n_bootstrap, seed))
    return result, abstain, reason


def same_coverage_comparison(
    p: Predictions, accepted: np.ndarray, score: np.ndarray, n_bootstrap: int, seed: int
) -> dict:
    """Selective balanced accuracy of the gated policy vs a single score accepting the same
    number of images (its most confident ones), paired bootstrap over the labelled rows."""
    m = p.labelled
    y, pred, acc, s = p.y[m], p.pred[m], np.asarray(accepted)[m], np.asarray(score)[m]
    k = int(acc.sum())
    if k == 0:
        return {"coverage": 0.0, "note": "the gated policy accepts no labelled image"}

    def top_k(i: np.ndarray) -> np.ndarray:
        kk = max(1, round(k * len(i) / len(y)))
        return i[np.argsort(-s[i], kind="stable")[:kk]]

    def gated(i: np.ndarray) -> float:
        j = i[acc[i]]
        return balanced_accuracy(y[j], pred[j]) if len(j) else np.nan

    def single(i: np.ndarray) -> float:
        j = top_k(i)
        return balanced_accuracy(y[j], pred[j])

    cmp = paired_bootstrap(gated, single, y, n_bootstrap, seed, "selective_balanced_accuracy")
    return {"coverage": k / len(y), **asdict(cmp)}
