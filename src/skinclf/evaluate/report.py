"""report.html: one self-contained page (plots embedded as base64 PNGs) from metrics.json data.

The page is the `evaluation.html` template (skinclf/templates); this module gathers the numbers
of each section into table rows and draws the figures (`evaluate.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinclf.classes import CLASSES
from skinclf.contracts.metrics_report import (
    Detection,
    FitOutcome,
    MetricsReport,
    OodSet,
    Outcome,
    SelectiveScore,
    SgrBlock,
)
from skinclf.contracts.predictions import softmax
from skinclf.contracts.selective import Selective
from skinclf.evaluate import figures
from skinclf.evaluate.figures import ScoredSet
from skinclf.templates import render

__all__ = ["ScoredSet", "write_report"]


def _ci(value: float | None, interval: Sequence[float | None] | None) -> dict:
    """A cell: a value with its 95 % interval."""
    return {"v": value, "ci": interval}


# ------------------------------------------------------------------ sections (table rows)


def _overview(m: MetricsReport) -> list[list]:
    t, cal = m.test, m.calibration
    rows = [
        ["images (labelled)", t.n],
        ["accuracy", t.accuracy],
        ["balanced accuracy [95 % CI]", _ci(t.balanced_accuracy, t.balanced_accuracy_ci95)],
        ["macro-F1", t.macro_f1],
        ["macro one-vs-rest AUROC", t.auroc_ovr_macro],
        ["NLL", t.nll],
        ["Brier", t.brier],
        ["ECE (15 bins)", t.ece],
    ]
    if cal is not None and cal.test is not None:
        rows += [
            ["temperature (fitted on val)", cal.temperature],
            ["NLL after temperature scaling", cal.test.nll_after],
            ["ECE after temperature scaling", cal.test.ece_after],
        ]
    return rows


def _baselines(m: MetricsReport) -> list[list]:
    t, b = m.test, m.test.baselines
    assert b is not None and b.majority is not None and b.prior_sampling is not None
    majority, prior = b.majority, b.prior_sampling
    return [
        ["this model", t.accuracy, t.balanced_accuracy, t.macro_f1],
        [
            f"majority class ({majority.class_name})",
            majority.accuracy,
            majority.balanced_accuracy,
            majority.macro_f1,
        ],
        ["prior sampling (expected)", prior.accuracy, prior.balanced_accuracy, "–"],
    ]


def _per_class(m: MetricsReport) -> dict:
    t = m.test
    cm = np.asarray(t.confusion_matrix)
    mapped = {n: o.recall for n, o in (m.ood or {}).items() if o.recall is not None}
    header = ["class", "n", "recall", "precision", "AUROC (one-vs-rest)"]
    header += [f"recall on {n}" for n in mapped]
    recall, precision, auroc = t.recall or {}, t.precision or {}, t.auroc_ovr or {}
    rows = [
        [c, int(cm[i].sum()), recall[c], precision[c], auroc[c]] + [r[c] for r in mapped.values()]
        for i, c in enumerate(CLASSES)
    ]
    return {"header": header, "rows": rows}


def _selective_rows(m: MetricsReport) -> list[list]:
    r = str(float(m.settings.target_risk))
    return [
        [
            name,
            *(s.aurc, s.e_aurc, s.augrc, s.aurc_balanced, s.augrc_balanced, s.failure_auroc),
            (s.coverage_at_risk or {}).get(r),
        ]
        for name, s in (m.test.selective or {}).items()
    ]


def _coverage_table(block: dict[str, SelectiveScore], coverages: Sequence[float]) -> dict:
    """Selective balanced accuracy (accuracy) of each score at each coverage."""
    keys = [str(float(c)) for c in coverages]
    rows = [
        [name]
        + [
            {
                "v": (s.balanced_accuracy_at_coverage or {})[k],
                "paren": (s.accuracy_at_coverage or {})[k],
            }
            for k in keys
        ]
        for name, s in block.items()
    ]
    return {"header": ["score"] + [f"coverage {float(k):.0%}" for k in keys], "rows": rows}


def _sgr_rows(g: SgrBlock, oods: dict[str, OodSet]) -> list[list]:
    fit, t = g.fit_outcome() or FitOutcome(), g.test or Outcome()
    met = fit.bound is not None and fit.bound < g.target_risk
    rows = [
        [f"{g.fitted_on} (fitted)", fit.n, fit.coverage, fit.risk, fit.bound, met],
        ["test", t.n, t.coverage, t.risk, "", t.target_met],
    ]
    for name, o in oods.items():
        if o.coverage_at_threshold is not None and o.n_mapped == 0 and o.n_semantic_ood == 0:
            rows.append([f"{name} (unlabelled)", o.n, o.coverage_at_threshold, "", "", ""])
        if o.sgr is not None:
            s = o.sgr
            rows.append([f"{name} (mapped classes)", s.n, s.coverage, s.risk, "", s.target_met])
        if o.semantic_ood is not None:
            sem = o.semantic_ood
            risk = sem.risk_with_semantic_ood_as_errors
            rows.append(
                [
                    f"{name} incl. semantic OOD as errors",
                    (o.n_mapped or 0) + (sem.n or 0),
                    sem.coverage_with_semantic_ood,
                    risk,
                    "",
                    (risk or 0) <= g.target_risk,
                ]
            )
    return rows


def _detection_rows(oods: dict[str, OodSet], scores: Sequence[str]) -> list[list]:
    """Per score (in `scores`' order): each OOD set's detection AUROC and FPR at 95 % TPR."""
    found = sorted({s for o in oods.values() for s in (o.detection or {})}, key=scores.index)
    rows = []
    for s in found:
        found_in = [(o.detection or {}).get(s) for o in oods.values()]
        cells = [d if d is not None else Detection() for d in found_in]
        rows.append([s] + [v for d in cells for v in (d.auroc, d.fpr_at_95_tpr)])
    return rows


def _ood_context(m: MetricsReport, coverages: Sequence[float]) -> dict | None:
    """The OOD sets' classification rows, detection table and selective tables."""
    oods = m.ood or {}
    if not oods:
        return None
    rows = [
        [name, o.n, o.n_mapped, o.accuracy, o.balanced_accuracy, o.macro_f1, o.n_semantic_ood]
        + [o.semantic_ood.abstention_rate if o.semantic_ood is not None else None]
        for name, o in oods.items()
    ]
    header = ["score"] + [h for n in oods for h in (f"AUROC {n}", f"FPR@95%TPR {n}")]
    selective = {
        name: _coverage_table(o.selective, coverages)
        for name, o in oods.items()
        if o.selective is not None
    }
    return {
        "rows": rows,
        "detection": {"header": header, "rows": _detection_rows(oods, list(m.scores))},
        "selective": selective,
    }


def _bootstrap_rows(m: MetricsReport) -> list[list]:
    t = m.test
    rows = [["balanced accuracy", "–", _ci(t.balanced_accuracy, t.balanced_accuracy_ci95)]]
    for name, s in (t.selective or {}).items():
        rows.append(["AURC", name, _ci(s.aurc, s.aurc_ci95)])
        rows.append(["AUGRC", name, _ci(s.augrc, s.augrc_ci95)])
    return rows


# ------------------------------------------------------------------ figures' inputs


def _histogram_groups(test: ScoredSet, oods: Sequence[ScoredSet], score: str) -> dict:
    """Confidence of the ID test, each OOD set (mapped, unlabelled) and all semantic OOD rows."""
    if score not in test.conf:
        return {}
    groups: dict[str, np.ndarray] = {"ID test": test.conf[score][test.preds.labelled]}
    for s in oods:
        if score in s.conf:
            groups[f"OOD {s.name} (mapped)"] = s.conf[score][s.preds.labelled]
            unlabelled = ~s.preds.labelled & ~s.preds.semantic_ood
            if unlabelled.any():
                groups[f"OOD {s.name} (unlabelled)"] = s.conf[score][unlabelled]
    scc = [s.conf[score][s.preds.semantic_ood] for s in [test, *oods] if score in s.conf]
    groups["semantic OOD (e.g. SCC)"] = np.concatenate(scc) if scc else np.zeros(0)
    return groups


CURVES_SHOWN = 5  # scores drawn in the risk-coverage figure; every score is in the table


def shown_scores(
    scores: Sequence[str],
    selective: dict[str, SelectiveScore],
    first: str,
    limit: int = CURVES_SHOWN,
) -> list[str]:
    """The scores the risk-coverage figure draws: the policy's confidence score `first`, then
    the lowest test AURC ones (`selective`: the test set's), `limit` in all (more curves than
    that cannot be read)."""

    def test_aurc(name: str) -> float:
        s = selective.get(name)
        return s.aurc if s is not None and "aurc" in s.model_fields_set else float("inf")

    ranked = sorted((name for name in scores if name != first), key=test_aurc)
    return ([first] if first in scores else []) + ranked[: limit - 1]


def _figures(
    m: MetricsReport,
    test: ScoredSet,
    oods: Sequence[ScoredSet],
    temperature: float | None,
    selective: Selective | None,
) -> dict[str, str]:
    """The report's figures as base64 PNGs ("" for the histograms when nothing to draw)."""
    tp, tm = test.preds, test.preds.labelled
    recall_groups = {"test": m.test.recall}
    for name, o in (m.ood or {}).items():
        if o.recall is not None:
            recall_groups[name] = o.recall
    probs_ts = softmax(tp.logits[tm], temperature) if temperature else None
    target = m.settings.target_risk if selective is not None else None
    score = selective.score if selective else "msp"
    groups = _histogram_groups(test, oods, score)
    threshold = selective.threshold if selective else None
    return {
        "confusion": figures.fig_confusion(
            m.test.confusion_matrix, "Normalised confusion matrix (test)"
        ),
        "recall": figures.fig_recall(recall_groups),
        "reliability": figures.fig_reliability(tp.probs[tm], tp.y[tm], probs_ts),
        "risk_coverage": figures.fig_risk_coverage(
            [test, *oods], shown_scores(m.scores, m.test.selective or {}, score), target
        ),
        "histograms": figures.fig_histograms(groups, score, threshold) if groups else "",
        "histogram_score": score,
    }


def write_report(
    path: str | Path,
    report: MetricsReport,
    sets: Sequence[ScoredSet],
    temperature: float | None = None,
    selective: Selective | None = None,
    gated: Selective | None = None,
    examples: bool = True,
) -> Path:
    """Render report.html from metrics.json (`report`) and the scored prediction sets
    (`gated`: the selective classifier with an OOD gate, shown against `selective`;
    `examples`: its grid of example images). The template reads metrics.json as a dict
    (`m`, `report.model_dump()`)."""
    path = Path(path)
    test = next(s for s in sets if s.kind == "test")
    oods = [s for s in sets if s.kind == "ood"]
    coverages = report.settings.coverages
    policy = None
    if gated is not None and report.policy is not None:
        from skinclf.evaluate.report_shift import policy_context

        shown = [s for s in sets if s.kind in ("test", "external", "ood")]
        policy = policy_context(report.policy, shown, gated, selective, examples)
    page = render(
        "evaluation.html",
        title="skinclf evaluation report",
        m=report.model_dump(),
        classes=CLASSES,
        figures=_figures(report, test, oods, temperature, selective),
        overview=_overview(report),
        baselines=_baselines(report),
        per_class=_per_class(report),
        selective_rows=_selective_rows(report),
        coverage=_coverage_table(report.test.selective or {}, coverages),
        sgr_rows=_sgr_rows(report.sgr, report.ood or {}) if report.sgr is not None else None,
        ood=_ood_context(report, coverages),
        policy=policy,
        bootstrap_rows=_bootstrap_rows(report),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
