"""The report's "Abstaining under shift" section: the gated selective classifier against the
single-score one on every set (tables with intervals), and their risk-coverage curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skinclf.contracts.selective import Selective
from skinclf.evaluate.report import _COLOURS, ScoredSet, _ci, _e, _f, _figure, _png, _table


def _judged(p) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a verdict (labelled or semantic OOD) and their 0/1 errors (SCC: an error)."""
    rows = p.labelled | p.semantic_ood
    wrong = (p.pred != p.y) | p.semantic_ood
    return rows, wrong[rows].astype(float)


def _curve(passed: np.ndarray, conf: np.ndarray, wrong: np.ndarray) -> tuple:
    """Coverage (of all judged rows) and selective risk as the confidence threshold falls,
    among the rows that passed the OOD gate."""
    order = np.argsort(-conf[passed], kind="stable")
    errors = np.cumsum(wrong[passed][order])
    count = np.arange(1, len(order) + 1)
    return count / len(conf), errors / count


def fig_policy_curves(sets: Sequence[ScoredSet], gated: Selective, single: Selective) -> str:
    from skinclf.evaluate.shift import apply_to

    shown = [s for s in sets if (s.preds.labelled | s.preds.semantic_ood).sum() >= 2]
    fig = _figure(4.2 * max(1, len(shown)), 3.8)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(shown))))
    for ax, s in zip(axes, shown, strict=False):
        rows, wrong = _judged(s.preds)
        for i, (name, sel) in enumerate((("gated", gated), (f"{single.score} only", single))):
            conf, abstain, reason = apply_to(sel, s.preds)
            passed = (
                (reason != "unfamiliar")[rows] if name == "gated" else np.ones(rows.sum(), bool)
            )
            if passed.any():
                cov, risk = _curve(passed, conf[rows], wrong)
                ax.plot(cov, risk, color=_COLOURS[i], lw=1.4, label=name)
            kept = ~abstain[rows]
            if kept.any():
                ax.plot(kept.mean(), wrong[kept].mean(), "o", color=_COLOURS[i], ms=6)
        ax.set_title(s.name, fontsize=10)
        ax.set_xlabel("coverage (all images of the set)")
        ax.set_ylabel("selective risk (SCC accepted = error)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def _pair(entry: dict, key: str) -> str:
    g, s = entry["gated"], entry.get("single_score", {})
    return f"{_f(g.get(key))}{_ci(g.get(key + '_ci95'))} / {_f(s.get(key))}"


def policy_section(
    metrics: dict, sets: Sequence[ScoredSet], gated: Selective, single: Selective | None
) -> str:
    policy = metrics["policy"]
    gate = policy["gate"]
    parts = [
        f"<p>OOD gate <b>{_e(gate['score'])}</b>: threshold {_f(gate['threshold'])}, keeps "
        f"{_f(gate['id_kept'])} of {gate['n']} {_e(gate['fitted_on'])} images (asked "
        f"{_f(gate['id_keep'])}); chosen: {_e(gate.get('chosen_by') or 'given')}. Then the "
        f"confidence gate ({_e(policy['confidence_gate'])}) on {_e(gated.score)}, threshold "
        f"{_f(gated.threshold)}, fitted on the {gated.n_calib} {_e(gated.fitted_on)} images "
        "that passed the gate. No OOD label or image was used to fit either.</p>"
    ]
    if "choice" in policy:
        rows = [[_e(k), _f(v)] for k, v in sorted(policy["choice"].items(), key=lambda kv: kv[1])]
        parts.append(
            "<h3>Gate candidates (error rate of the kept calibration images)</h3>"
            + _table(["gate score", "error rate kept"], rows)
        )
    header = [
        "set",
        "coverage",
        "accepted accuracy",
        "accepted balanced accuracy",
        "silent failure rate",
        "SCC abstained",
        "accepted / unfamiliar / uncertain",
    ]
    rows = []
    for name, entry in policy["sets"].items():
        r = entry["gated"]["reasons"]
        rows.append(
            [
                _e(name),
                _pair(entry, "coverage"),
                _pair(entry, "accepted_accuracy"),
                _pair(entry, "accepted_balanced_accuracy"),
                _pair(entry, "silent_failure_rate"),
                _pair(entry, "semantic_ood_abstention"),
                f"{r['accepted']} / {r['unfamiliar']} / {r['uncertain']}",
            ]
        )
    parts.append(
        "<h3>Gated / single-score classifier per set</h3><p class=small>Silent failure rate: "
        "accepted and wrong (an accepted SCC counts as wrong) over all judged images. "
        "Intervals: bootstrap 95 %.</p>" + _table(header, rows)
    )
    if single is not None:
        parts.append(fig_policy_curves(sets, gated, single))
    return "".join(parts)
