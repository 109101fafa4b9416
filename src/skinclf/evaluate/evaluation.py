"""The `skinclf evaluate` step: predictions files in; metrics.json, report.html, selective.json out.

Model-agnostic: it reads only predictions files (DESIGN.md), so predictions from any model can
be evaluated. With only a test file it reports what needs no fitting; a validation file enables
temperature scaling (`msp_ts`) and the choice of the selective score; the SGR threshold is
fitted on the calibration file when given, else on the validation file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.contracts.scores import SCORES, score_values
from skinclf.contracts.selective import Selective, apply_selective, load_selective, save_selective
from skinclf.errors import ConfigError
from skinclf.evaluate import metrics as M
from skinclf.evaluate.bootstrap import metric_ci
from skinclf.evaluate.calibration import (
    T_MAX,
    T_MIN,
    calibration_summary,
    fit_temperature,
    temperature_nll,
)
from skinclf.evaluate.classification import baselines, classification_metrics
from skinclf.evaluate.ood import ood_detection, semantic_ood_at_threshold
from skinclf.evaluate.report import ScoredSet, write_report
from skinclf.evaluate.selective import (
    DEFAULT_COVERAGES,
    aurc,
    check_fraction,
    selective_summary,
)
from skinclf.evaluate.sgr import (
    AUTO,
    AUTO_MIN_COVERAGE,
    RISK_GRID,
    RiskChoice,
    SGRResult,
    ThresholdOutcome,
    apply_threshold,
    fit_coverage,
    lowest_certified_risk,
    sgr,
)
from skinclf.evaluate.subgroups import add_subgroups

__all__ = [
    "EvaluationResult",
    "Selective",
    "apply_selective",
    "baselines",
    "classification_metrics",
    "evaluate_predictions",
    "load_selective",
    "parse_fractions",
]

LOGIT_SCORES: tuple[str, ...] = ("msp", "msp_ts", *[s for s in SCORES if s != "msp"])
VAL_SELECTION_NOTE = (
    "The SGR threshold was fitted on the validation split, which also chose the checkpoint{}: "
    "the risk guarantee is weaker than with a separate calibration split (--calib)."
)


@dataclass
class EvaluationResult:
    """What `evaluate_predictions` wrote and computed."""

    metrics: dict
    selective: Selective | None
    metrics_path: Path
    report_path: Path
    selective_path: Path | None


@dataclass(frozen=True)
class _Settings:
    """The numbers every step uses: SGR targets, coverages and the bootstrap."""

    target_risk: float
    delta: float
    coverages: tuple[float, ...]
    n_bootstrap: int
    seed: int
    auto: bool = False  # --target-risk auto: each confidence gate chooses its own risk
    overall_delta: float | None = None  # with auto: the delta split over the risk grid

    @property
    def gated_risk(self) -> tuple[float | str, float]:
        """(target risk, delta) the gated classifier's confidence gate is fitted with."""
        if self.auto:
            assert self.overall_delta is not None
            return AUTO, self.overall_delta
        return self.target_risk, self.delta


@dataclass(frozen=True)
class _GateOptions:
    """The gated selective classifier asked for (`--ood-gate` and friends)."""

    ood_gate: str | None
    choose: bool
    id_keep: float
    gate_stats: str | Path | None
    confidence_gate: str
    target_coverage: float | None
    shifted: Predictions | None = None  # ID images under synthetic corruption (--shifted)
    target_domain: Predictions | None = None  # unlabelled target-domain images (opt-in)


@dataclass(frozen=True)
class _Gated:
    """The gated classifier fitted, with the gate candidates when it was chosen."""

    selective: Selective
    choice: dict  # "choice" and "choice_criterion" with --choose-gate


@dataclass
class _Run:
    """What the steps share: the predictions files, the temperature fitted on validation,
    the scores evaluated, the scored sets the report draws and the notes for the reader."""

    test: Predictions
    val: Predictions | None
    calib: Predictions | None
    ood: list[Predictions]
    external: list[Predictions]
    temperature: float | None = None
    score_names: list[str] = field(default_factory=list)
    sets: list[ScoredSet] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    test_conf: dict[str, np.ndarray] = field(default_factory=dict)  # labelled test rows
    set_names: set[str] = field(default_factory=set)  # of the OOD and external sets
    given_names: dict[str, str] = field(default_factory=dict)  # file -> name (`set_names`)

    @property
    def fit_p(self) -> Predictions | None:
        """The file the SGR threshold and the gates are fitted on."""
        return self.calib if self.calib is not None else self.val

    @property
    def fitted_on(self) -> str:
        return "calib" if self.calib is not None else "val"

    def score(self, p: Predictions, name: str) -> np.ndarray | None:
        """A score on every row of `p`; msp_ts at this run's temperature."""
        return score_values(p, name, self.temperature, stored_msp_ts=False)

    def scored(self, p: Predictions, kind: str, name: str) -> ScoredSet:
        """`p` with every evaluated score (noting the missing ones), added to the report."""
        conf = {}
        for s in self.score_names:
            values = self.score(p, s)
            if values is None:
                self.notes.append(f"{name}: score {s} is missing (no conf_{s} column); skipped.")
            else:
                conf[s] = values
        scored = ScoredSet(name=name, kind=kind, preds=p, conf=conf)
        self.sets.append(scored)
        return scored


def parse_fractions(text: str | Sequence[float], what: str) -> tuple[float, ...]:
    """Comma-separated numbers (or a sequence), each in (0, 1]; ConfigError otherwise."""
    items = [s.strip() for s in text.split(",") if s.strip()] if isinstance(text, str) else text
    out = []
    for item in items:
        try:
            out.append(check_fraction(float(item), what))
        except ValueError:
            raise ConfigError(
                f"{what} {item!r} is not a number in (0, 1]; give e.g. 1,0.9,0.8."
            ) from None
    if not out:
        raise ConfigError(f"no {what} given; give e.g. 1,0.9,0.8.")
    return tuple(out)


def _check_targets(target_risk: float, delta: float) -> None:
    if not (0.0 < target_risk <= 1.0) or math.isnan(target_risk):
        raise ConfigError(f"target risk {target_risk:g} is outside (0, 1]; use e.g. 0.10.")
    if not (0.0 < delta < 1.0) or math.isnan(delta):
        raise ConfigError(f"delta {delta:g} is outside (0, 1); use e.g. 0.05.")


def _available_scores(test: Predictions, temperature: float | None) -> list[str]:
    names = [s for s in LOGIT_SCORES if s != "msp_ts" or temperature is not None]
    return names + [c for c in test.conf if c not in names]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def _outcome(o: ThresholdOutcome) -> dict:
    return {
        "coverage": o.coverage,
        "risk": o.risk,
        "n": o.n,
        "n_accepted": o.n_accepted,
        "target_met": o.target_met,
    }


def _selective_block(
    y: np.ndarray,
    pred: np.ndarray,
    conf: dict[str, np.ndarray],
    coverages: tuple[float, ...],
    target_risk: float,
) -> dict:
    return {
        name: selective_summary(values, y, pred, coverages, target_risk)
        for name, values in conf.items()
    }


def _fit_sgr(data: Predictions, conf: np.ndarray, target_risk: float, delta: float) -> SGRResult:
    mask = data.labelled
    residuals = (data.pred[mask] != data.y[mask]).astype(float)
    return sgr(conf[mask], residuals, target_risk, delta)


def _ood_name(p: Predictions, used: set[str], given: dict[str, str] | None = None) -> str:
    """The set's name: the one given for its file, else its dataset (else its file's stem),
    made unique among `used`."""
    values = set(p.dataset.tolist())
    base = values.pop() if len(values) == 1 and p.dataset[0] else Path(str(p.path)).stem
    base = (given or {}).get(str(Path(str(p.path)).resolve()), base)
    name, i = base, 2
    while name in used:
        name, i = f"{base}-{i}", i + 1
    used.add(name)
    return name


def evaluate_predictions(
    test: str | Path,
    out_dir: str | Path,
    val: str | Path | None = None,
    calib: str | Path | None = None,
    ood: Sequence[str | Path] = (),
    scores: Sequence[str] | None = None,
    external: Sequence[str | Path] = (),
    ood_gate: str | None = None,
    id_keep: float = 0.95,
    gate_stats: str | Path | None = None,
    choose_gate: bool = False,
    shifted: str | Path | None = None,
    target_domain: str | Path | None = None,
    confidence_gate: str = "sgr",
    target_coverage: float | None = None,
    target_risk: float | str = 0.10,
    delta: float = 0.05,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    selective_score: str = "auto",
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
    on_step: Callable[[str], None] | None = None,
    examples: bool = True,  # example images in report.html (False: --no-examples)
    set_names: Mapping[str | Path, str] | None = None,
) -> EvaluationResult:
    """Evaluate predictions files and write metrics.json, report.html and selective.json.

    `scores` defaults to every score available (logit scores, msp_ts with --val, and the test
    file's conf_ columns). `selective_score` "auto" picks the logit score with the lowest AURC
    on the validation set (msp without one). `on_step` is told each step's name (progress).

    `ood_gate` (a score or a combination `a+b`; `choose_gate` picks one without OOD labels)
    adds an out-of-distribution gate that keeps `id_keep` of the calibration (or validation)
    images, before the confidence gate (`confidence_gate`: sgr, coverage, off); its feature
    statistics (`gate_stats`, written by predict) are copied beside selective.json. With
    `choose_gate`, `shifted` (predictions of in-distribution images under synthetic corruption)
    chooses by the silent failures there, and the opt-in `target_domain` (unlabelled images of
    the deployment domain) by the share of them accepted. `external` files are labelled
    in-distribution sets from other sources (e.g. the ISIC 2018 test images), measured like the
    test set. `set_names`: each --ood/--external file's name (`skinclf run` and `cv` give their
    folders'); default: the file's dataset.
    """
    auto = target_risk == AUTO
    s = _settings(0.10 if auto else float(target_risk), delta, coverages, n_bootstrap, seed)
    step = on_step if (progress and on_step) else (lambda _s: None)
    step("reading predictions")
    run = _read_inputs(test, val, calib, ood, external, set_names)
    gates = _GateOptions(
        ood_gate,
        choose_gate,
        id_keep,
        gate_stats,
        confidence_gate,
        target_coverage,
        *_choice_inputs(choose_gate, ood_gate, shifted, target_domain),
    )
    if run.val is not None:
        step("fitting the temperature")
        run.temperature = _temperature(run)
    run.score_names = _score_names(scores, run.test, run.temperature)
    s, choice = _auto_target_risk(run, s, selective_score) if auto else (s, None)
    result: dict = {"test": _test_block(run, s, step)}
    if run.val is not None:
        result.update(_val_blocks(run))
    selective = _selective_step(run, result, selective_score, s, step)
    _ood_blocks(run, result, selective, s, step)
    _external_blocks(run, result, s, step)
    gated, decisions = _policy_step(run, result, selective, gates, s, step)
    if run.calib is not None:
        run.scored(run.calib, "calib", "calib")
    result["scores"] = list(run.score_names)
    result["settings"] = _settings_block(s, test, val, calib, ood, external, choice)
    result["notes"] = list(dict.fromkeys(run.notes))
    step("writing the report")
    return _write_outputs(
        Path(out_dir), _jsonable(result), run, selective, gated, decisions, gate_stats, examples
    )


def _settings(
    target_risk: float, delta: float, coverages: Sequence[float], n_bootstrap: int, seed: int
) -> _Settings:
    _check_targets(float(target_risk), float(delta))
    fractions = parse_fractions(coverages, "coverage")
    return _Settings(float(target_risk), float(delta), fractions, n_bootstrap, seed)


def _temperature(run: _Run) -> float:
    """The temperature fitted on validation data. One within 1.5x of a search bound, or one that
    makes the calibration (else validation) predictions' NLL worse than T = 1, is replaced by
    1.0 with a note in run.notes (a degenerate fit, e.g. on a few easy images, would otherwise
    make every probability 0 or 1)."""
    assert run.val is not None
    vm = run.val.labelled
    t = fit_temperature(run.val.logits[vm], run.val.y[vm])
    check = run.calib if run.calib is not None else run.val
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
        else f"it raises the {'calibration' if run.calib is not None else 'validation'} NLL "
        "above that of T = 1"
    )
    run.notes.append(f"The fitted temperature {t:.3g} was replaced by 1.0: {why}.")
    return 1.0


def _auto_target_risk(
    run: _Run, s: _Settings, selective_score: str
) -> tuple[_Settings, RiskChoice | None]:
    """`--target-risk auto` for the single-score classifier (selective.json without an OOD gate,
    metrics' "sgr"): the lowest risk of the grid SGR certifies at the minimum coverage on the
    calibration (else validation) predictions, with the chosen score; the settings with that
    risk and the per-risk delta (unchanged, 0.10, without held-out predictions). A gated
    classifier chooses its own on the images its OOD gate keeps (`shift.fit_gated_policy`)."""
    import dataclasses

    if run.fit_p is None:
        return s, None
    chosen = _chosen_score(run, selective_score)
    mask = run.fit_p.labelled
    residuals = (run.fit_p.pred[mask] != run.fit_p.y[mask]).astype(float)
    choice = lowest_certified_risk(run.score(run.fit_p, chosen)[mask], residuals, s.delta)
    run.notes.append(
        f"--target-risk auto chose {choice.target_risk:g}: the lowest risk of "
        f"{', '.join(f'{r:g}' for r in RISK_GRID)} that SGR certifies on {run.fitted_on} "
        f"while accepting at least {choice.min_coverage:.0%} of its images "
        f"({'reached' if choice.reached else 'none reached it: the highest coverage'}); each "
        f"risk fitted at delta {choice.delta:.4g}, so the guarantee holds with probability "
        f"{1 - choice.overall_delta:.2f}."
    )
    resolved = dataclasses.replace(
        s, target_risk=choice.target_risk, delta=choice.delta, auto=True, overall_delta=s.delta
    )
    return resolved, choice


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


def _choice_inputs(
    choose_gate: bool,
    ood_gate: str | None,
    shifted: str | Path | None,
    target_domain: str | Path | None,
) -> tuple[Predictions | None, Predictions | None]:
    """The files --choose-gate judges candidates on: --shifted (labelled) or --target-domain."""
    if (shifted or target_domain) and not choose_gate:
        raise ConfigError("--shifted and --target-domain choose the gate: add --choose-gate.")
    if choose_gate and ood_gate:
        raise ConfigError("Give --ood-gate SCORE or --choose-gate, not both.")
    if shifted and target_domain:
        raise ConfigError(
            "Give --shifted (in-distribution only) or --target-domain (opt-in), not both: "
            "their choices are reported apart."
        )
    if shifted:
        p = read_predictions(shifted, require_labels=False)
        if not p.labelled.any():
            raise ConfigError(f"{shifted}: --shifted needs labelled in-distribution rows.")
        return p, None
    return None, read_predictions(target_domain, require_labels=False) if target_domain else None


def _read_inputs(
    test: str | Path,
    val: str | Path | None,
    calib: str | Path | None,
    ood: Sequence[str | Path],
    external: Sequence[str | Path],
    set_names: Mapping[str | Path, str] | None = None,
) -> _Run:
    """Read every predictions file; the test file needs labelled rows, val/calib two."""
    run = _Run(
        test=read_predictions(test),
        val=read_predictions(val) if val else None,
        calib=read_predictions(calib) if calib else None,
        ood=[read_predictions(o, require_labels=False) for o in ood],
        external=[read_predictions(e) for e in external],
        given_names={str(Path(k).resolve()): v for k, v in (set_names or {}).items()},
    )
    if not run.test.labelled.any():
        raise ConfigError(f"{test}: no labelled in-distribution rows to evaluate.")
    for name, p in (("validation", run.val), ("calibration", run.calib)):
        if p is not None and p.labelled.sum() < 2:
            raise ConfigError(f"{p.path}: the {name} file needs at least 2 labelled rows.")
    return run


def _score_names(
    scores: Sequence[str] | None, test: Predictions, temperature: float | None
) -> list[str]:
    """The scores asked for (each must be available), or every available one."""
    available = _available_scores(test, temperature)
    if not scores:
        return available
    unknown = [s for s in scores if s not in available]
    if unknown:
        hint = " (msp_ts needs --val)" if "msp_ts" in unknown else ""
        raise ConfigError(
            f"score(s) {', '.join(unknown)} not available{hint}; available: {', '.join(available)}."
        )
    return list(dict.fromkeys(scores))


def _test_block(run: _Run, s: _Settings, step: Callable[[str], None]) -> dict:
    """Classification, bootstrap intervals, selective metrics and baselines on the test set."""
    test_set = run.scored(run.test, "test", "test")
    step("test metrics")
    tm = run.test.labelled
    y, pred = run.test.y[tm], run.test.pred[tm]
    run.test_conf = {name: v[tm] for name, v in test_set.conf.items()}
    block = classification_metrics(y, run.test.probs[tm])
    step("bootstrap intervals")
    block["balanced_accuracy_ci95"] = list(
        metric_ci("balanced_accuracy", y, pred, None, s.n_bootstrap, s.seed)
    )
    block["selective"] = _selective_block(y, pred, run.test_conf, s.coverages, s.target_risk)
    for name, values in run.test_conf.items():
        for metric in ("aurc", "augrc"):
            block["selective"][name][f"{metric}_ci95"] = list(
                metric_ci(metric, y, pred, values, s.n_bootstrap, s.seed)
            )
    prior_y = run.val.y[run.val.labelled] if run.val is not None else y
    block["baselines"] = baselines(y, prior_y, "val" if run.val is not None else "test")
    return block


def _val_blocks(run: _Run) -> dict:
    """The validation set's headline numbers, and temperature scaling on val and test."""
    assert run.val is not None
    val_set = run.scored(run.val, "val", "val")
    vm, tm = run.val.labelled, run.test.labelled
    vy, vpred = run.val.y[vm], run.val.pred[vm]
    val_conf = {name: v[vm] for name, v in val_set.conf.items()}
    t = run.temperature
    return {
        "val": {
            "n": int(vm.sum()),
            "accuracy": M.accuracy(vy, vpred),
            "balanced_accuracy": M.balanced_accuracy(vy, vpred),
            "selective": {name: {"aurc": aurc(v, vy != vpred)} for name, v in val_conf.items()},
        },
        "calibration": {
            "temperature": t,
            "fitted_on": "val",
            "val": calibration_summary(run.val.logits[vm], vy, t, run.val.probs[vm]),
            "test": calibration_summary(run.test.logits[tm], run.test.y[tm], t, run.test.probs[tm]),
        },
    }


def _selective_step(
    run: _Run, result: dict, selective_score: str, s: _Settings, step: Callable[[str], None]
) -> Selective | None:
    """Choose the selective score and fit its SGR threshold (result["sgr"]), if a validation
    or calibration file allows; None (and a note) otherwise."""
    if selective_score != "auto" and selective_score not in LOGIT_SCORES:
        raise ConfigError(
            f"selective score {selective_score!r} cannot be computed from logits by predict;"
            f" use one of {', '.join(LOGIT_SCORES)} or auto."
        )
    if selective_score == "msp_ts" and run.temperature is None:
        raise ConfigError("selective score msp_ts needs --val to fit the temperature.")
    if run.fit_p is None:
        run.notes.append(
            "No --val or --calib file: no temperature scaling, no SGR threshold and no "
            "selective.json (they need fitting on held-out predictions)."
        )
        return None
    step("selection with guaranteed risk")
    chosen = _chosen_score(run, selective_score)
    auto = selective_score == "auto" and run.val is not None
    fit = _fit_sgr(run.fit_p, run.score(run.fit_p, chosen), s.target_risk, s.delta)
    coverage_gate = s.auto and not fit.solution_exists
    if coverage_gate:  # --target-risk auto, nothing certified: a coverage target, said so
        fit = _coverage_fallback(run, chosen, fit)
    selective = _stored_selective(run, chosen, auto, fit, s, coverage_gate)
    result["sgr"] = _sgr_block(run, selective, fit, s)
    return selective


def _chosen_score(run: _Run, selective_score: str) -> str:
    """The given score, or ("auto") the logit score with the lowest validation AURC."""
    if selective_score != "auto":
        return selective_score
    if run.val is None:
        return "msp"
    vm = run.val.labelled
    wrong = run.val.y[vm] != run.val.pred[vm]
    candidates = [name for name in LOGIT_SCORES if name != "msp_ts" or run.temperature]
    val_aurc = {name: aurc(run.score(run.val, name)[vm], wrong) for name in candidates}
    return min(val_aurc, key=lambda name: val_aurc[name])


def _coverage_fallback(run: _Run, chosen: str, fit: SGRResult) -> SGRResult:
    """`--target-risk auto` where SGR certifies no risk of the grid (a few dozen images): the
    threshold keeping `AUTO_MIN_COVERAGE` of the fitting images, with no risk guarantee (as the
    gated policy does, `shift.fit_gated_policy`)."""
    import dataclasses

    mask = run.fit_p.labelled
    conf = run.score(run.fit_p, chosen)[mask]
    wrong = (run.fit_p.pred[mask] != run.fit_p.y[mask]).astype(float)
    run.notes.append(
        f"--target-risk auto: SGR certifies no risk up to {fit.target_risk:g} on the {fit.n} "
        f"{run.fitted_on} images, so the confidence gate keeps {AUTO_MIN_COVERAGE:.0%} of them "
        "instead, with no risk guarantee; a larger calibration set gives one."
    )
    covered = fit_coverage(conf, wrong, AUTO_MIN_COVERAGE, fit.delta, fit.target_risk)
    return dataclasses.replace(covered, steps=fit.steps)


def _stored_selective(
    run: _Run,
    chosen: str,
    auto: bool,
    fit: SGRResult,
    s: _Settings,
    coverage_gate: bool = False,
) -> Selective:
    """The selective classifier of selective.json, noting a weaker guarantee or no solution
    (`coverage_gate`: the threshold keeps `AUTO_MIN_COVERAGE` of the fitting images)."""
    also = [w for w, used in (("temperature", chosen == "msp_ts"), ("score", auto)) if used]
    sgr_note = (
        VAL_SELECTION_NOTE.format(f" (and the {' and the '.join(also)})" if also else "")
        if run.fitted_on == "val"
        else ""
    )
    if sgr_note:
        run.notes.append(sgr_note)
    if not fit.solution_exists:
        run.notes.append(
            f"SGR found no threshold whose risk bound is below {s.target_risk:g} on "
            f"{run.fitted_on} ({fit.n} images): the stored classifier abstains on everything; "
            "raise --target-risk or use a larger calibration set."
        )
    return Selective(
        score=chosen,
        temperature=float(run.temperature) if run.temperature is not None else None,
        threshold=fit.threshold,
        target_risk=s.target_risk,
        delta=s.delta,
        solution_exists=fit.solution_exists,
        fitted_on=run.fitted_on,
        n_calib=fit.n,
        calib_coverage=fit.coverage,
        calib_risk=fit.risk,
        bound=fit.bound,
        note=sgr_note,
        confidence_gate="coverage" if coverage_gate else "sgr",
        target_coverage=AUTO_MIN_COVERAGE if coverage_gate else None,
    )


def _sgr_block(run: _Run, selective: Selective, fit: SGRResult, s: _Settings) -> dict:
    """The SGR fit and the same threshold on the test set (and its semantic OOD rows)."""
    tm = run.test.labelled
    test_residuals = (run.test.pred[tm] != run.test.y[tm]).astype(float)
    conf_all = run.score(run.test, selective.score)
    on_test = apply_threshold(conf_all[tm], test_residuals, fit.threshold, s.target_risk)
    block = {
        "score": selective.score,
        "temperature": selective.temperature,
        "target_risk": s.target_risk,
        "delta": s.delta,
        "fitted_on": run.fitted_on,
        "confidence_gate": selective.confidence_gate,
        "solution_exists": fit.solution_exists,
        "threshold": fit.threshold,
        "steps": fit.steps,
        run.fitted_on: {
            "n": fit.n,
            "n_accepted": fit.n_accepted,
            "coverage": fit.coverage,
            "risk": fit.risk,
            "bound": fit.bound,
        },
        "test": _outcome(on_test),
        "note": selective.note,
    }
    if run.test.semantic_ood.any():
        block["test_semantic_ood"] = semantic_ood_at_threshold(
            conf_all[tm], test_residuals, conf_all[run.test.semantic_ood], fit.threshold
        )
    return block


def _ood_blocks(
    run: _Run,
    result: dict,
    selective: Selective | None,
    s: _Settings,
    step: Callable[[str], None],
) -> None:
    """Each out-of-distribution set: detection against the test set, metrics on its mapped
    classes, and the stored threshold's coverage and risk on it (result["ood"])."""
    if run.ood:
        result["ood"] = {}
    for p in run.ood:
        name = _ood_name(p, run.set_names, run.given_names)
        step(f"out-of-distribution set {name}")
        oset = run.scored(p, "ood", name)
        om, scc = p.labelled, p.semantic_ood
        entry: dict = {"n": p.n, "n_mapped": int(om.sum()), "n_semantic_ood": int(scc.sum())}
        entry["detection"] = {
            k: ood_detection(run.test_conf[k], v)
            for k, v in oset.conf.items()
            if k in run.test_conf
        }
        if om.any():
            entry.update(_mapped_block(p, oset.conf, s))
        if selective is not None:
            entry.update(_at_threshold(p, run.score(p, selective.score), selective, s))
        result["ood"][name] = entry


def _mapped_block(p: Predictions, conf: dict[str, np.ndarray], s: _Settings) -> dict:
    """Classification and selective metrics of an OOD set's rows with a mapped class."""
    om = p.labelled
    oy, opred = p.y[om], p.pred[om]
    mapped = classification_metrics(oy, p.probs[om])
    mapped.pop("confusion_matrix")
    mapped.pop("n")
    mapped["confusion_matrix"] = M.confusion_matrix(oy, opred).tolist()
    mapped["selective"] = _selective_block(
        oy, opred, {k: v[om] for k, v in conf.items()}, s.coverages, s.target_risk
    )
    return mapped


def _at_threshold(p: Predictions, conf_sel: np.ndarray, selective: Selective, s: _Settings) -> dict:
    """Coverage of the stored threshold on all rows, its risk on the mapped rows and how it
    treats the semantic OOD rows."""
    om, scc = p.labelled, p.semantic_ood
    accepted = (
        conf_sel >= selective.threshold if selective.threshold is not None else np.zeros(p.n, bool)
    )
    entry: dict = {"coverage_at_threshold": float(accepted.mean())}  # labelled or not
    if om.any():
        o_res = (p.pred[om] != p.y[om]).astype(float)
        entry["sgr"] = _outcome(
            apply_threshold(conf_sel[om], o_res, selective.threshold, s.target_risk)
        )
    else:
        o_res = np.zeros(0)
    if scc.any():
        entry["semantic_ood"] = semantic_ood_at_threshold(
            conf_sel[om], o_res, conf_sel[scc], selective.threshold
        )
    return entry


def _external_blocks(run: _Run, result: dict, s: _Settings, step: Callable[[str], None]) -> None:
    """Each external set (result["external"]), then how well each score tells every OOD set
    from it (result["ood"][...]["detection_vs_external"])."""
    for p in run.external:
        name = _ood_name(p, run.set_names, run.given_names)
        step(f"external set {name}")
        eset = run.scored(p, "external", name)
        result.setdefault("external", {})[name] = _external_block(
            p, eset.conf, run.test_conf, s.n_bootstrap, s.seed
        )
    for es in (x for x in run.sets if x.kind == "external"):
        em = es.preds.labelled
        for os_ in (x for x in run.sets if x.kind == "ood"):
            result["ood"][os_.name].setdefault("detection_vs_external", {})[es.name] = {
                k: ood_detection(es.conf[k][em], v) for k, v in os_.conf.items() if k in es.conf
            }


def _settings_block(
    s: _Settings,
    test: str | Path,
    val: str | Path | None,
    calib: str | Path | None,
    ood: Sequence[str | Path],
    external: Sequence[str | Path],
    choice: RiskChoice | None = None,
) -> dict:
    return {
        **({"target_risk_choice": _choice_block(choice)} if choice is not None else {}),
        "target_risk": s.target_risk,
        "delta": s.delta,
        "coverages": list(s.coverages),
        "n_bootstrap": s.n_bootstrap,
        "seed": s.seed,
        "files": {
            "test": str(test),
            "val": str(val) if val else None,
            "calib": str(calib) if calib else None,
            "ood": [str(o) for o in ood],
            "external": [str(e) for e in external],
        },
    }


def _write_outputs(
    out_dir: Path,
    metrics: dict,
    run: _Run,
    selective: Selective | None,
    gated: Selective | None,
    decisions: dict,
    gate_stats: str | Path | None,
    examples: bool = True,
) -> EvaluationResult:
    """metrics.json, selective.json (the gated classifier if any), the gate's files and
    report.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    stored = gated if gated is not None else selective
    selective_path = save_selective(stored, out_dir / "selective.json") if stored else None
    if gated is not None:
        _write_gate_files(gated, gate_stats, out_dir, decisions)
    report_path = write_report(
        out_dir / "report.html",
        metrics,
        run.sets,
        temperature=run.temperature,
        selective=selective,
        gated=gated,
        examples=examples,
    )
    return EvaluationResult(metrics, selective, metrics_path, report_path, selective_path)


def _named(ps: Sequence[Predictions], names: dict) -> dict[str, Predictions]:
    """The predictions of each named OOD/external set, in the order they were named."""
    return dict(zip(list(names), ps, strict=True))


def _external_block(
    p: Predictions,
    conf: dict[str, np.ndarray],
    test_conf: dict[str, np.ndarray],
    n_bootstrap: int,
    seed: int,
) -> dict:
    """A labelled set from another source: classification metrics, and how well each score
    tells it from the test set (AUROC near 0.5: no shift a gate would see)."""
    m = p.labelled
    y, pred = p.y[m], p.pred[m]
    entry = classification_metrics(y, p.probs[m])
    entry["balanced_accuracy_ci95"] = list(
        metric_ci("balanced_accuracy", y, pred, None, n_bootstrap, seed)
    )
    entry["detection_vs_test"] = {
        s: ood_detection(test_conf[s], v[m]) for s, v in conf.items() if s in test_conf
    }
    return entry


def _policy_step(
    run: _Run,
    result: dict,
    selective: Selective | None,
    gates: _GateOptions,
    s: _Settings,
    step: Callable[[str], None],
) -> tuple[Selective | None, dict]:
    """The gated selective classifier when asked for (result["policy"]), and its decisions."""
    if not (gates.ood_gate or gates.choose):
        return None, {}
    if run.fit_p is None:
        raise ConfigError("--ood-gate and --choose-gate need --val or --calib to fit the gate on.")
    step("gated selective classifier")
    named_sets = {
        "test": run.test,
        **_named(run.external, result.get("external", {})),
        **_named(run.ood, result.get("ood", {})),
    }
    for name, extra in (("corrupted", gates.shifted), ("target_domain", gates.target_domain)):
        if extra is not None:
            if name in named_sets:
                raise ConfigError(f"A set is already named {name!r}; rename its dataset column.")
            named_sets[name] = extra
    gated = _fit_gated(run, selective, gates, s)
    chosen = gated.selective
    block: dict = {
        "fitted_on": run.fitted_on,
        "id_keep": gates.id_keep,
        "confidence_gate": chosen.confidence_gate,  # coverage where auto certified no risk
    }
    block.update(gated.choice)
    block["gate"] = chosen.ood_gate
    block["threshold"] = chosen.threshold
    block["target_risk"] = chosen.target_risk
    block["delta"] = chosen.delta
    block["target_coverage"] = chosen.target_coverage
    # on the calibration images the OOD gate keeps: what the confidence gate accepts, their
    # error rate, and its upper bound with probability 1 - delta
    block[run.fitted_on] = {
        "n": chosen.n_calib,
        "coverage": chosen.calib_coverage,
        "risk": chosen.calib_risk,
        "bound": chosen.bound,
    }
    block["sets"], decisions = _policy_sets(gated.selective, selective, named_sets, run, s)
    add_subgroups(block["sets"], named_sets, decisions)
    result["policy"] = block
    return gated.selective, decisions


def _fit_gated(run: _Run, single: Selective | None, gates: _GateOptions, s: _Settings) -> _Gated:
    """Fit the gated classifier on the calibration (or validation) file: the OOD gate given
    or chosen without OOD labels, then the confidence gate on the images it keeps."""
    from skinclf.contracts.selective import combination_parts
    from skinclf.evaluate import shift
    from skinclf.scoring.feature_scores import FEATURE_SCORES

    fit_p = run.fit_p
    assert fit_p is not None
    parse_fractions([gates.id_keep], "--id-keep")
    if gates.confidence_gate not in ("sgr", "coverage", "off"):
        raise ConfigError(f"--confidence-gate {gates.confidence_gate!r}: use sgr, coverage or off.")
    score = single.score if single is not None else "msp"

    def fit(gate_score: str, chosen_by: str = "", confidence_gate: str = "") -> Selective:
        needs_stats = any(c in FEATURE_SCORES for c in combination_parts(gate_score))
        return shift.fit_gated_policy(
            fit_p,
            run.fitted_on,
            score,
            run.temperature,
            gate_score,
            gates.id_keep,
            confidence_gate or gates.confidence_gate,
            *s.gated_risk,
            gates.target_coverage,
            "selective_stats.npz" if needs_stats else None,
            chosen_by,
        )

    ood_gate, chosen_by, choice = gates.ood_gate, "given (--ood-gate)", {}
    if gates.choose:
        ood_gate, choice = _choose(run, gates, score, fit)
        chosen_by = f"--choose-gate: {choice['choice_criterion']}"
    assert ood_gate is not None
    needs_stats = any(c in FEATURE_SCORES for c in combination_parts(ood_gate))
    if needs_stats and gates.gate_stats is None:
        raise ConfigError(
            f"The OOD gate {ood_gate!r} uses feature scores: give --gate-stats RUN/"
            "feature_stats.npz (written by `skinclf predict --scores ...`), so that predict "
            "can apply it without the training images."
        )
    return _Gated(fit(ood_gate, chosen_by), choice)


def _choose(
    run: _Run, gates: _GateOptions, score: str, fit: Callable[[str], Selective]
) -> tuple[str, dict]:
    """--choose-gate: the gate candidate and the table of every candidate's rating."""
    from skinclf.evaluate import shift

    fit_p = run.fit_p
    assert fit_p is not None
    candidates = shift.gate_candidates(fit_p, score)
    excluded: dict[str, str] = {}
    if gates.shifted is not None:
        shift.require_components(gates.shifted, candidates, "--shifted")
        judge = shift.silent_failures(gates.shifted)
        best, table, excluded = _by_policy(run, candidates, fit, judge)
        criterion, rating, mode = shift.SHIFTED_CRITERION, "silent failure rate", "shifted"
    elif gates.target_domain is not None:
        shift.require_components(gates.target_domain, candidates, "--target-domain")
        best, table, excluded = _by_policy(
            run, candidates, fit, shift.accepted_share(gates.target_domain)
        )
        criterion, rating = shift.TARGET_DOMAIN_CRITERION, "target-domain share accepted"
        mode = "target_domain"
    else:
        best, table = shift.choose_gate(fit_p, candidates, gates.id_keep, run.temperature)
        criterion, rating, mode = shift.CHOOSE_GATE_CRITERION, "error rate kept", "errors_kept"
    return best, {
        "choice": table,
        "choice_excluded": excluded,
        "choice_criterion": criterion,
        "choice_rating": rating,
        "choice_mode": mode,
    }


def _by_policy(run: _Run, candidates: Sequence[str], fit: Callable, judge: Callable) -> tuple:
    """shift.choose_gate_by_policy; when no candidate's confidence gate has a solution, the
    gate is chosen on its own (confidence gate off for the choice), with a note."""
    from skinclf.evaluate import shift

    best, table, excluded = shift.choose_gate_by_policy(candidates, fit, judge, allow_empty=True)
    if table:
        return best, table, excluded
    run.notes.append(
        "No gate candidate leaves a confidence threshold that meets --target-risk, so the gate "
        "was chosen with the confidence gate off; the stored classifier abstains on every image "
        "(raise --target-risk, or use --confidence-gate coverage)."
    )
    best, table, _ = shift.choose_gate_by_policy(candidates, lambda c: fit(c, "", "off"), judge)
    return best, table, excluded


def _policy_sets(
    gated: Selective,
    single: Selective | None,
    named_sets: dict[str, Predictions],
    run: _Run,
    s: _Settings,
) -> tuple[dict, dict[str, tuple]]:
    """The gated and the single-score classifier measured on every set, and the gated one's
    decisions per set (image ids, abstain, reason)."""
    from skinclf.evaluate import shift

    sets, decisions = {}, {}
    for name, p in named_sets.items():
        mine, abstain, reason = shift.outcome(gated, p, s.n_bootstrap, s.seed)
        entry = {"gated": mine}
        if single is not None:
            entry["single_score"] = shift.outcome(single, p, s.n_bootstrap, s.seed)[0]
        if p.labelled.any():
            msp = score_values(p, "msp", run.temperature)
            entry["vs_msp_same_coverage"] = shift.same_coverage_comparison(
                p, ~abstain, msp, s.n_bootstrap, s.seed
            )
        sets[name] = entry
        decisions[name] = (p.image_ids, abstain, reason)
    return sets, decisions


def _write_gate_files(
    gated: Selective, gate_stats: str | Path | None, out_dir: Path, decisions: dict
) -> None:
    """Copy the gate's feature statistics beside selective.json; write each set's decisions."""
    import pandas as pd

    from skinclf.atomic import atomic_path

    gate = gated.gate
    if gate is not None and gate.stats_file and gate_stats is not None:
        with atomic_path(out_dir / gate.stats_file) as tmp:
            tmp.write_bytes(Path(gate_stats).read_bytes())
    folder = out_dir / "decisions"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (ids, abstain, reason) in decisions.items():
        frame = pd.DataFrame({"image_id": ids, "abstain": abstain, "abstain_reason": reason})
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
