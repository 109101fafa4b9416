"""The selective classifier every step shares: selective.json, and how it decides.

`Selective` is the stored classifier: an optional out-of-distribution gate (`OODGate`, gate 1)
and a confidence gate (score >= threshold, gate 2). `apply_policy` turns logits (and the gate's
feature scores) into abstain flags with their reason; fitting lives in `skinclf.evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from skinclf.contracts.scores import SCORES, compute_score
from skinclf.errors import DataError

UNFAMILIAR = "unfamiliar"
UNCERTAIN = "uncertain"
REASON_MESSAGES = {
    UNFAMILIAR: "this does not look like the dermoscopic images the model was trained on",
    UNCERTAIN: "uncertain: refer to a dermatologist",
}


def combination_parts(name: str) -> list[str]:
    """Components of a combined score name `a+b` (a single score: itself)."""
    return [p.strip() for p in name.split("+") if p.strip()]


@dataclass(frozen=True)
class RankCombination:
    """Mean of the components' empirical CDFs against stored calibration values."""

    components: tuple[str, ...]
    calibration: tuple[np.ndarray, ...]  # sorted calibration values, one array per component

    def score(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        ranks = [
            np.searchsorted(calib, np.asarray(values[name], dtype=np.float64), side="right")
            / len(calib)
            for name, calib in zip(self.components, self.calibration, strict=True)
        ]
        return np.mean(ranks, axis=0)

    def to_json(self) -> dict:
        return {
            "components": list(self.components),
            "calibration": [c.tolist() for c in self.calibration],
        }

    @classmethod
    def from_json(cls, data: dict) -> RankCombination:
        return cls(
            tuple(data["components"]),
            tuple(np.sort(np.asarray(c, dtype=np.float64)) for c in data["calibration"]),
        )


@dataclass(frozen=True)
class OODGate:
    """Gate 1 of selective.json: accept when the gate score is >= threshold."""

    score: str  # a feature score, a logit score, or a combination `a+b`
    threshold: float
    id_keep: float  # the requested share of in-distribution calibration images kept
    id_kept: float  # the share actually kept on the calibration images (ties kept together)
    fitted_on: str  # "calib" or "val"
    n: int
    combination: dict | None = None  # RankCombination.to_json() for a combined score
    stats_file: str | None = None  # feature statistics beside selective.json
    chosen_by: str = ""  # how the score was chosen (e.g. --choose-gate's criterion)

    @property
    def components(self) -> list[str]:
        return combination_parts(self.score)

    def values(self, component_values: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.combination is not None:
            return RankCombination.from_json(self.combination).score(component_values)
        return np.asarray(component_values[self.score], dtype=np.float64)

    def accept(self, component_values: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.values(component_values) >= self.threshold


def decide(
    gate_accept: np.ndarray | None, conf: np.ndarray | None, threshold: float | None, on: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(abstain, reason) from gate 1's acceptances and the confidence gate.

    `gate_accept` None: no OOD gate. `on` False: no confidence gate. `threshold` None with the
    confidence gate on: abstain on everything that gate 1 let through (no SGR solution).
    """
    n = len(gate_accept) if gate_accept is not None else len(conf)  # type: ignore[arg-type]
    reason = np.full(n, "", dtype=object)
    passed = np.ones(n, bool) if gate_accept is None else np.asarray(gate_accept, bool)
    reason[~passed] = UNFAMILIAR
    if on:
        confident = np.zeros(n, bool) if threshold is None else np.asarray(conf) >= threshold
        reason[passed & ~confident] = UNCERTAIN
    return reason != "", reason


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

    @property
    def gate(self) -> OODGate | None:
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
    _check_values(data, path)
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


_NUMBERS = ("threshold", "target_risk", "delta", "calib_coverage", "calib_risk", "bound")
_NUMBERS += ("temperature", "target_coverage")
_REQUIRED_NUMBERS = ("target_risk", "delta", "calib_coverage")
_GATE_FIELDS = {
    "score": str,
    "threshold": float,
    "id_keep": float,
    "id_kept": float,
    "fitted_on": str,
    "n": int,
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _check_values(data: dict, path: Path) -> None:
    """DataError naming the first field of selective.json whose value has the wrong type (a
    package is refused when it loads, not answered with an error per request)."""
    for key in _NUMBERS:
        value = data.get(key)
        if (value is not None or key in _REQUIRED_NUMBERS) and not _is_number(value):
            raise DataError(f"{path}: {key} must be a number, not {value!r}; fit it again.")
    for key in ("score", "fitted_on", "confidence_gate"):
        if key in data and not isinstance(data[key], str):
            raise DataError(f"{path}: {key} must be a string, not {data[key]!r}; fit it again.")
    gate = data.get("ood_gate")
    if gate is None:
        return
    if not isinstance(gate, dict) or set(_GATE_FIELDS) - set(gate):
        raise DataError(f"{path}: ood_gate must be an object with {', '.join(_GATE_FIELDS)}.")
    unknown = set(gate) - set(OODGate.__dataclass_fields__)
    if unknown:
        raise DataError(f"{path}: ood_gate has unknown key(s) {', '.join(sorted(unknown))}.")
    for key, kind in _GATE_FIELDS.items():
        value = gate[key]
        ok = _is_number(value) if kind in (float, int) else isinstance(value, kind)
        if not ok:
            raise DataError(f"{path}: ood_gate.{key} must be a {kind.__name__}, not {value!r}.")


def apply_selective(selective: Selective, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (the stored score at the stored temperature) and abstain flags for logits.

    Abstain where conf < threshold, or everywhere when no threshold met the target risk. The
    confidence gate only: `apply_policy` applies the OOD gate too (read a file with
    `load_selective`).
    """
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
