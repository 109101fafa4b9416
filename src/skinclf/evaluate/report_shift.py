"""The report's "Abstaining under shift" section (template policy.html): the gated selective
classifier against the single-score one on every set (tables with intervals), and their
risk-coverage curves."""

from __future__ import annotations

from collections.abc import Sequence

from skinclf.contracts.selective import Selective
from skinclf.evaluate.examples import example_sets
from skinclf.evaluate.figures import ScoredSet, fig_policy_curves
from skinclf.evaluate.subgroups import subgroup_tables


def _pair(entry: dict, key: str) -> dict:
    """A cell: the gated value with its interval / the single-score value."""
    g, s = entry["gated"], entry.get("single_score", {})
    return {"v": g.get(key), "ci": g.get(key + "_ci95"), "other": s.get(key)}


def _set_row(name: str, entry: dict) -> list:
    r = entry["gated"]["reasons"]
    keys = (
        "coverage",
        "accepted_accuracy",
        "accepted_balanced_accuracy",
        "silent_failure_rate",
        "semantic_ood_abstention",
    )
    reasons = f"{r['accepted']} / {r['unfamiliar']} / {r['uncertain']}"
    return [name, *[_pair(entry, k) for k in keys], reasons]


def policy_context(
    metrics: dict,
    sets: Sequence[ScoredSet],
    gated: Selective,
    single: Selective | None,
    examples: bool = True,
) -> dict:
    """What policy.html shows: the gates, the candidates chosen from, a row per set and the
    curves (base64 PNG; none without a single-score classifier), the subgroup tables and
    (`examples`) the example images of each set."""
    policy = metrics["policy"]
    choice = None
    if "choice" in policy:
        choice = [[k, v] for k, v in sorted(policy["choice"].items(), key=lambda kv: kv[1])]
    return {
        "gate": policy["gate"],
        "confidence_gate": policy["confidence_gate"],
        "gated": gated,
        "choice": choice,
        "choice_rating": policy.get("choice_rating", "error rate kept"),
        "target_domain": policy.get("choice_mode") == "target_domain",
        "rows": [_set_row(name, entry) for name, entry in policy["sets"].items()],
        "curves": fig_policy_curves(sets, gated, single) if single is not None else "",
        "subgroups": subgroup_tables(policy),
        "examples": example_sets(sets, gated) if examples else None,
    }
