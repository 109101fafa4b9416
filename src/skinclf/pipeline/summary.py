"""The key numbers `skinclf run` ends with, read from eval/metrics.json."""

from __future__ import annotations

from typing import Any


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ba(entry: dict) -> str:
    lo, hi = entry.get("balanced_accuracy_ci95") or (None, None)
    return f"{_num(entry.get('balanced_accuracy'))} [{_num(lo)}, {_num(hi)}]"


def key_numbers(metrics: dict) -> list[tuple[str, str]]:
    """(what, value) rows: balanced accuracy with its 95 % interval per test set, selective
    balanced accuracy at 80 % coverage, and per OOD set the detection AUROC and the gated
    classifier's accepted accuracy."""
    rows = [("test: balanced accuracy [95 % CI]", _ba(metrics["test"]))]
    for name, entry in metrics.get("external", {}).items():
        rows.append((f"{name}: balanced accuracy [95 % CI]", _ba(entry)))
    score = metrics.get("sgr", {}).get("score", "msp")
    at80 = metrics["test"]["selective"].get(score, {}).get("balanced_accuracy_at_coverage", {})
    rows.append(
        (f"test: selective balanced accuracy at 80 % coverage ({score})", _num(at80.get("0.8")))
    )
    policy = metrics.get("policy", {})
    rows += _policy_rows(metrics)
    gate = (policy.get("gate") or {}).get("score")
    for name, entry in metrics.get("ood", {}).items():
        detection = entry.get("detection", {})
        used = gate if gate in detection else score if score in detection else "msp"
        auroc = detection.get(used, {}).get("auroc")
        rows.append((f"{name}: OOD detection AUROC ({used})", _num(auroc)))
        gated = policy.get("sets", {}).get(name, {}).get("gated")
        if gated is not None:
            coverage = f"gated, coverage {_num(gated.get('coverage'))}"
            rows.append(
                (f"{name}: accepted accuracy ({coverage})", _num(gated.get("accepted_accuracy")))
            )
    return rows


def _policy_rows(metrics: dict) -> list[tuple[str, str]]:
    """The policy's target risk (and whether auto chose it) and what it does on the test set."""
    settings = metrics.get("settings", {})
    risk = metrics.get("policy", {}).get("target_risk", settings.get("target_risk"))
    if risk is None or ("policy" not in metrics and "sgr" not in metrics):
        return []
    how = " (auto)" if settings.get("target_risk_choice") else ""
    rows = [(f"policy: target risk{how}", f"{risk:g}")]
    policy = metrics.get("policy") or metrics.get("sgr", {})
    fitted = policy.get(policy.get("fitted_on", ""), {})
    if policy.get("confidence_gate") == "coverage":
        rows = [(f"policy: coverage target, no SGR guarantee{how}", _num(fitted.get("coverage")))]
    if fitted.get("bound") is not None:
        on = f"{policy['fitted_on']} coverage {_num(fitted.get('coverage'))}"
        rows.append((f"policy: stated risk (upper bound, {on})", _num(fitted["bound"])))
    gated = metrics.get("policy", {}).get("sets", {}).get("test", {}).get("gated")
    if gated is not None:
        rows.append(
            (
                f"test: accepted balanced accuracy (gated, coverage {_num(gated.get('coverage'))})",
                _num(gated.get("accepted_balanced_accuracy")),
            )
        )
    return rows


def policy_warning(metrics: dict) -> str:
    """One sentence when the fitted policy abstains on every image (no threshold met its
    target risk); "" otherwise."""
    policy, sgr = metrics.get("policy"), metrics.get("sgr")
    risk = (policy or {}).get("target_risk", metrics.get("settings", {}).get("target_risk"))
    if policy is not None:
        never = policy.get("confidence_gate", "sgr") != "off" and policy.get("threshold") is None
    else:
        never = sgr is not None and not sgr.get("solution_exists", True)
    if not never:
        return ""
    return (
        f"this model's policy abstains on every image: SGR certified no confidence threshold "
        f"at target risk {risk:g} on the calibration data; run again with --target-risk auto "
        "(the lowest risk it can certify) or a higher one."
    )
