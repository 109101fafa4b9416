"""Choosing the OOD gate without OOD labels (`--choose-gate`): each candidate gate is fitted
with its confidence gate on in-distribution calibration (or validation) rows, then rated by the
error rate it keeps, by the silent failures of the whole policy on in-distribution images under
synthetic corruption, or (opt-in) by the share of unlabelled target-domain images it accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from skinclf.contracts.predictions import Predictions
from skinclf.contracts.score_registry import FEATURE_SCORES
from skinclf.contracts.selective import Selective, combination_parts
from skinclf.errors import ConfigError
from skinclf.policy.gates import apply_to, component_values, fit_ood_gate, silent_failure_rate

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
        _, abstain, _ = apply_to(selective, p)
        return silent_failure_rate(abstain, p.y, p.pred, p.labelled, p.semantic_ood)

    return judge


def accepted_share(p: Predictions) -> Callable[[Selective], float]:
    """Rates a policy by the share of the (unlabelled) rows of `p` it accepts."""

    def judge(selective: Selective) -> float:
        return float(1.0 - apply_to(selective, p)[1].mean())

    return judge
