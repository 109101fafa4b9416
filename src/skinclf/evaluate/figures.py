"""The evaluation report's figures (matplotlib, off-screen): each returns a base64 PNG.

The only module of `skinclf.evaluate` that draws; the report templates embed the images.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skinclf.classes import CLASSES
from skinclf.contracts.predictions import Predictions
from skinclf.contracts.selective import Selective
from skinclf.evaluate.calibration import reliability_diagram
from skinclf.policy.risk_coverage import risk_coverage_curve

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


def _figure(width: float, height: float):
    """An off-screen figure (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    """The figure as a base64 PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def fig_confusion(cm_counts: Sequence[Sequence[int]], title: str) -> str:
    """Confusion matrix normalised by true class, with each row's count."""
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
    """Per-class recall bars, one colour per set."""
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
    """Risk-coverage curves (plain and balanced risk) of every score on every set."""
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
    """Reliability diagrams before (and after) temperature scaling."""
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
    """Confidence per set (ticks for small sets), with the SGR threshold; "" if all empty."""
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
    """Risk-coverage of the gated and the single-score classifier on each set, with the
    operating points as dots."""
    from skinclf.policy.gates import apply_to

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
