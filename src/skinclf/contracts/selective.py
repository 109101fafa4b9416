"""The selective classifier every step shares: selective.json, and how it decides.

`Selective` is the stored classifier: an optional out-of-distribution gate (`OODGate`, gate 1)
and a confidence gate (score >= threshold, gate 2). `apply_policy` turns logits (and the gate's
feature scores) into abstain flags with their reason; fitting lives in `skinclf.policy`.
selective.json is read through its schema (`SelectiveFile`, `OODGateFile`): a file with a
missing key or a wrong value is refused when it loads, in one sentence naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

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
ConfidenceGate = Literal["sgr", "coverage", "off"]
CONFIDENCE_GATES: tuple[str, ...] = get_args(ConfidenceGate)
FormatVersion = Literal[1, SELECTIVE_FORMAT_VERSION]  # 1: no OOD gate, no confidence_gate


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


# selective.json read through a schema: a package is refused when it loads, in one sentence,
# not answered with an error per request. Numbers are JSON numbers (not true/false, not
# strings) and finite; strings are JSON strings.
_SENTENCE = "selective_sentence"  # the type of the errors whose message is the whole sentence


def _refuse(sentence: str) -> PydanticCustomError:
    return PydanticCustomError(_SENTENCE, "{sentence}", {"sentence": sentence})


def _logit_score(name: str) -> str:
    if name not in SCORES and name != "msp_ts":
        raise _refuse(
            f"score {name!r} cannot be computed from logits; use one of "
            f"{', '.join([*SCORES, 'msp_ts'])}."
        )
    return name


def _positive(t: float | None) -> float | None:
    if t is not None and t <= 0:
        raise _refuse("temperature must be a positive number or null.")
    return t


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Text = Annotated[str, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]


class CombinationFile(BaseModel):
    """An OOD gate's `combination` (`RankCombination.to_json()`)."""

    components: list[Text]
    calibration: list[list[Annotated[float, Field(strict=True)]]]


class OODGateFile(BaseModel):
    """selective.json's `ood_gate` (`OODGate`'s fields); an unknown key is refused."""

    model_config = ConfigDict(extra="forbid")
    score: Text
    threshold: Number
    id_keep: Number
    id_kept: Number
    fitted_on: Text
    n: Count
    combination: CombinationFile | None = None
    stats_file: Text | None = None
    chosen_by: Text = ""


class SelectiveFile(BaseModel):
    """selective.json (format 1 or 2): `Selective`'s fields; other keys (the policy's `fit`
    record) are kept in `model_extra` for the policy to read."""

    model_config = ConfigDict(extra="allow")
    score: Annotated[Text, AfterValidator(_logit_score)]
    temperature: Annotated[Number | None, AfterValidator(_positive)]
    threshold: Number | None
    target_risk: Number
    delta: Number
    solution_exists: Annotated[bool, Field(strict=True)]
    fitted_on: Text
    n_calib: Count
    calib_coverage: Number
    calib_risk: Number | None
    bound: Number | None
    note: Text = ""
    format_version: FormatVersion = 1
    confidence_gate: ConfidenceGate = "sgr"
    target_coverage: Number | None = None
    ood_gate: OODGateFile | None = None

    @model_validator(mode="after")
    def _msp_ts_has_a_temperature(self) -> SelectiveFile:
        if self.score == "msp_ts" and self.temperature is None:
            raise _refuse("score msp_ts needs a temperature, but it is null.")
        return self

    def to_selective(self) -> Selective:
        """The stored classifier: the keys the file has (a format 1 file: the defaults of the
        keys it lacks), without the other keys."""
        return Selective(**self.model_dump(exclude_unset=True, exclude=set(self.model_extra or ())))


_KINDS = {
    "float_type": "a number",
    "finite_number": "a number",
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _rank(err: ErrorDetails) -> int:
    """Which error a file is refused for: missing keys (or not an object at all), then the
    format version, then the first wrong value."""
    loc = err["loc"]
    if (err["type"] == "missing" and len(loc) == 1) or (err["type"] == "model_type" and not loc):
        return 0
    return 1 if loc == ("format_version",) else 2


def _sentence(exc: ValidationError) -> str:
    """One sentence from the first error (`_rank`); missing or unknown keys named together."""
    errors = exc.errors()
    err = min(errors, key=_rank)
    kind, loc, value = err["type"], err["loc"], err["input"]
    where = ".".join(map(str, loc))
    if kind == _SENTENCE:
        return err["msg"]
    if _rank(err) == 0:
        present = value if isinstance(value, dict) else {}
        fields = SelectiveFile.model_fields
        missing = sorted(k for k, f in fields.items() if f.is_required() and k not in present)
        return f"missing key(s) {', '.join(missing)} in selective.json."
    if loc == ("format_version",):
        readable = " or ".join(map(str, get_args(FormatVersion)))
        return (
            f"selective.json format {value} is not one this skinclf reads ({readable}); "
            "evaluate again with this version."
        )
    if loc[0] == "ood_gate" and (kind, len(loc)) in (("model_type", 1), ("missing", 2)):
        required = [k for k, f in OODGateFile.model_fields.items() if f.is_required()]
        return f"ood_gate must be an object with {', '.join(required)}."
    if kind == "extra_forbidden":
        same = [e for e in errors if e["type"] == kind and e["loc"][:-1] == loc[:-1]]
        unknown = sorted(str(e["loc"][-1]) for e in same)
        return f"{'.'.join(map(str, loc[:-1]))} has unknown key(s) {', '.join(unknown)}."
    if kind == "literal_error":
        choices = get_args(SelectiveFile.model_fields[str(loc[0])].annotation)
        return f"{where} {value!r} is not one of {', '.join(map(str, choices))}."
    expected = _KINDS.get(kind, f"valid ({err['msg']})")
    return f"{where} must be {expected}, not {value!r}; fit it again."


def save_selective(selective: Selective, path: str | Path) -> Path:
    """Write selective.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(selective), indent=2) + "\n")
    return path


def read_selective(path: str | Path) -> SelectiveFile:
    """selective.json checked against its schema (`SelectiveFile`, its other keys kept); a
    DataError in one sentence naming the file when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such selective.json; run `skinclf evaluate --val ... --out DIR` first."
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    try:
        return SelectiveFile.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"{path}: {_sentence(exc)}") from None


def load_selective(path: str | Path) -> Selective:
    """Read selective.json; DataError when it is missing or malformed."""
    return read_selective(path).to_selective()


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
