"""Selection with guaranteed risk (SGR) and the stored selective classifier (selective.json).

SGR is Algorithm 1 of Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks",
NeurIPS 2017: on a calibration set of m samples sorted by confidence, a binary search of
k = ceil(log2 m) steps over thresholds; at each step the Clopper-Pearson (binomial) upper bound
on the selective risk at confidence level 1 - delta/k is compared with the target r*. The union
bound over the k steps makes every tested bound hold simultaneously with probability at least
1 - delta, so we return the tested threshold with the largest coverage whose bound is below r*
(the paper outputs the last step, which is one of those when any exists). When no tested
threshold meets the target, no solution exists and the classifier abstains on everything.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import beta

from skinclf.errors import DataError
from skinclf.evaluate.scores import SCORES, compute_score
from skinclf.evaluate.selective import check_fraction


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """Clopper-Pearson one-sided upper bound b: P(Binomial(n, b) <= errors) = delta.

    This is B*(r, delta, S) of Geifman & El-Yaniv; 1.0 when every sample is an error.
    """
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, errors + 1, n - errors))


@dataclass(frozen=True)
class SGRResult:
    """The SGR selective classifier fitted on a calibration set."""

    target_risk: float
    delta: float
    solution_exists: bool
    threshold: float | None  # accept conf >= threshold; None: abstain on everything
    risk: float | None  # empirical selective risk on the calibration set
    coverage: float  # on the calibration set
    bound: float | None  # upper bound on the true selective risk (prob. >= 1 - delta)
    n: int
    n_accepted: int
    steps: int  # k = ceil(log2 m)


def sgr(
    conf: np.ndarray, residuals: np.ndarray, target_risk: float, delta: float = 0.05
) -> SGRResult:
    """Fit the SGR threshold (Geifman & El-Yaniv 2017, Algorithm 1) for `target_risk` r*.

    With probability at least 1 - delta over the calibration sample, the true selective risk
    of the returned threshold is at most `bound` < r*.
    """
    target_risk = check_fraction(target_risk, "target risk")
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta:g}")
    conf = np.asarray(conf, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    m = len(conf)
    if m < 2 or conf.shape != residuals.shape:
        raise ValueError("SGR needs at least 2 calibration samples with one residual each")
    order = np.argsort(conf, kind="stable")  # ascending, as in the paper
    sorted_conf = conf[order]
    k = math.ceil(math.log2(m))
    z_min, z_max = 1, m
    best: tuple[float, float, float, int, float] | None = None  # coverage, thr, risk, n, bound
    for _ in range(k):
        z = math.ceil((z_min + z_max) / 2)
        theta = sorted_conf[z - 1]
        accepted = conf >= theta
        n_acc = int(accepted.sum())
        errors = int(round(residuals[accepted].sum()))
        risk = errors / n_acc
        bound = binomial_upper_bound(errors, n_acc, delta / k)
        if bound < target_risk:
            z_max = z
            if best is None or n_acc > best[3]:
                best = (n_acc / m, float(theta), risk, n_acc, bound)
        else:
            z_min = z
    if best is None:
        return SGRResult(target_risk, delta, False, None, None, 0.0, None, m, 0, k)
    coverage, theta, risk, n_acc, bound = best
    return SGRResult(target_risk, delta, True, theta, risk, coverage, bound, m, n_acc, k)


@dataclass(frozen=True)
class ThresholdOutcome:
    """What a fixed threshold achieves on a labelled set."""

    coverage: float
    risk: float | None  # None when nothing is accepted
    n: int
    n_accepted: int
    target_met: bool  # risk <= target (vacuously true when nothing is accepted)


def apply_threshold(
    conf: np.ndarray, residuals: np.ndarray, threshold: float | None, target_risk: float
) -> ThresholdOutcome:
    """Accept conf >= threshold (None: accept nothing) and measure coverage and risk."""
    conf = np.asarray(conf, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    accepted = np.zeros(len(conf), bool) if threshold is None else conf >= threshold
    n_acc = int(accepted.sum())
    risk = float(residuals[accepted].mean()) if n_acc else None
    return ThresholdOutcome(
        coverage=n_acc / len(conf) if len(conf) else 0.0,
        risk=risk,
        n=len(conf),
        n_accepted=n_acc,
        target_met=risk is None or risk <= target_risk + 1e-12,
    )


# ---------------------------------------------------------------- selective.json


SELECTIVE_FORMAT_VERSION = 2
CONFIDENCE_GATES = ("sgr", "coverage", "off")


@dataclass(frozen=True)
class Selective:
    """The selective classifier `predict` reuses (selective.json).

    The confidence gate is `score` >= `threshold`; with `ood_gate` (an `OODGate` as a dict)
    an out-of-distribution gate runs first. Without one, this is the single-score classifier
    of format 1, whose files still load.
    """

    score: str  # a logit-only score: one of SCORES or msp_ts
    temperature: float | None  # fitted on val (None without); only msp_ts uses it
    threshold: float | None  # abstain when conf < threshold; None: abstain on everything
    target_risk: float
    delta: float
    solution_exists: bool
    fitted_on: str  # "calib" or "val"
    n_calib: int
    calib_coverage: float
    calib_risk: float | None
    bound: float | None
    note: str = ""
    format_version: int = SELECTIVE_FORMAT_VERSION
    confidence_gate: str = "sgr"  # sgr | coverage (threshold at target_coverage) | off
    target_coverage: float | None = None
    ood_gate: dict | None = None  # OODGate fields; None: no out-of-distribution gate

    def __getitem__(self, key: str):
        """Dict-style access to a field (`selective["score"]`), as in selective.json."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def gate(self):  # noqa: ANN201 (OODGate | None; imported lazily)
        from skinclf.evaluate.gates import OODGate

        return None if self.ood_gate is None else OODGate(**self.ood_gate)


def save_selective(selective: Selective, path: str | Path) -> Path:
    """Write selective.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(selective), indent=2) + "\n")
    return path


def load_selective(path: str | Path) -> Selective:
    """Read selective.json; DataError when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such selective.json; run `skinclf evaluate --val ... --out DIR` first."
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    fields = set(Selective.__dataclass_fields__)
    optional = {"note", "format_version", "confidence_gate", "target_coverage", "ood_gate"}
    required = fields - optional
    if not isinstance(data, dict) or required - set(data):
        missing = sorted(required - set(data)) if isinstance(data, dict) else sorted(required)
        raise DataError(f"{path}: missing key(s) {', '.join(missing)} in selective.json.")
    version = data.get("format_version", 1)
    if version not in (1, SELECTIVE_FORMAT_VERSION):
        raise DataError(
            f"{path}: selective.json format {version} is not one this skinclf reads "
            f"(1 or {SELECTIVE_FORMAT_VERSION}); evaluate again with this version."
        )
    selective = Selective(**{k: v for k, v in data.items() if k in fields})
    if selective.confidence_gate not in CONFIDENCE_GATES:
        raise DataError(
            f"{path}: confidence_gate {selective.confidence_gate!r} is not one of "
            f"{', '.join(CONFIDENCE_GATES)}."
        )
    if selective.score not in SCORES and selective.score != "msp_ts":
        raise DataError(
            f"{path}: score {selective.score!r} cannot be computed from logits; use one of "
            f"{', '.join([*SCORES, 'msp_ts'])}."
        )
    t = selective.temperature
    if t is not None and not (isinstance(t, int | float) and t > 0):
        raise DataError(f"{path}: temperature must be a positive number or null.")
    if selective.score == "msp_ts" and t is None:
        raise DataError(f"{path}: score msp_ts needs a temperature, but it is null.")
    return selective


def apply_selective(
    selective: Selective | dict, logits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (the stored score at the stored temperature) and abstain flags for logits.

    Abstain where conf < threshold, or everywhere when no threshold met the target risk. The
    confidence gate only: `apply_policy` applies the OOD gate too. `selective` may also be the
    dict read from selective.json.
    """
    if isinstance(selective, dict):
        fields = Selective.__dataclass_fields__
        selective = Selective(**{k: v for k, v in selective.items() if k in fields})
    conf = compute_score(selective.score, np.asarray(logits), selective.temperature)
    if selective.confidence_gate == "off":
        return conf, np.zeros(len(conf), dtype=bool)
    if selective.threshold is None:
        return conf, np.ones(len(conf), dtype=bool)
    return conf, conf < selective.threshold


def apply_policy(
    selective: Selective, logits: np.ndarray, gate_values: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, abstain, abstain_reason) of both gates.

    `gate_values`: the OOD gate's component scores per row (feature scores from
    `FeatureStats`; logit scores are computed here when missing). Reasons: "" (accepted),
    "unfamiliar" (OOD gate), "uncertain" (confidence gate).
    """
    from skinclf.evaluate.gates import decide

    logits = np.asarray(logits)
    conf = compute_score(selective.score, logits, selective.temperature)
    gate = selective.gate
    accept = None
    if gate is not None:
        values = dict(gate_values or {})
        for name in gate.components:
            if name not in values:
                try:
                    values[name] = compute_score(name, logits, selective.temperature)
                except KeyError:
                    raise DataError(
                        f"The OOD gate needs score {name!r}, which was not computed; it needs "
                        "the feature statistics saved beside selective.json."
                    ) from None
        accept = gate.accept(values)
    return (conf, *decide(accept, conf, selective.threshold, selective.confidence_gate != "off"))
