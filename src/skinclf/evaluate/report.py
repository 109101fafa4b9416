"""report.html: one self-contained page (plots embedded as base64 PNGs) from metrics.json data.

The page is the `evaluation.html` template (skinclf/templates); this module gathers the numbers
of each section into table rows and draws the figures (`evaluate.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinclf.classes import CLASSES
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


def _overview(metrics: dict) -> list[list]:
    t = metrics["test"]
    cal = metrics.get("calibration", {})
    rows = [
        ["images (labelled)", t["n"]],
        ["accuracy", t["accuracy"]],
        ["balanced accuracy [95 % CI]", _ci(t["balanced_accuracy"], t["balanced_accuracy_ci95"])],
        ["macro-F1", t["macro_f1"]],
        ["macro one-vs-rest AUROC", t["auroc_ovr_macro"]],
        ["NLL", t["nll"]],
        ["Brier", t["brier"]],
        ["ECE (15 bins)", t["ece"]],
    ]
    if cal:
        c = cal["test"]
        rows += [
            ["temperature (fitted on val)", cal["temperature"]],
            ["NLL after temperature scaling", c["nll_after"]],
            ["ECE after temperature scaling", c["ece_after"]],
        ]
    return rows


def _baselines(metrics: dict) -> list[list]:
    t, b = metrics["test"], metrics["test"]["baselines"]
    majority, prior = b["majority"], b["prior_sampling"]
    return [
        ["this model", t["accuracy"], t["balanced_accuracy"], t["macro_f1"]],
        [
            f"majority class ({majority['class']})",
            majority["accuracy"],
            majority["balanced_accuracy"],
            majority["macro_f1"],
        ],
        ["prior sampling (expected)", prior["accuracy"], prior["balanced_accuracy"], "–"],
    ]


def _per_class(metrics: dict) -> dict:
    t = metrics["test"]
    cm = np.asarray(t["confusion_matrix"])
    mapped = {n: o for n, o in metrics.get("ood", {}).items() if "recall" in o}
    header = ["class", "n", "recall", "precision", "AUROC (one-vs-rest)"]
    header += [f"recall on {n}" for n in mapped]
    rows = [
        [c, int(cm[i].sum()), t["recall"][c], t["precision"][c], t["auroc_ovr"][c]]
        + [o["recall"][c] for o in mapped.values()]
        for i, c in enumerate(CLASSES)
    ]
    return {"header": header, "rows": rows}


def _selective_rows(metrics: dict) -> list[list]:
    r = str(float(metrics["settings"]["target_risk"]))
    keys = ("aurc", "e_aurc", "augrc", "aurc_balanced", "augrc_balanced", "failure_auroc")
    return [
        [name, *[s[k] for k in keys], s.get("coverage_at_risk", {}).get(r)]
        for name, s in metrics["test"]["selective"].items()
    ]


def _coverage_table(block: dict, coverages: Sequence[float]) -> dict:
    """Selective balanced accuracy (accuracy) of each score at each coverage."""
    keys = [str(float(c)) for c in coverages]
    rows = [
        [name]
        + [
            {"v": s["balanced_accuracy_at_coverage"][k], "paren": s["accuracy_at_coverage"][k]}
            for k in keys
        ]
        for name, s in block.items()
    ]
    return {"header": ["score"] + [f"coverage {float(k):.0%}" for k in keys], "rows": rows}


def _sgr_rows(metrics: dict) -> list[list]:
    g = metrics["sgr"]
    fit, t = g[g["fitted_on"]], g["test"]
    met = fit["bound"] is not None and fit["bound"] < g["target_risk"]
    rows = [
        [f"{g['fitted_on']} (fitted)", fit["n"], fit["coverage"], fit["risk"], fit["bound"], met],
        ["test", t["n"], t["coverage"], t["risk"], "", t["target_met"]],
    ]
    for name, o in metrics.get("ood", {}).items():
        if "coverage_at_threshold" in o and o["n_mapped"] == 0 and o["n_semantic_ood"] == 0:
            rows.append([f"{name} (unlabelled)", o["n"], o["coverage_at_threshold"], "", "", ""])
        if "sgr" in o:
            s = o["sgr"]
            rows.append(
                [f"{name} (mapped classes)", s["n"], s["coverage"], s["risk"], "", s["target_met"]]
            )
        if "semantic_ood" in o:
            s = o["semantic_ood"]
            risk = s["risk_with_semantic_ood_as_errors"]
            rows.append(
                [
                    f"{name} incl. semantic OOD as errors",
                    o["n_mapped"] + s["n"],
                    s["coverage_with_semantic_ood"],
                    risk,
                    "",
                    (risk or 0) <= g["target_risk"],
                ]
            )
    return rows


def _ood_context(metrics: dict, coverages: Sequence[float]) -> dict | None:
    """The OOD sets' classification rows, detection table and selective tables."""
    oods = metrics.get("ood", {})
    if not oods:
        return None
    keys = ("n", "n_mapped", "accuracy", "balanced_accuracy", "macro_f1", "n_semantic_ood")
    rows = [
        [name, *[o.get(k) for k in keys], o.get("semantic_ood", {}).get("abstention_rate")]
        for name, o in oods.items()
    ]
    scores = sorted(
        {s for o in oods.values() for s in o["detection"]},
        key=lambda s: list(metrics["scores"]).index(s),
    )
    header = ["score"] + [h for n in oods for h in (f"AUROC {n}", f"FPR@95%TPR {n}")]
    detection = [
        [s]
        + [
            v
            for o in oods.values()
            for v in (
                o["detection"].get(s, {}).get("auroc"),
                o["detection"].get(s, {}).get("fpr_at_95_tpr"),
            )
        ]
        for s in scores
    ]
    selective = {
        name: _coverage_table(o["selective"], coverages)
        for name, o in oods.items()
        if "selective" in o
    }
    return {
        "rows": rows,
        "detection": {"header": header, "rows": detection},
        "selective": selective,
    }


def _bootstrap_rows(metrics: dict) -> list[list]:
    t = metrics["test"]
    rows = [["balanced accuracy", "–", _ci(t["balanced_accuracy"], t["balanced_accuracy_ci95"])]]
    for name, s in t["selective"].items():
        rows.append(["AURC", name, _ci(s["aurc"], s.get("aurc_ci95"))])
        rows.append(["AUGRC", name, _ci(s["augrc"], s.get("augrc_ci95"))])
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


def shown_scores(metrics: dict, first: str, limit: int = CURVES_SHOWN) -> list[str]:
    """The scores the risk-coverage figure draws: the policy's confidence score `first`, then
    the lowest test AURC ones, `limit` in all (more curves than that cannot be read)."""
    selective = metrics["test"].get("selective", {})
    ranked = sorted(
        (name for name in metrics["scores"] if name != first),
        key=lambda name: selective.get(name, {}).get("aurc", float("inf")),
    )
    return ([first] if first in metrics["scores"] else []) + ranked[: limit - 1]


def _figures(
    metrics: dict,
    test: ScoredSet,
    oods: Sequence[ScoredSet],
    temperature: float | None,
    selective: Selective | None,
) -> dict[str, str]:
    """The report's figures as base64 PNGs ("" for the histograms when nothing to draw)."""
    tp, tm = test.preds, test.preds.labelled
    recall_groups = {"test": metrics["test"]["recall"]}
    for name, o in metrics.get("ood", {}).items():
        if "recall" in o:
            recall_groups[name] = o["recall"]
    probs_ts = softmax(tp.logits[tm], temperature) if temperature else None
    target = metrics["settings"]["target_risk"] if selective is not None else None
    score = selective.score if selective else "msp"
    groups = _histogram_groups(test, oods, score)
    threshold = selective.threshold if selective else None
    return {
        "confusion": figures.fig_confusion(
            metrics["test"]["confusion_matrix"], "Normalised confusion matrix (test)"
        ),
        "recall": figures.fig_recall(recall_groups),
        "reliability": figures.fig_reliability(tp.probs[tm], tp.y[tm], probs_ts),
        "risk_coverage": figures.fig_risk_coverage(
            [test, *oods], shown_scores(metrics, score), target
        ),
        "histograms": figures.fig_histograms(groups, score, threshold) if groups else "",
        "histogram_score": score,
    }


def write_report(
    path: str | Path,
    metrics: dict,
    sets: Sequence[ScoredSet],
    temperature: float | None = None,
    selective: Selective | None = None,
    gated: Selective | None = None,
    examples: bool = True,
) -> Path:
    """Render report.html from the metrics and the scored prediction sets (`gated`: the
    selective classifier with an OOD gate, shown against `selective`; `examples`: its grid
    of example images)."""
    path = Path(path)
    test = next(s for s in sets if s.kind == "test")
    oods = [s for s in sets if s.kind == "ood"]
    coverages = metrics["settings"]["coverages"]
    policy = None
    if gated is not None and "policy" in metrics:
        from skinclf.evaluate.report_shift import policy_context

        shown = [s for s in sets if s.kind in ("test", "external", "ood")]
        policy = policy_context(metrics, shown, gated, selective, examples)
    page = render(
        "evaluation.html",
        title="skinclf evaluation report",
        m=metrics,
        classes=CLASSES,
        figures=_figures(metrics, test, oods, temperature, selective),
        overview=_overview(metrics),
        baselines=_baselines(metrics),
        per_class=_per_class(metrics),
        selective_rows=_selective_rows(metrics),
        coverage=_coverage_table(metrics["test"]["selective"], coverages),
        sgr_rows=_sgr_rows(metrics) if "sgr" in metrics else None,
        ood=_ood_context(metrics, coverages),
        policy=policy,
        bootstrap_rows=_bootstrap_rows(metrics),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
