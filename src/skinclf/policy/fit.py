"""`SelectivePolicy`: the post-hoc policy as one fitted object, scikit-learn style.

`SelectivePolicy(settings).fit(val, calib, shifted=..., gate_stats=...)` fits, on held-out
predictions files only, in this order: the temperature (on val; a degenerate fit is replaced
by 1.0 with a note), the target risk (`auto`: the lowest of `sgr.RISK_GRID` certified at
`sgr.AUTO_MIN_COVERAGE`), the single-score selective classifier (its score chosen by validation
AURC, its SGR threshold on calib, else val) and, when asked for, the gated classifier (an OOD
gate given or chosen without OOD labels, then its confidence gate on the images the gate keeps).
`apply` decides on a predictions file; `save` writes one policy file (selective.json: the
deployed classifier's fields, readable by every skinclf that reads format 2, plus a `fit`
record of everything the evaluation reports) with the gate's feature statistics beside it;
`load` reads it back. Nothing here measures a test set: that is `skinclf.evaluate`'s job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from skinclf.atomic import atomic_path
from skinclf.contracts.predictions import Predictions
from skinclf.contracts.score_registry import CONFIDENCE_SCORES, FEATURE_SCORES
from skinclf.contracts.scores import score_values
from skinclf.contracts.selective import (
    Number,
    Selective,
    SelectiveFile,
    combination_parts,
    read_selective,
)
from skinclf.errors import ConfigError, DataError, first_schema_error
from skinclf.jsonable import jsonable
from skinclf.policy import choice as C
from skinclf.policy.gates import apply_to, fit_gated_policy
from skinclf.policy.risk_coverage import aurc
from skinclf.policy.settings import PolicySettings
from skinclf.policy.sgr import (
    AUTO,
    AUTO_MIN_COVERAGE,
    RISK_GRID,
    RiskChoice,
    SGRResult,
    fit_coverage,
    lowest_certified_risk,
    sgr,
)
from skinclf.policy.temperature import T_MAX, T_MIN, fit_temperature, temperature_nll

GATE_STATS_FILE = "selective_stats.npz"  # the gate's feature statistics, beside the policy
_NOTHING_FITTED = "This policy was fitted without held-out predictions: nothing to {}."
VAL_SELECTION_NOTE = (
    "The SGR threshold was fitted on the validation split, which also chose the checkpoint{}: "
    "the risk guarantee is weaker than with a separate calibration split (--calib)."
)


@dataclass(frozen=True)
class _Data:
    """The held-out predictions a fit reads, and the temperature fitted on val."""

    val: Predictions | None
    calib: Predictions | None
    temperature: float | None

    @property
    def fit_p(self) -> Predictions | None:
        return self.calib if self.calib is not None else self.val

    @property
    def fitted_on(self) -> str:
        return "calib" if self.calib is not None else "val"

    def score(self, p: Predictions, name: str) -> np.ndarray | None:
        return score_values(p, name, self.temperature, stored_msp_ts=False)

    def residuals(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitting rows' mask (labelled) and their 0/1 errors."""
        p = self.fit_p
        assert p is not None
        mask = p.labelled
        return mask, (p.pred[mask] != p.y[mask]).astype(float)


@dataclass
class SelectivePolicy:
    """A selective classifier fitted on held-out predictions (see the module)."""

    settings: PolicySettings = field(default_factory=PolicySettings)
    temperature: float | None = None
    single: Selective | None = None  # the single-score classifier (no OOD gate)
    gated: Selective | None = None  # the gated classifier, when asked for
    record: dict = field(default_factory=dict)  # what the fit found, for the evaluation
    notes: list[str] = field(default_factory=list)
    gate_stats: Path | None = None  # the feature statistics the OOD gate reads

    @property
    def selective(self) -> Selective | None:
        """The classifier predict applies: the gated one when fitted, else the single one."""
        return self.gated if self.gated is not None else self.single

    @property
    def target_risk(self) -> float:
        """The target risk the single-score classifier was fitted at (auto resolved)."""
        return float(self.record.get("target_risk", 0.10))

    @property
    def delta(self) -> float:
        return float(self.record.get("delta", self.settings.delta))

    def fit(
        self,
        val: Predictions | None,
        calib: Predictions | None = None,
        shifted: Predictions | None = None,
        target_domain: Predictions | None = None,
        gate_stats: str | Path | None = None,
    ) -> SelectivePolicy:
        """Fit on `val` (temperature, score choice) and `calib` (else val: thresholds, gate);
        `shifted`/`target_domain` judge the gate candidates of `choose_gate`."""
        s = self.settings
        s.check()
        for name, p in (("validation", val), ("calibration", calib)):
            if p is not None and p.labelled.sum() < 2:
                raise ConfigError(f"{p.path}: the {name} file needs at least 2 labelled rows.")
        _check_choice_inputs(s, shifted, target_domain)
        self.notes, self.record = [], {}
        self.gate_stats = Path(gate_stats) if gate_stats is not None else None
        self.temperature = _temperature(val, calib, self.notes) if val is not None else None
        data = _Data(val, calib, self.temperature)
        if s.selective_score == "msp_ts" and data.temperature is None:
            raise ConfigError("selective score msp_ts needs --val to fit the temperature.")
        self._resolve_risk(data)
        self.single = self._fit_single(data)
        self.gated = self._fit_gated(data, shifted, target_domain) if s.gated else None
        return self

    def _resolve_risk(self, data: _Data) -> None:
        """record["target_risk"/"delta"]: the given risk, or auto's choice (with a note)."""
        s = self.settings
        self.record.update(target_risk=0.10, delta=s.delta, auto=s.target_risk == AUTO)
        if s.target_risk != AUTO:
            self.record["target_risk"] = float(s.target_risk)
            return
        if data.fit_p is None:
            return
        chosen = _chosen_score(data, s.selective_score)
        mask, residuals = data.residuals()
        choice = lowest_certified_risk(data.score(data.fit_p, chosen)[mask], residuals, s.delta)
        self.notes.append(_auto_note(choice, data.fitted_on))
        self.record.update(
            target_risk=choice.target_risk,
            delta=choice.delta,
            risk_choice=_choice_block(choice),
        )

    def _fit_single(self, data: _Data) -> Selective | None:
        """The single-score classifier: its score, its SGR threshold (or, auto with nothing
        certified, a coverage threshold); None without held-out predictions."""
        s = self.settings
        if data.fit_p is None:
            self.notes.append(
                "No --val or --calib file: no temperature scaling, no SGR threshold and no "
                "selective.json (they need fitting on held-out predictions)."
            )
            return None
        chosen = _chosen_score(data, s.selective_score)
        mask, residuals = data.residuals()
        conf = data.score(data.fit_p, chosen)[mask]
        fit = sgr(conf, residuals, self.target_risk, self.delta)
        coverage_gate = bool(self.record["auto"]) and not fit.solution_exists
        if coverage_gate:
            self.notes.append(_coverage_note(fit, data.fitted_on))
            covered = fit_coverage(conf, residuals, AUTO_MIN_COVERAGE, fit.delta, fit.target_risk)
            fit = dataclasses.replace(covered, steps=fit.steps)
        self.record["single_fit"] = _fit_block(fit)
        auto = s.selective_score == "auto" and data.val is not None
        return self._stored(data, chosen, auto, fit, coverage_gate)

    def _stored(
        self, data: _Data, chosen: str, auto: bool, fit: SGRResult, coverage_gate: bool
    ) -> Selective:
        also = [w for w, used in (("temperature", chosen == "msp_ts"), ("score", auto)) if used]
        sgr_note = ""
        if data.fitted_on == "val":
            sgr_note = VAL_SELECTION_NOTE.format(
                f" (and the {' and the '.join(also)})" if also else ""
            )
            self.notes.append(sgr_note)
        if not fit.solution_exists:
            self.notes.append(
                f"SGR found no threshold whose risk bound is below {self.target_risk:g} on "
                f"{data.fitted_on} ({fit.n} images): the stored classifier abstains on "
                "everything; raise --target-risk or use a larger calibration set."
            )
        return Selective(
            score=chosen,
            temperature=float(data.temperature) if data.temperature is not None else None,
            threshold=fit.threshold,
            target_risk=self.target_risk,
            delta=self.delta,
            solution_exists=fit.solution_exists,
            fitted_on=data.fitted_on,
            n_calib=fit.n,
            calib_coverage=fit.coverage,
            calib_risk=fit.risk,
            bound=fit.bound,
            note=sgr_note,
            confidence_gate="coverage" if coverage_gate else "sgr",
            target_coverage=AUTO_MIN_COVERAGE if coverage_gate else None,
        )

    def _fit_gated(
        self, data: _Data, shifted: Predictions | None, target_domain: Predictions | None
    ) -> Selective:
        """The OOD gate given or chosen without OOD labels, then its confidence gate."""
        s = self.settings
        fit_p = data.fit_p
        if fit_p is None:
            raise ConfigError(
                "--ood-gate and --choose-gate need --val or --calib to fit the gate on."
            )
        score = self.single.score if self.single is not None else "msp"
        risk, delta = (AUTO, s.delta) if self.record["auto"] else (self.target_risk, self.delta)

        def fit(gate_score: str, chosen_by: str = "", confidence_gate: str = "") -> Selective:
            needs_stats = any(c in FEATURE_SCORES for c in combination_parts(gate_score))
            settings = dataclasses.replace(
                s,
                target_risk=risk,
                delta=delta,
                ood_gate=gate_score,
                choose_gate=False,  # this one gate's settings, as if given with --ood-gate
                confidence_gate=confidence_gate or s.confidence_gate,
            )
            stats_file = GATE_STATS_FILE if needs_stats else None
            return fit_gated_policy(
                fit_p, data.fitted_on, score, data.temperature, settings, stats_file, chosen_by
            )

        ood_gate, chosen_by = s.ood_gate, "given (--ood-gate)"
        if s.choose_gate:
            ood_gate, choice = self._choose(data, score, fit, shifted, target_domain)
            self.record["gate_choice"] = choice
            chosen_by = f"--choose-gate: {choice['choice_criterion']}"
        assert ood_gate is not None
        needs_stats = any(c in FEATURE_SCORES for c in combination_parts(ood_gate))
        if needs_stats and self.gate_stats is None:
            raise ConfigError(
                f"The OOD gate {ood_gate!r} uses feature scores: give --gate-stats RUN/"
                "feature_stats.npz (fitted by `skinclf calibrate RUN`; `skinclf run` fits its "
                "own), so that predict can apply it without the training images."
            )
        return fit(ood_gate, chosen_by)

    def _choose(
        self,
        data: _Data,
        score: str,
        fit: Callable[..., Selective],
        shifted: Predictions | None,
        target_domain: Predictions | None,
    ) -> tuple[str, dict]:
        """--choose-gate: the gate candidate and the table of every candidate's rating."""
        fit_p = data.fit_p
        assert fit_p is not None
        candidates = C.gate_candidates(fit_p, score)
        excluded: dict[str, str] = {}
        if shifted is not None:
            C.require_components(shifted, candidates, "--shifted")
            judge = C.silent_failures(shifted)
            best, table, excluded = self._by_policy(candidates, fit, judge)
            criterion, rating, mode = C.SHIFTED_CRITERION, "silent failure rate", "shifted"
        elif target_domain is not None:
            C.require_components(target_domain, candidates, "--target-domain")
            judge = C.accepted_share(target_domain)
            best, table, excluded = self._by_policy(candidates, fit, judge)
            criterion, rating = C.TARGET_DOMAIN_CRITERION, "target-domain share accepted"
            mode = "target_domain"
        else:
            best, table = C.choose_gate(fit_p, candidates, self.settings.id_keep, data.temperature)
            criterion, rating, mode = C.CHOOSE_GATE_CRITERION, "error rate kept", "errors_kept"
        return best, {
            "choice": table,
            "choice_excluded": excluded,
            "choice_criterion": criterion,
            "choice_rating": rating,
            "choice_mode": mode,
        }

    def _by_policy(self, candidates: Sequence[str], fit: Callable, judge: Callable) -> tuple:
        """choice.choose_gate_by_policy; when no candidate's confidence gate has a solution, the
        gate is chosen on its own (confidence gate off for the choice), with a note."""
        best, table, excluded = C.choose_gate_by_policy(candidates, fit, judge, allow_empty=True)
        if table:
            return best, table, excluded
        self.notes.append(
            "No gate candidate leaves a confidence threshold that meets --target-risk, so the "
            "gate was chosen with the confidence gate off; the stored classifier abstains on "
            "every image (raise --target-risk, or use --confidence-gate coverage)."
        )
        best, table, _ = C.choose_gate_by_policy(candidates, lambda c: fit(c, "", "off"), judge)
        return best, table, excluded

    def apply(self, p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(confidence, abstain, abstain_reason) of the stored classifier on `p`'s rows."""
        selective = self.selective
        if selective is None:
            raise DataError(_NOTHING_FITTED.format("apply"))
        return apply_to(selective, p)

    def save(self, folder: str | Path) -> Path:
        """Write FOLDER/selective.json (the stored classifier + the `fit` record) and, for a
        gate on feature scores, its statistics beside it; the policy file's path."""
        selective = self.selective
        if selective is None:
            raise DataError(_NOTHING_FITTED.format("save"))
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "selective.json"
        data = {**asdict(selective), "fit": jsonable(self._fit_record())}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        gate = selective.gate
        if gate is not None and gate.stats_file and self.gate_stats is not None:
            with atomic_path(folder / gate.stats_file) as tmp:
                tmp.write_bytes(self.gate_stats.read_bytes())
        return path

    def _fit_record(self) -> dict:
        single = asdict(self.single) if self.single is not None else None
        return {
            "settings": asdict(self.settings),
            "temperature": self.temperature,
            "single": single,
            "record": self.record,
            "notes": self.notes,
        }

    @classmethod
    def load(cls, path: str | Path) -> SelectivePolicy:
        """The policy in a selective.json (a folder: its selective.json). A file without a
        `fit` record (written before the policy object) loads as its stored classifier."""
        path = Path(path)
        path = path / "selective.json" if path.is_dir() else path
        stored_file = read_selective(path)
        stored = stored_file.to_selective()
        gate = stored.gate
        stats = path.parent / gate.stats_file if gate is not None and gate.stats_file else None
        fit = _fit_record(stored_file, path)
        if fit is None:
            return cls(
                temperature=stored.temperature,
                single=None if gate is not None else stored,
                gated=stored if gate is not None else None,
                record={"target_risk": stored.target_risk, "delta": stored.delta},
                gate_stats=stats,
            )
        return cls(
            settings=fit.settings,
            temperature=fit.temperature,
            single=fit.single.to_selective() if fit.single is not None else None,
            gated=stored if gate is not None else None,
            record=dict(fit.record),
            notes=list(fit.notes),
            gate_stats=stats,
        )


class FitRecord(BaseModel):
    """The `fit` record of a policy file (selective.json): the settings fitted, the temperature,
    the single-score classifier and what the fit found (`record`, `notes`), as
    `SelectivePolicy.save` writes it."""

    settings: PolicySettings  # an unknown key is refused (`PolicySettings` forbids extras)
    temperature: Number | None = None
    single: SelectiveFile | None = None
    record: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def _fit_record(stored: SelectiveFile, path: Path) -> FitRecord | None:
    """The policy file's `fit` record, None without one; DataError when it is malformed."""
    fit = (stored.model_extra or {}).get("fit")
    if fit is None:
        return None
    try:
        return FitRecord.model_validate(fit)
    except ValidationError as exc:
        why = first_schema_error(exc, "fit")
        raise DataError(
            f"{path}: its `fit` record is malformed ({why}); fit the policy again."
        ) from None


def _check_choice_inputs(
    s: PolicySettings, shifted: Predictions | None, target_domain: Predictions | None
) -> None:
    """The files --choose-gate judges candidates on: --shifted (labelled) or --target-domain."""
    if (shifted is not None or target_domain is not None) and not s.choose_gate:
        raise ConfigError("--shifted and --target-domain choose the gate: add --choose-gate.")
    if shifted is not None and target_domain is not None:
        raise ConfigError(
            "Give --shifted (in-distribution only) or --target-domain (opt-in), not both: "
            "their choices are reported apart."
        )
    if shifted is not None and not shifted.labelled.any():
        raise ConfigError(f"{shifted.path}: --shifted needs labelled in-distribution rows.")


def _temperature(val: Predictions, calib: Predictions | None, notes: list[str]) -> float:
    """The temperature fitted on validation data. One within 1.5x of a search bound, or one
    that makes the calibration (else validation) predictions' NLL worse than T = 1, is replaced
    by 1.0 with a note (a degenerate fit, e.g. on a few easy images, would otherwise make every
    probability 0 or 1)."""
    vm = val.labelled
    t = fit_temperature(val.logits[vm], val.y[vm])
    check = calib if calib is not None else val
    cm = check.labelled
    worse = temperature_nll(check.logits[cm], check.y[cm], t) > temperature_nll(
        check.logits[cm], check.y[cm], 1.0
    )
    at_bound = t < 1.5 * T_MIN or t > T_MAX / 1.5
    if not (worse or at_bound):
        return t
    why = (
        f"within 1.5x of its search bound [{T_MIN:g}, {T_MAX:g}]"
        if at_bound
        else f"it raises the {'calibration' if calib is not None else 'validation'} NLL "
        "above that of T = 1"
    )
    notes.append(f"The fitted temperature {t:.3g} was replaced by 1.0: {why}.")
    return 1.0


def _chosen_score(data: _Data, selective_score: str) -> str:
    """The given score, or ("auto") the logit score with the lowest validation AURC."""
    if selective_score != "auto":
        return selective_score
    if data.val is None:
        return "msp"
    vm = data.val.labelled
    wrong = data.val.y[vm] != data.val.pred[vm]
    candidates = [name for name in CONFIDENCE_SCORES if name != "msp_ts" or data.temperature]
    val_aurc = {name: aurc(data.score(data.val, name)[vm], wrong) for name in candidates}
    return min(val_aurc, key=lambda name: val_aurc[name])


def _auto_note(choice: RiskChoice, fitted_on: str) -> str:
    return (
        f"--target-risk auto chose {choice.target_risk:g}: the lowest risk of "
        f"{', '.join(f'{r:g}' for r in RISK_GRID)} that SGR certifies on {fitted_on} "
        f"while accepting at least {choice.min_coverage:.0%} of its images "
        f"({'reached' if choice.reached else 'none reached it: the highest coverage'}); each "
        f"risk fitted at delta {choice.delta:.4g}, so the guarantee holds with probability "
        f"{1 - choice.overall_delta:.2f}."
    )


def _coverage_note(fit: SGRResult, fitted_on: str) -> str:
    return (
        f"--target-risk auto: SGR certifies no risk up to {fit.target_risk:g} on the {fit.n} "
        f"{fitted_on} images, so the confidence gate keeps {AUTO_MIN_COVERAGE:.0%} of them "
        "instead, with no risk guarantee; a larger calibration set gives one."
    )


def _choice_block(choice: RiskChoice) -> dict:
    return {
        "requested": AUTO,
        "chosen": choice.target_risk,
        "min_coverage": choice.min_coverage,
        "reached": choice.reached,
        "certified": choice.certified,
        "delta_per_risk": choice.delta,
        "delta": choice.overall_delta,
        "coverage_by_risk": {f"{r:g}": c for r, c in choice.coverages.items()},
    }


def _fit_block(fit: SGRResult) -> dict:
    """The SGR (or coverage) fit of the single-score classifier, as the evaluation reports it."""
    return {
        "threshold": fit.threshold,
        "solution_exists": fit.solution_exists,
        "steps": fit.steps,
        "n": fit.n,
        "n_accepted": fit.n_accepted,
        "coverage": fit.coverage,
        "risk": fit.risk,
        "bound": fit.bound,
    }
