"""metrics.json, the evaluate step's measurements, as a typed `MetricsReport`.

Its top-level sections are typed: `test` and `val` (`SetMetrics`), `calibration`, `sgr`, `ood`
and `external` (set name -> `OodSet` / `ExternalSet`), `policy`, `scores`, `settings` and
`notes`; inside them the numbers readers use are typed, optional where a set may lack them.
Every other key is kept as it is (`extra="allow"`), so the file round-trips:
`MetricsReport.model_validate(d).model_dump()` is `d` again, in the same key order (each block
remembers the order it was read in; a key it was not given is never written, so a set that
lacks a number keeps lacking it) and with its NaN values. `MetricsReport.save` writes the file
(atomically) and `read_metrics` reads one with a one-sentence `DataError`.

It lives in contracts (not in `skinclf.evaluate`, which writes it) because its readers sit in
every layer: the CLI and the pipeline's summary, and the model card of `skinclf export`
(`skinclf.predictor`, which never imports evaluate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from skinclf.errors import DataError

__all__ = [
    "Baselines",
    "Calibration",
    "Detection",
    "ExternalSet",
    "FitOutcome",
    "GateInfo",
    "MetricsReport",
    "OodSet",
    "Outcome",
    "PolicyBlock",
    "PolicyOutcome",
    "PolicySet",
    "SelectiveScore",
    "SetMetrics",
    "Settings",
    "SgrBlock",
    "read_metrics",
]


def _number(value: Any) -> float:
    """A JSON number kept as it is (an int stays an int, NaN stays NaN); never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number", "Input should be a number")
    return value


Number = Annotated[float, PlainValidator(_number)]
Interval = list[Number | None]  # a 95 % interval [low, high]
ByKey = dict[str, Number | None]  # per class, per coverage ("0.8"), per risk


class _Block(BaseModel):
    """A block of metrics.json: its keys written back in the order they were read (a block
    built by keyword: the declared fields' order, then the others), only the keys it was given,
    every other key kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    _keys: tuple[str, ...] = PrivateAttr(default=())

    def __init__(self, /, **data: Any) -> None:
        super().__init__(**data)
        self._keys = ()  # built by keyword: the declared order, not the keywords'

    @model_validator(mode="wrap")
    @classmethod
    def _remember_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        block = handler(data)
        if isinstance(data, dict) and isinstance(block, _Block):
            block._keys = tuple(data)
        return block

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        given = self.model_fields_set | set(self.model_extra or ())
        order = [k for k in self._keys if k in given] + [k for k in out if k not in self._keys]
        return {k: out[k] for k in order if k in out and k in given}


class SelectiveScore(_Block):
    """One confidence score's selective metrics (`test.selective[score]`; val has `aurc`)."""

    aurc: Number | None = None
    e_aurc: Number | None = None
    augrc: Number | None = None
    aurc_balanced: Number | None = None
    augrc_balanced: Number | None = None
    failure_auroc: Number | None = None
    accuracy_at_coverage: ByKey | None = None
    balanced_accuracy_at_coverage: ByKey | None = None
    achieved_coverage: ByKey | None = None
    coverage_at_risk: ByKey | None = None
    aurc_ci95: Interval | None = None
    augrc_ci95: Interval | None = None


class Baseline(_Block):
    """A trivial predictor's numbers (the majority one also has its `class`)."""

    accuracy: Number | None = None
    balanced_accuracy: Number | None = None
    macro_f1: Number | None = None

    @property
    def class_name(self) -> str | None:
        """The majority baseline's class (key `class`)."""
        return (self.model_extra or {}).get("class")


class Baselines(_Block):
    """The test set's baselines: the majority class and prior sampling."""

    prior_from: str | None = None
    majority: Baseline | None = None
    prior_sampling: Baseline | None = None


class SetMetrics(_Block):
    """A set's common numbers, as `classification_metrics` writes them (val: n, accuracy,
    balanced accuracy and selective AURC only; the test set also has `baselines`)."""

    n: int
    accuracy: Number | None = None
    balanced_accuracy: Number | None = None
    macro_f1: Number | None = None
    recall: ByKey | None = None
    precision: ByKey | None = None
    auroc_ovr: ByKey | None = None
    auroc_ovr_macro: Number | None = None
    nll: Number | None = None
    brier: Number | None = None
    ece: Number | None = None
    confusion_matrix: list[list[int]] | None = None
    balanced_accuracy_ci95: Interval | None = None
    selective: dict[str, SelectiveScore] | None = None
    baselines: Baselines | None = None


class CalibrationSummary(_Block):
    """NLL and ECE before and after temperature scaling on one set."""

    temperature: Number | None = None
    nll_before: Number | None = None
    nll_after: Number | None = None
    ece_before: Number | None = None
    ece_after: Number | None = None


class Calibration(_Block):
    """Temperature scaling: the temperature fitted on val, and its effect on val and test."""

    temperature: Number | None = None
    fitted_on: str | None = None
    val: CalibrationSummary | None = None
    test: CalibrationSummary | None = None


class Outcome(_Block):
    """A confidence threshold applied to a labelled set."""

    coverage: Number | None = None
    risk: Number | None = None
    n: int | None = None
    n_accepted: int | None = None
    target_met: bool | None = None


class FitOutcome(_Block):
    """A classifier on the set it was fitted on (the block keyed by its `fitted_on`)."""

    n: int | None = None
    n_accepted: int | None = None
    coverage: Number | None = None
    risk: Number | None = None
    bound: Number | None = None


class SemanticOod(_Block):
    """How a threshold treats the semantic OOD rows (no valid class)."""

    n: int | None = None
    abstention_rate: Number | None = None
    coverage_with_semantic_ood: Number | None = None
    risk_with_semantic_ood_as_errors: Number | None = None


class Detection(_Block):
    """How well a score tells two sets apart."""

    auroc: Number | None = None
    fpr_at_95_tpr: Number | None = None


def _fitted(block: _Block, fitted_on: str) -> FitOutcome | None:
    """The block's key `fitted_on` (not a declared field: "calib" or "val")."""
    value = (block.model_extra or {}).get(fitted_on)
    return FitOutcome.model_validate(value) if isinstance(value, dict) else None


class SgrBlock(_Block):
    """The single-score selective classifier (SGR): its fit (the block keyed by `fitted_on`,
    `fit_outcome()`) and its threshold on test."""

    score: str
    temperature: Number | None = None
    target_risk: Number
    delta: Number | None = None
    fitted_on: str
    confidence_gate: str | None = None
    solution_exists: bool
    threshold: Number | None = None
    steps: int | None = None
    test: Outcome | None = None
    note: str | None = None
    test_semantic_ood: SemanticOod | None = None

    def fit_outcome(self) -> FitOutcome | None:
        """The classifier on the set it was fitted on."""
        return _fitted(self, self.fitted_on)


class OodSet(SetMetrics):
    """An out-of-distribution set: detection against test, metrics on its mapped rows, and the
    SGR threshold on it."""

    n_mapped: int | None = None
    n_semantic_ood: int | None = None
    detection: dict[str, Detection] | None = None
    coverage_at_threshold: Number | None = None
    sgr: Outcome | None = None
    semantic_ood: SemanticOod | None = None
    detection_vs_external: dict[str, dict[str, Detection]] | None = None


class ExternalSet(SetMetrics):
    """A labelled set from another source, and how well each score tells it from test."""

    detection_vs_test: dict[str, Detection] | None = None


class GateInfo(_Block):
    """The policy's OOD gate."""

    score: str
    threshold: Number | None = None
    id_keep: Number | None = None
    id_kept: Number | None = None
    fitted_on: str | None = None
    n: int | None = None
    combination: dict[str, Any] | None = None
    stats_file: str | None = None
    chosen_by: str | None = None


class PolicyOutcome(_Block):
    """What a gated (or single-score) classifier did on one set, with intervals."""

    n: int | None = None
    coverage: Number | None = None
    accepted_accuracy: Number | None = None
    accepted_balanced_accuracy: Number | None = None
    silent_failure_rate: Number | None = None
    semantic_ood_abstention: Number | None = None
    reasons: dict[str, int] | None = None
    coverage_ci95: Interval | None = None
    silent_failure_rate_ci95: Interval | None = None
    accepted_balanced_accuracy_ci95: Interval | None = None


class PolicySet(_Block):
    """The gated classifier on one set, the single-score one, and the comparison at the same
    coverage; `subgroups` per metadata column."""

    gated: PolicyOutcome
    single_score: PolicyOutcome | None = None
    vs_msp_same_coverage: dict[str, Any] | None = None
    subgroups: dict[str, Any] | None = None


class PolicyBlock(_Block):
    """The gated selective classifier: its gates, how the gate was chosen (`choice...`), its fit
    (the block keyed by `fitted_on`, `fit_outcome()`) and every set."""

    fitted_on: str
    id_keep: Number | None = None
    confidence_gate: str | None = None
    choice: ByKey | None = None
    choice_excluded: dict[str, Any] | None = None
    choice_criterion: str | None = None
    choice_rating: str | None = None
    choice_mode: str | None = None
    gate: GateInfo | None = None
    threshold: Number | None = None
    target_risk: Number | None = None
    delta: Number | None = None
    target_coverage: Number | None = None
    sets: dict[str, PolicySet] = {}

    def fit_outcome(self) -> FitOutcome | None:
        """The gated classifier on the calibration images its OOD gate keeps."""
        return _fitted(self, self.fitted_on)


class SettingsFiles(_Block):
    """The predictions files evaluated."""

    test: str
    val: str | None = None
    calib: str | None = None
    ood: list[str] | None = None
    external: list[str] | None = None


class Settings(_Block):
    """What every measurement used (`target_risk_choice`: --target-risk auto's record)."""

    target_risk_choice: dict[str, Any] | None = None
    target_risk: Number
    delta: Number | None = None
    coverages: list[Number]
    n_bootstrap: int | None = None
    seed: int | None = None
    files: SettingsFiles | None = None


class MetricsReport(_Block):
    """metrics.json: the sections in the order `evaluate_predictions` writes them."""

    test: SetMetrics
    val: SetMetrics | None = None
    calibration: Calibration | None = None
    sgr: SgrBlock | None = None
    ood: dict[str, OodSet] | None = None
    external: dict[str, ExternalSet] | None = None
    policy: PolicyBlock | None = None
    scores: list[str]
    settings: Settings
    notes: list[str] = []

    def to_json(self) -> str:
        """metrics.json's text."""
        return json.dumps(self.model_dump(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write metrics.json to `path` atomically; returns `path`."""
        from skinclf.atomic import write_text

        path = Path(path)
        write_text(path, self.to_json())
        return path


def _problem(exc: ValidationError) -> str:
    """The first schema error, as the middle of a sentence."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    if not where:
        return "is not a JSON object"
    if err["type"] == "missing":
        return f"has no {where}"
    return f"has a wrong {where} ({err['msg'][:1].lower()}{err['msg'][1:]})"


def read_metrics(path: str | Path) -> MetricsReport:
    """metrics.json checked against `MetricsReport`; a DataError in one sentence naming the
    file when it is missing, damaged or not an evaluation's metrics.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such metrics.json; run `skinclf evaluate ... --out DIR` first."
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: is not valid JSON ({exc.msg}, line {exc.lineno}); evaluate again."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    try:
        return MetricsReport.model_validate(data)
    except ValidationError as exc:
        raise DataError(
            f"{path}: {_problem(exc)}, so it is not a metrics.json of `skinclf evaluate`; "
            "evaluate again with this version."
        ) from None
