"""report.html: one self-contained page (plots embedded as base64 PNGs) from metrics.json data."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions, softmax
from skinclf.contracts.selective import Selective
from skinclf.evaluate.calibration import reliability_diagram
from skinclf.evaluate.selective import risk_coverage_curve

_COLOURS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
]
_STYLES = ["-", "--", ":", "-."]
_MIN_HIST = 30  # fewer values than this are drawn as ticks, not as a histogram


@dataclass
class ScoredSet:
    """One predictions file with its confidence scores on every row (what the report draws)."""

    name: str
    kind: str  # "test", "val", "calib", "external" or "ood"
    preds: Predictions
    conf: dict[str, np.ndarray]


# ------------------------------------------------------------------ helpers


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "<b class=bad>no</b>"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _ci(values) -> str:
    if not values or values[0] is None:
        return ""
    return f" <span class=ci>[{_f(values[0])}, {_f(values[1])}]</span>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(text: object) -> str:
    return html.escape(str(text))


# ------------------------------------------------------------------ figures


def fig_confusion(cm_counts: Sequence[Sequence[int]], title: str) -> str:
    cm = np.asarray(cm_counts, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(totals > 0, cm / totals, np.nan)
    fig = _figure(5.6, 4.8)
    ax = fig.add_subplot()
    im = ax.imshow(np.nan_to_num(norm), vmin=0, vmax=1, cmap="Blues")
    k = len(CLASSES)
    ax.set_xticks(range(k), CLASSES)
    ax.set_yticks(range(k), [f"{c} ({int(t)})" for c, t in zip(CLASSES, totals[:, 0], strict=True)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (n)")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            if np.isnan(norm[i, j]):
                continue
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.6 else "black",
            )
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    return _png(fig)


def fig_recall(groups: dict[str, dict[str, float | None]]) -> str:
    fig = _figure(7.5, 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(CLASSES))
    for g, (name, recall) in enumerate(groups.items()):
        values = [np.nan if recall.get(c) is None else recall[c] for c in CLASSES]
        ax.bar(
            x + (g - (len(groups) - 1) / 2) * width,
            values,
            width,
            label=name,
            color=_COLOURS[g % len(_COLOURS)],
        )
    ax.set_xticks(x, CLASSES)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title("Per-class recall (missing bar: class absent)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_risk_coverage(
    sets: Sequence[ScoredSet], scores: Sequence[str], target_risk: float | None
) -> str:
    fig = _figure(11, 4.6)
    axes = fig.subplots(1, 2)
    kinds = [
        ("selective", "selective risk (error rate of accepted)"),
        ("selective_balanced", "balanced selective risk (mean class error rate)"),
    ]
    for ax, (risk, label) in zip(axes, kinds, strict=True):
        for si, s in enumerate(sets):
            p = s.preds
            m = p.labelled
            if m.sum() < 2:
                continue
            residuals = (p.pred[m] != p.y[m]).astype(float)
            for ci, name in enumerate(scores):
                if name not in s.conf:
                    continue
                curve = risk_coverage_curve(s.conf[name][m], residuals, risk, p.y[m])
                ax.plot(
                    curve.coverage[1:],
                    curve.risk[1:],
                    _STYLES[si % len(_STYLES)],
                    color=_COLOURS[ci % len(_COLOURS)],
                    lw=1.3,
                    label=f"{name}" if si == 0 else None,
                )
        if target_risk is not None:
            ax.axhline(target_risk, color="black", lw=0.8, ls=(0, (1, 3)))
        ax.set_xlabel("coverage")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    for si, s in enumerate(sets):
        handles.append(Line2D([], [], color="black", ls=_STYLES[si % len(_STYLES)]))
        labels.append(f"set: {s.name}")
    fig.legend(handles, labels, fontsize=8, ncol=min(len(labels), 6), loc="outside lower center")
    return _png(fig)


def fig_reliability(probs: np.ndarray, y: np.ndarray, probs_ts: np.ndarray | None) -> str:
    panels = [("before temperature scaling", probs)]
    if probs_ts is not None:
        panels.append(("after temperature scaling", probs_ts))
    fig = _figure(4.6 * len(panels), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, pr) in zip(axes, panels, strict=True):
        d = reliability_diagram(pr, y)
        centres = (d.edges[:-1] + d.edges[1:]) / 2
        width = d.edges[1] - d.edges[0]
        used = d.count > 0
        acc, conf = d.accuracy[used], d.confidence[used]
        ax.bar(centres[used], acc, width * 0.95, color="#1f77b4", label="accuracy")
        ax.bar(
            centres[used],
            np.abs(conf - acc),
            width * 0.95,
            bottom=np.minimum(acc, conf),
            facecolor="none",
            edgecolor="#d62728",
            hatch="///",
            lw=0.8,
            label="gap to mean confidence",
        )
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE = {d.ece:.3f} (15 bins)")
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def fig_histograms(groups: dict[str, np.ndarray], score: str, threshold: float | None) -> str:
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot()
    finite = [v for v in groups.values() if len(v)]
    if not finite:
        return ""
    values = np.concatenate(finite)
    bins = np.linspace(values.min(), values.max(), 31) if values.max() > values.min() else 10
    for gi, (name, v) in enumerate(groups.items()):
        colour = _COLOURS[gi % len(_COLOURS)]
        if len(v) >= _MIN_HIST:
            ax.hist(
                v,
                bins=bins,
                density=True,
                histtype="step",
                lw=1.6,
                color=colour,
                label=f"{name} (n={len(v)})",
            )
        elif len(v):  # too few for a histogram: one tick per image along the axis
            ax.plot(
                v,
                np.zeros(len(v)),
                "|",
                ms=18,
                mew=2,
                color=colour,
                label=f"{name} (n={len(v)}, one tick each)",
                clip_on=False,
            )
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label="SGR threshold")
    ax.set_xlabel(f"confidence: {score}")
    ax.set_ylabel("density")
    ax.set_title(f"Confidence ({score}) by set")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


# ------------------------------------------------------------------ sections


def _overview(metrics: dict) -> str:
    t = metrics["test"]
    cal = metrics.get("calibration", {})
    rows = [
        ["images (labelled)", _f(t["n"])],
        ["accuracy", _f(t["accuracy"])],
        [
            "balanced accuracy [95 % CI]",
            _f(t["balanced_accuracy"]) + _ci(t["balanced_accuracy_ci95"]),
        ],
        ["macro-F1", _f(t["macro_f1"])],
        ["macro one-vs-rest AUROC", _f(t["auroc_ovr_macro"])],
        ["NLL", _f(t["nll"])],
        ["Brier", _f(t["brier"])],
        ["ECE (15 bins)", _f(t["ece"])],
    ]
    if cal:
        c = cal["test"]
        rows += [
            ["temperature (fitted on val)", _f(cal["temperature"])],
            ["NLL after temperature scaling", _f(c["nll_after"])],
            ["ECE after temperature scaling", _f(c["ece_after"])],
        ]
    return _table(["test set", "value"], rows)


def _baselines(metrics: dict) -> str:
    t, b = metrics["test"], metrics["test"]["baselines"]
    rows = [
        ["this model", _f(t["accuracy"]), _f(t["balanced_accuracy"]), _f(t["macro_f1"])],
        [
            f"majority class ({_e(b['majority']['class'])})",
            _f(b["majority"]["accuracy"]),
            _f(b["majority"]["balanced_accuracy"]),
            _f(b["majority"]["macro_f1"]),
        ],
        [
            "prior sampling (expected)",
            _f(b["prior_sampling"]["accuracy"]),
            _f(b["prior_sampling"]["balanced_accuracy"]),
            "–",
        ],
    ]
    note = (
        f"<p class=small>Class prior taken from the {_e(b['prior_from'])} labels. "
        "Accuracy rewards always answering the majority class; balanced accuracy does "
        "not.</p>"
    )
    return _table(["predictor", "accuracy", "balanced accuracy", "macro-F1"], rows) + note


def _per_class(metrics: dict) -> str:
    t = metrics["test"]
    cm = np.asarray(t["confusion_matrix"])
    oods = metrics.get("ood", {})
    header = ["class", "n", "recall", "precision", "AUROC (one-vs-rest)"] + [
        f"recall on {_e(n)}" for n, o in oods.items() if "recall" in o
    ]
    rows = []
    for i, c in enumerate(CLASSES):
        row = [
            c,
            str(int(cm[i].sum())),
            _f(t["recall"][c]),
            _f(t["precision"][c]),
            _f(t["auroc_ovr"][c]),
        ]
        row += [_f(o["recall"][c]) for o in oods.values() if "recall" in o]
        rows.append(row)
    return _table(header, rows)


def _selective_table(metrics: dict) -> str:
    sel = metrics["test"]["selective"]
    r = metrics["settings"]["target_risk"]
    rows = []
    for name, s in sel.items():
        rows.append(
            [
                _e(name),
                _f(s["aurc"]),
                _f(s["e_aurc"]),
                _f(s["augrc"]),
                _f(s["aurc_balanced"]),
                _f(s["augrc_balanced"]),
                _f(s["failure_auroc"]),
                _f(s.get("coverage_at_risk", {}).get(str(float(r)))),
            ]
        )
    return _table(
        [
            "score",
            "AURC",
            "E-AURC",
            "AUGRC",
            "AURC balanced",
            "AUGRC balanced",
            "failure AUROC",
            f"coverage at risk ≤ {r:g} (empirical)",
        ],
        rows,
    )


def _coverage_table(block: dict, coverages: Sequence[float]) -> str:
    keys = [str(float(c)) for c in coverages]
    rows = []
    for name, s in block.items():
        row = [_e(name)]
        for k in keys:
            ba, acc = s["balanced_accuracy_at_coverage"][k], s["accuracy_at_coverage"][k]
            row.append(f"{_f(ba)} <span class=ci>({_f(acc)})</span>")
        rows.append(row)
    return _table(["score"] + [f"coverage {float(k):.0%}" for k in keys], rows)


def _sgr_table(metrics: dict) -> str:
    g = metrics["sgr"]
    fit = g[g["fitted_on"]]
    rows = [
        [
            f"{_e(g['fitted_on'])} (fitted)",
            _f(fit["n"]),
            _f(fit["coverage"]),
            _f(fit["risk"]),
            _f(fit["bound"]),
            _f(fit["bound"] is not None and fit["bound"] < g["target_risk"]),
        ]
    ]
    t = g["test"]
    rows.append(["test", _f(t["n"]), _f(t["coverage"]), _f(t["risk"]), "", _f(t["target_met"])])
    for name, o in metrics.get("ood", {}).items():
        if "coverage_at_threshold" in o and o["n_mapped"] == 0 and o["n_semantic_ood"] == 0:
            rows.append(
                [f"{_e(name)} (unlabelled)", _f(o["n"]), _f(o["coverage_at_threshold"])]
                + ["", "", ""]
            )
        if "sgr" in o:
            s = o["sgr"]
            rows.append(
                [
                    f"{_e(name)} (mapped classes)",
                    _f(s["n"]),
                    _f(s["coverage"]),
                    _f(s["risk"]),
                    "",
                    _f(s["target_met"]),
                ]
            )
        if "semantic_ood" in o:
            s = o["semantic_ood"]
            rows.append(
                [
                    f"{_e(name)} incl. semantic OOD as errors",
                    _f(o["n_mapped"] + s["n"]),
                    _f(s["coverage_with_semantic_ood"]),
                    _f(s["risk_with_semantic_ood_as_errors"]),
                    "",
                    _f((s["risk_with_semantic_ood_as_errors"] or 0) <= g["target_risk"]),
                ]
            )
    head = (
        f"<p>Score <b>{_e(g['score'])}</b>, target risk r* = {g['target_risk']:g}, "
        f"δ = {g['delta']:g}, threshold = {_f(g['threshold'], 4)}"
        f"{'' if g['solution_exists'] else ' — <b class=bad>no solution</b>'}. "
        "With probability at least 1 − δ over the calibration sample, the selective risk on "
        "new images from the same distribution is at most the risk bound (Geifman &amp; "
        "El-Yaniv 2017). The out-of-distribution rows show how the same threshold behaves "
        "under shift, where no guarantee holds.</p>"
    )
    return head + _table(
        ["set", "n", "coverage", "selective risk", "risk bound", "target met"], rows
    )


def _ood_tables(metrics: dict, coverages: Sequence[float]) -> str:
    oods = metrics.get("ood", {})
    if not oods:
        return "<p>No out-of-distribution set given (--ood).</p>"
    parts = []
    rows = []
    for name, o in oods.items():
        s = o.get("semantic_ood", {})
        rows.append(
            [
                _e(name),
                _f(o["n"]),
                _f(o["n_mapped"]),
                _f(o.get("accuracy")),
                _f(o.get("balanced_accuracy")),
                _f(o.get("macro_f1")),
                _f(o["n_semantic_ood"]),
                _f(s.get("abstention_rate")),
            ]
        )
    parts.append(
        _table(
            [
                "set",
                "n",
                "n mapped",
                "accuracy",
                "balanced accuracy",
                "macro-F1",
                "n semantic OOD",
                "semantic OOD abstention rate",
            ],
            rows,
        )
    )
    scores = sorted(
        {s for o in oods.values() for s in o["detection"]},
        key=lambda s: list(metrics["scores"]).index(s),
    )
    header = ["score"] + [h for n in oods for h in (f"AUROC {_e(n)}", f"FPR@95%TPR {_e(n)}")]
    rows = []
    for s in scores:
        row = [_e(s)]
        for o in oods.values():
            d = o["detection"].get(s, {})
            row += [_f(d.get("auroc")), _f(d.get("fpr_at_95_tpr"))]
        rows.append(row)
    parts.append("<h3>OOD detection (in-distribution test = positive)</h3>" + _table(header, rows))
    for name, o in oods.items():
        if "selective" in o:
            parts.append(
                f"<h3>Selective balanced accuracy (accuracy) on {_e(name)}, mapped "
                "classes</h3>" + _coverage_table(o["selective"], coverages)
            )
    return "".join(parts)


def _bootstrap_table(metrics: dict) -> str:
    t = metrics["test"]
    rows = [
        ["balanced accuracy", "–", _f(t["balanced_accuracy"]) + _ci(t["balanced_accuracy_ci95"])]
    ]
    for name, s in t["selective"].items():
        rows.append(["AURC", _e(name), _f(s["aurc"]) + _ci(s.get("aurc_ci95"))])
        rows.append(["AUGRC", _e(name), _f(s["augrc"]) + _ci(s.get("augrc_ci95"))])
    n = metrics["settings"]["n_bootstrap"]
    return (
        f"<p class=small>Stratified by class, {n} resamples, seed "
        f"{metrics['settings']['seed']}, percentile intervals.</p>"
        + _table(["metric", "score", "value [95 % CI]"], rows)
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:4px;
margin-top:32px}h3{font-size:1.05em;margin-top:20px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.88em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}
.ci{color:#777;font-size:0.9em}.small{color:#555;font-size:0.85em}.bad{color:#b00}
.note{background:#fff6e0;border-left:4px solid #e0a000;padding:6px 10px;margin:6px 0}
img{max-width:100%;height:auto}.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
"""


def write_report(
    path: str | Path,
    metrics: dict,
    sets: Sequence[ScoredSet],
    temperature: float | None = None,
    selective: Selective | None = None,
    gated: Selective | None = None,
) -> Path:
    """Render report.html from the metrics and the scored prediction sets (`gated`: the
    selective classifier with an OOD gate, shown against `selective`)."""
    path = Path(path)
    test = next(s for s in sets if s.kind == "test")
    oods = [s for s in sets if s.kind == "ood"]
    tp = test.preds
    tm = tp.labelled
    scores = list(metrics["scores"])
    coverages = metrics["settings"]["coverages"]
    target = metrics["settings"]["target_risk"] if selective is not None else None

    recall_groups = {"test": metrics["test"]["recall"]}
    for name, o in metrics.get("ood", {}).items():
        if "recall" in o:
            recall_groups[name] = o["recall"]
    probs_ts = softmax(tp.logits[tm], temperature) if temperature else None

    hist_score = selective.score if selective else "msp"
    hist_groups: dict[str, np.ndarray] = {}
    if hist_score in test.conf:
        hist_groups["ID test"] = test.conf[hist_score][tm]
        for s in oods:
            if hist_score in s.conf:
                hist_groups[f"OOD {s.name} (mapped)"] = s.conf[hist_score][s.preds.labelled]
                unlabelled = ~s.preds.labelled & ~s.preds.semantic_ood
                if unlabelled.any():
                    hist_groups[f"OOD {s.name} (unlabelled)"] = s.conf[hist_score][unlabelled]
        scc = [
            s.conf[hist_score][s.preds.semantic_ood] for s in [test, *oods] if hist_score in s.conf
        ]
        hist_groups["semantic OOD (e.g. SCC)"] = np.concatenate(scc) if scc else np.zeros(0)

    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>skinclf evaluation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>skinclf evaluation report</h1>",
        f"<p class=small>Test file: {_e(metrics['settings']['files']['test'])}. "
        f"Classes: {', '.join(CLASSES)}. Scores: {_e(', '.join(scores))}.</p>",
    ]
    for note in metrics.get("notes", []):
        parts.append(f"<div class=note>{_e(note)}</div>")
    parts += [
        "<h2>Classification (in-distribution test)</h2><div class=row>",
        _overview(metrics),
        fig_confusion(metrics["test"]["confusion_matrix"], "Normalised confusion matrix (test)"),
        "</div>",
        "<h3>Baselines</h3>",
        _baselines(metrics),
        "<h3>Per class</h3>",
        _per_class(metrics),
        fig_recall(recall_groups),
        "<h2>Calibration</h2>",
        fig_reliability(tp.probs[tm], tp.y[tm], probs_ts),
        "<h2>Selective classification</h2>",
        "<p class=small>Risk-coverage curves of every score: solid = in-distribution test, "
        "other line styles = out-of-distribution sets (mapped classes). Dotted horizontal line: "
        "target risk.</p>",
        fig_risk_coverage([test, *oods], scores, target),
        "<h3>Areas under the risk-coverage curves (test; lower is better)</h3>",
        _selective_table(metrics),
        "<h3>Selective balanced accuracy (accuracy) per coverage, test</h3>",
        _coverage_table(metrics["test"]["selective"], coverages),
        "<h2>Selection with guaranteed risk (SGR)</h2>",
        _sgr_table(metrics)
        if "sgr" in metrics
        else "<p>Not fitted: give --val or --calib predictions.</p>",
        "<h2>Out-of-distribution</h2>",
        _ood_tables(metrics, coverages),
    ]
    if hist_groups:
        parts += [
            "<h3>Confidence histograms</h3>",
            fig_histograms(hist_groups, hist_score, selective.threshold if selective else None),
        ]
    if gated is not None and "policy" in metrics:
        from skinclf.evaluate.report_shift import policy_section

        shown = [s for s in sets if s.kind in ("test", "external", "ood")]
        section = policy_section(metrics, shown, gated, selective)
        parts += ["<h2>Abstaining under shift</h2>", section]
    parts += ["<h2>Uncertainty of the numbers</h2>", _bootstrap_table(metrics), "</body></html>"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
