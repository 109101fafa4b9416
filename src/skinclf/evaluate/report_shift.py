"""The report's "Abstaining under shift" section (template policy.html): the gated selective
classifier against the single-score one on every set (tables with intervals), and their
risk-coverage curves."""

from __future__ import annotations

from collections.abc import Sequence

from skinclf.contracts.metrics_report import PolicyBlock, PolicyOutcome, PolicySet
from skinclf.contracts.selective import Selective
from skinclf.evaluate.examples import example_sets
from skinclf.evaluate.figures import ScoredSet, fig_policy_curves
from skinclf.evaluate.subgroups import subgroup_tables


def _columns(o: PolicyOutcome | None) -> list[tuple]:
    """(value, 95 % interval) of each column of a set's row."""
    if o is None:
        return [(None, None)] * 5
    return [
        (o.coverage, o.coverage_ci95),
        (o.accepted_accuracy, None),
        (o.accepted_balanced_accuracy, o.accepted_balanced_accuracy_ci95),
        (o.silent_failure_rate, o.silent_failure_rate_ci95),
        (o.semantic_ood_abstention, None),
    ]


def _set_row(name: str, entry: PolicySet) -> list:
    """A set's row: each column's cell is the gated value with its interval / the
    single-score value; then the reasons."""
    r = entry.gated.reasons or {}
    pairs = zip(_columns(entry.gated), _columns(entry.single_score), strict=True)
    cells = [{"v": v, "ci": ci, "other": other} for (v, ci), (other, _) in pairs]
    reasons = f"{r['accepted']} / {r['unfamiliar']} / {r['uncertain']}"
    return [name, *cells, reasons]


def policy_context(
    policy: PolicyBlock,
    sets: Sequence[ScoredSet],
    gated: Selective,
    single: Selective | None,
    examples: bool = True,
) -> dict:
    """What policy.html shows: the gates, the candidates chosen from, a row per set and the
    curves (base64 PNG; none without a single-score classifier), the subgroup tables and
    (`examples`) the example images of each set (`policy`: metrics.json's; the template reads
    its gate as a dict)."""
    choice = None
    if policy.choice is not None:
        choice = [[k, v] for k, v in sorted(policy.choice.items(), key=lambda kv: kv[1])]
    return {
        "gate": policy.gate.model_dump() if policy.gate is not None else None,
        "confidence_gate": policy.confidence_gate,
        "gated": gated,
        "choice": choice,
        "choice_rating": policy.choice_rating or "error rate kept",
        "target_domain": policy.choice_mode == "target_domain",
        "rows": [_set_row(name, entry) for name, entry in policy.sets.items()],
        "curves": fig_policy_curves(sets, gated, single) if single is not None else "",
        "subgroups": subgroup_tables(policy.model_dump()),
        "examples": example_sets(sets, gated) if examples else None,
    }
