"""The key numbers `skinclf run` ends with, read from eval/metrics.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skinclf.contracts.metrics_report import MetricsReport, PolicyOutcome, SetMetrics


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ba(entry: SetMetrics) -> str:
    lo, hi = entry.balanced_accuracy_ci95 or (None, None)
    return f"{_num(entry.balanced_accuracy)} [{_num(lo)}, {_num(hi)}]"


def _report(metrics: MetricsReport | Mapping) -> MetricsReport:
    """metrics.json as a `MetricsReport` (a dict, e.g. read by `json.loads`, validated)."""
    return metrics if isinstance(metrics, MetricsReport) else MetricsReport.model_validate(metrics)


def _gated(m: MetricsReport, name: str) -> PolicyOutcome | None:
    """The gated classifier's outcome on set `name`, if there is a policy that measured it."""
    entry = m.policy.sets.get(name) if m.policy is not None else None
    return entry.gated if entry is not None else None


def key_numbers(metrics: MetricsReport | Mapping) -> list[tuple[str, str]]:
    """(what, value) rows: balanced accuracy with its 95 % interval per test set, selective
    balanced accuracy at 80 % coverage, and per OOD set the detection AUROC and the gated
    classifier's accepted accuracy."""
    m = _report(metrics)
    rows = [("test: balanced accuracy [95 % CI]", _ba(m.test))]
    for name, entry in (m.external or {}).items():
        rows.append((f"{name}: balanced accuracy [95 % CI]", _ba(entry)))
    score = m.sgr.score if m.sgr is not None else "msp"
    selective = (m.test.selective or {}).get(score)
    at80 = (selective.balanced_accuracy_at_coverage if selective is not None else None) or {}
    rows.append(
        (f"test: selective balanced accuracy at 80 % coverage ({score})", _num(at80.get("0.8")))
    )
    rows += _policy_rows(m)
    gate = m.policy.gate.score if m.policy is not None and m.policy.gate is not None else None
    for name, entry in (m.ood or {}).items():
        detection = entry.detection or {}
        used = gate if gate in detection else score if score in detection else "msp"
        found = detection.get(used)
        rows.append((f"{name}: OOD detection AUROC ({used})", _num(found.auroc if found else None)))
        gated = _gated(m, name)
        if gated is not None:
            coverage = f"gated, coverage {_num(gated.coverage)}"
            rows.append((f"{name}: accepted accuracy ({coverage})", _num(gated.accepted_accuracy)))
    return rows


def _policy_rows(m: MetricsReport) -> list[tuple[str, str]]:
    """The policy's target risk (and whether auto chose it) and what it does on the test set."""
    settings = m.settings
    risk = m.policy.target_risk if m.policy is not None else settings.target_risk
    block = m.policy or m.sgr
    if risk is None or block is None:
        return []
    how = " (auto)" if settings.target_risk_choice else ""
    rows = [(f"policy: target risk{how}", f"{risk:g}")]
    fitted = block.fit_outcome()
    coverage = fitted.coverage if fitted is not None else None
    if block.confidence_gate == "coverage":
        rows = [(f"policy: coverage target, no SGR guarantee{how}", _num(coverage))]
    if fitted is not None and fitted.bound is not None:
        on = f"{block.fitted_on} coverage {_num(coverage)}"
        rows.append((f"policy: stated risk (upper bound, {on})", _num(fitted.bound)))
    gated = _gated(m, "test")
    if gated is not None:
        rows.append(
            (
                f"test: accepted balanced accuracy (gated, coverage {_num(gated.coverage)})",
                _num(gated.accepted_balanced_accuracy),
            )
        )
    return rows


def policy_warning(metrics: MetricsReport | Mapping) -> str:
    """One sentence when the fitted policy abstains on every image (no threshold met its
    target risk); "" otherwise. `metrics`: metrics.json (`read_metrics`; a dict is validated)."""
    m = _report(metrics)
    policy, sgr = m.policy, m.sgr
    risk = policy.target_risk if policy is not None else m.settings.target_risk
    if policy is not None:
        never = policy.confidence_gate != "off" and policy.threshold is None
    else:
        never = sgr is not None and not sgr.solution_exists
    if not never:
        return ""
    return (
        f"this model's policy abstains on every image: SGR certified no confidence threshold "
        f"at target risk {risk:g} on the calibration data; run again with --target-risk auto "
        "(the lowest risk it can certify) or a higher one."
    )
