"""The `skinclf evaluate` step: predictions files in; metrics.json, report.html, selective.json out.

Model-agnostic: it reads only predictions files (DESIGN.md), so predictions from any model can
be evaluated. With only a test file it reports what needs no fitting; a validation file enables
temperature scaling (`msp_ts`) and the choice of the selective score; the SGR threshold is
fitted on the calibration file when given, else on the validation file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinclf.classes import CLASSES, NUM_CLASSES
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.contracts.scores import SCORES, msp_ts
from skinclf.contracts.selective import Selective, apply_selective, load_selective, save_selective
from skinclf.errors import ConfigError
from skinclf.evaluate import metrics as M
from skinclf.evaluate.bootstrap import metric_ci
from skinclf.evaluate.calibration import calibration_summary, fit_temperature
from skinclf.evaluate.ood import ood_detection, semantic_ood_at_threshold
from skinclf.evaluate.report import ScoredSet, write_report
from skinclf.evaluate.selective import (
    DEFAULT_COVERAGES,
    aurc,
    check_fraction,
    selective_summary,
)
from skinclf.evaluate.sgr import SGRResult, ThresholdOutcome, apply_threshold, sgr

__all__ = [
    "EvaluationResult",
    "Selective",
    "apply_selective",
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


def _score_values(p: Predictions, name: str, temperature: float | None) -> np.ndarray | None:
    """A score on every row: a conf_<name> column if present, else computed from logits."""
    if name == "msp_ts":
        return None if temperature is None else msp_ts(p.logits, temperature)
    if name in p.conf:
        return p.conf[name]
    if name in SCORES:
        return SCORES[name](p.logits)
    return None


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


def _per_class(values: np.ndarray) -> dict[str, float | None]:
    return {c: (None if np.isnan(v) else float(v)) for c, v in zip(CLASSES, values, strict=True)}


def _outcome(o: ThresholdOutcome) -> dict:
    return {
        "coverage": o.coverage,
        "risk": o.risk,
        "n": o.n,
        "n_accepted": o.n_accepted,
        "target_met": o.target_met,
    }


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class recall/precision/AUROC, NLL, Brier, ECE."""
    pred = probs.argmax(axis=1)
    auroc = M.auroc_ovr(y, probs)
    return {
        "n": len(y),
        "accuracy": M.accuracy(y, pred),
        "balanced_accuracy": M.balanced_accuracy(y, pred),
        "macro_f1": M.macro_f1(y, pred),
        "recall": _per_class(M.recall_per_class(y, pred)),
        "precision": _per_class(M.precision_per_class(y, pred)),
        "auroc_ovr": _per_class(auroc),
        "auroc_ovr_macro": float(np.nanmean(auroc)) if not np.isnan(auroc).all() else None,
        "nll": M.nll(probs, y),
        "brier": M.brier(probs, y),
        "ece": M.ece(probs, y),
        "confusion_matrix": M.confusion_matrix(y, pred).tolist(),
    }


def baselines(y_test: np.ndarray, y_prior: np.ndarray, prior_from: str) -> dict:
    """Majority-class and prior-sampling predictors, as expected values (no random draws)."""
    prior = np.bincount(y_prior, minlength=NUM_CLASSES) / len(y_prior)
    freq = np.bincount(y_test, minlength=NUM_CLASSES) / len(y_test)
    present = freq > 0
    majority = int(prior.argmax())
    constant = np.full(len(y_test), majority)
    return {
        "prior_from": prior_from,
        "majority": {
            "class": CLASSES[majority],
            "accuracy": M.accuracy(y_test, constant),
            "balanced_accuracy": M.balanced_accuracy(y_test, constant),
            "macro_f1": M.macro_f1(y_test, constant),
        },
        "prior_sampling": {
            # predict class c with probability prior_c, independently of the image
            "accuracy": float((freq * prior).sum()),
            "balanced_accuracy": float(prior[present].mean()),
        },
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


def _ood_name(p: Predictions, used: set[str]) -> str:
    values = set(p.dataset.tolist())
    base = values.pop() if len(values) == 1 and p.dataset[0] else Path(str(p.path)).stem
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
    confidence_gate: str = "sgr",
    target_coverage: float | None = None,
    target_risk: float = 0.10,
    delta: float = 0.05,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    selective_score: str = "auto",
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate predictions files and write metrics.json, report.html and selective.json.

    `scores` defaults to every score available (logit scores, msp_ts with --val, and the test
    file's conf_ columns). `selective_score` "auto" picks the logit score with the lowest AURC
    on the validation set (msp without one). `on_step` is told each step's name (progress).

    `ood_gate` (a score or a combination `a+b`; `choose_gate` picks one without OOD labels)
    adds an out-of-distribution gate that keeps `id_keep` of the calibration (or validation)
    images, before the confidence gate (`confidence_gate`: sgr, coverage, off); its feature
    statistics (`gate_stats`, written by predict) are copied beside selective.json. `external`
    files are labelled in-distribution sets from other sources (e.g. the ISIC 2018 test
    images), measured like the test set.
    """
    _check_targets(float(target_risk), float(delta))
    coverages = parse_fractions(coverages, "coverage")
    step = on_step if (progress and on_step) else (lambda _s: None)
    out_dir = Path(out_dir)

    step("reading predictions")
    test_p = read_predictions(test)
    val_p = read_predictions(val) if val else None
    calib_p = read_predictions(calib) if calib else None
    ood_ps = [read_predictions(o, require_labels=False) for o in ood]
    ext_ps = [read_predictions(e) for e in external]
    if not test_p.labelled.any():
        raise ConfigError(f"{test}: no labelled in-distribution rows to evaluate.")
    for name, p in (("validation", val_p), ("calibration", calib_p)):
        if p is not None and p.labelled.sum() < 2:
            raise ConfigError(f"{p.path}: the {name} file needs at least 2 labelled rows.")

    notes: list[str] = []
    temperature = None
    if val_p is not None:
        step("fitting the temperature")
        vm = val_p.labelled
        temperature = fit_temperature(val_p.logits[vm], val_p.y[vm])

    available = _available_scores(test_p, temperature)
    if scores:
        unknown = [s for s in scores if s not in available]
        if unknown:
            hint = " (msp_ts needs --val)" if "msp_ts" in unknown else ""
            raise ConfigError(
                f"score(s) {', '.join(unknown)} not available{hint}; available: "
                f"{', '.join(available)}."
            )
        score_names = list(dict.fromkeys(scores))
    else:
        score_names = available

    def scored(p: Predictions, kind: str, name: str) -> ScoredSet:
        conf = {}
        for s in score_names:
            values = _score_values(p, s, temperature)
            if values is None:
                notes.append(f"{name}: score {s} is missing (no conf_{s} column); skipped.")
            else:
                conf[s] = values
        return ScoredSet(name=name, kind=kind, preds=p, conf=conf)

    test_set = scored(test_p, "test", "test")
    sets = [test_set]

    # ---- test set
    step("test metrics")
    tm = test_p.labelled
    y, probs, pred = test_p.y[tm], test_p.probs[tm], test_p.pred[tm]
    test_conf = {s: v[tm] for s, v in test_set.conf.items()}
    test_metrics = classification_metrics(y, probs)
    step("bootstrap intervals")
    test_metrics["balanced_accuracy_ci95"] = list(
        metric_ci("balanced_accuracy", y, pred, None, n_bootstrap, seed)
    )
    test_metrics["selective"] = _selective_block(y, pred, test_conf, coverages, target_risk)
    for s, values in test_conf.items():
        for metric in ("aurc", "augrc"):
            test_metrics["selective"][s][f"{metric}_ci95"] = list(
                metric_ci(metric, y, pred, values, n_bootstrap, seed)
            )
    prior_y = val_p.y[val_p.labelled] if val_p is not None else y
    test_metrics["baselines"] = baselines(y, prior_y, "val" if val_p is not None else "test")
    result: dict = {"test": test_metrics}

    # ---- validation set and temperature scaling
    if val_p is not None:
        val_set = scored(val_p, "val", "val")
        sets.append(val_set)
        vm = val_p.labelled
        vy, vpred = val_p.y[vm], val_p.pred[vm]
        val_conf = {s: v[vm] for s, v in val_set.conf.items()}
        result["val"] = {
            "n": int(vm.sum()),
            "accuracy": M.accuracy(vy, vpred),
            "balanced_accuracy": M.balanced_accuracy(vy, vpred),
            "selective": {s: {"aurc": aurc(v, vy != vpred)} for s, v in val_conf.items()},
        }
        result["calibration"] = {
            "temperature": temperature,
            "fitted_on": "val",
            "val": calibration_summary(val_p.logits[vm], vy, temperature, val_p.probs[vm]),
            "test": calibration_summary(test_p.logits[tm], y, temperature, probs),
        }

    # ---- choice of the selective score and SGR
    fit_p = calib_p if calib_p is not None else val_p
    selective = None
    if selective_score != "auto" and selective_score not in LOGIT_SCORES:
        raise ConfigError(
            f"selective score {selective_score!r} cannot be computed from logits by predict;"
            f" use one of {', '.join(LOGIT_SCORES)} or auto."
        )
    if selective_score == "msp_ts" and temperature is None:
        raise ConfigError("selective score msp_ts needs --val to fit the temperature.")
    if fit_p is not None:
        step("selection with guaranteed risk")
        auto = selective_score == "auto" and val_p is not None
        if selective_score == "auto":
            if val_p is not None:
                candidates = [s for s in LOGIT_SCORES if s != "msp_ts" or temperature]
                val_aurc = {
                    s: aurc(_score_values(val_p, s, temperature)[vm], vy != vpred)
                    for s in candidates
                }
                chosen = min(val_aurc, key=lambda s: val_aurc[s])
            else:
                chosen = "msp"
        else:
            chosen = selective_score
        fitted_on = "calib" if calib_p is not None else "val"
        fit_conf = _score_values(fit_p, chosen, temperature)
        fit = _fit_sgr(fit_p, fit_conf, target_risk, delta)
        also = [w for w, used in (("temperature", chosen == "msp_ts"), ("score", auto)) if used]
        sgr_note = (
            VAL_SELECTION_NOTE.format(f" (and the {' and the '.join(also)})" if also else "")
            if fitted_on == "val"
            else ""
        )
        if sgr_note:
            notes.append(sgr_note)
        if not fit.solution_exists:
            notes.append(
                f"SGR found no threshold whose risk bound is below {target_risk:g} on "
                f"{fitted_on} ({fit.n} images): the stored classifier abstains on everything; "
                "raise --target-risk or use a larger calibration set."
            )
        selective = Selective(
            score=chosen,
            temperature=float(temperature) if temperature is not None else None,
            threshold=fit.threshold,
            target_risk=float(target_risk),
            delta=float(delta),
            solution_exists=fit.solution_exists,
            fitted_on=fitted_on,
            n_calib=fit.n,
            calib_coverage=fit.coverage,
            calib_risk=fit.risk,
            bound=fit.bound,
            note=sgr_note,
        )
        test_residuals = (pred != y).astype(float)
        on_test = apply_threshold(
            _score_values(test_p, chosen, temperature)[tm],
            test_residuals,
            fit.threshold,
            target_risk,
        )
        result["sgr"] = {
            "score": chosen,
            "temperature": selective.temperature,
            "target_risk": float(target_risk),
            "delta": float(delta),
            "fitted_on": fitted_on,
            "solution_exists": fit.solution_exists,
            "threshold": fit.threshold,
            "steps": fit.steps,
            fitted_on: {
                "n": fit.n,
                "n_accepted": fit.n_accepted,
                "coverage": fit.coverage,
                "risk": fit.risk,
                "bound": fit.bound,
            },
            "test": _outcome(on_test),
            "note": sgr_note,
        }
        if test_p.semantic_ood.any():
            conf_all = _score_values(test_p, chosen, temperature)
            result["sgr"]["test_semantic_ood"] = semantic_ood_at_threshold(
                conf_all[tm], test_residuals, conf_all[test_p.semantic_ood], fit.threshold
            )
    else:
        notes.append(
            "No --val or --calib file: no temperature scaling, no SGR threshold and no "
            "selective.json (they need fitting on held-out predictions)."
        )

    # ---- out-of-distribution sets
    used: set[str] = set()
    if ood_ps:
        result["ood"] = {}
    for p in ood_ps:
        name = _ood_name(p, used)
        step(f"out-of-distribution set {name}")
        oset = scored(p, "ood", name)
        sets.append(oset)
        om, scc = p.labelled, p.semantic_ood
        entry: dict = {"n": p.n, "n_mapped": int(om.sum()), "n_semantic_ood": int(scc.sum())}
        entry["detection"] = {
            s: ood_detection(test_conf[s], v) for s, v in oset.conf.items() if s in test_conf
        }
        if om.any():
            oy, opred = p.y[om], p.pred[om]
            mapped = classification_metrics(oy, p.probs[om])
            mapped.pop("confusion_matrix")
            mapped.pop("n")
            entry.update(mapped)
            entry["confusion_matrix"] = M.confusion_matrix(oy, opred).tolist()
            entry["selective"] = _selective_block(
                oy, opred, {s: v[om] for s, v in oset.conf.items()}, coverages, target_risk
            )
        if selective is not None:
            conf_sel = _score_values(p, selective.score, temperature)
            accepted = (
                conf_sel >= selective.threshold
                if selective.threshold is not None
                else np.zeros(p.n, bool)
            )
            entry["coverage_at_threshold"] = float(accepted.mean())  # all rows, labelled or not
            if om.any():
                o_res = (p.pred[om] != p.y[om]).astype(float)
                entry["sgr"] = _outcome(
                    apply_threshold(conf_sel[om], o_res, selective.threshold, target_risk)
                )
            else:
                o_res = np.zeros(0)
            if scc.any():
                entry["semantic_ood"] = semantic_ood_at_threshold(
                    conf_sel[om], o_res, conf_sel[scc], selective.threshold
                )
        result["ood"][name] = entry

    for p in ext_ps:
        name = _ood_name(p, used)
        step(f"external set {name}")
        eset = scored(p, "external", name)
        sets.append(eset)
        result.setdefault("external", {})[name] = _external_block(
            p, eset.conf, test_conf, n_bootstrap, seed
        )

    for es in (x for x in sets if x.kind == "external"):
        em = es.preds.labelled
        for os_ in (x for x in sets if x.kind == "ood"):
            result["ood"][os_.name].setdefault("detection_vs_external", {})[es.name] = {
                s: ood_detection(es.conf[s][em], v) for s, v in os_.conf.items() if s in es.conf
            }

    gated, decisions = None, {}
    if (ood_gate or choose_gate) and fit_p is not None:
        step("gated selective classifier")
        gated, result["policy"], decisions = _gated_policy_block(
            fit_p,
            "calib" if calib_p is not None else "val",
            selective,
            temperature,
            ood_gate,
            choose_gate,
            id_keep,
            confidence_gate,
            target_risk,
            delta,
            target_coverage,
            gate_stats,
            {
                "test": test_p,
                **_named(ext_ps, result.get("external", {})),
                **_named(ood_ps, result.get("ood", {})),
            },
            n_bootstrap,
            seed,
        )
    elif ood_gate or choose_gate:
        raise ConfigError("--ood-gate and --choose-gate need --val or --calib to fit the gate on.")

    if calib_p is not None:
        sets.append(scored(calib_p, "calib", "calib"))
    result["scores"] = list(score_names)
    result["settings"] = {
        "target_risk": float(target_risk),
        "delta": float(delta),
        "coverages": list(coverages),
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "files": {
            "test": str(test),
            "val": str(val) if val else None,
            "calib": str(calib) if calib else None,
            "ood": [str(o) for o in ood],
            "external": [str(e) for e in external],
        },
    }
    result["notes"] = list(dict.fromkeys(notes))
    metrics = _jsonable(result)

    step("writing the report")
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
        sets,
        temperature=temperature,
        selective=selective,
        gated=gated,
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


def _gated_policy_block(
    fit_p: Predictions,
    fitted_on: str,
    single: Selective | None,
    temperature: float | None,
    ood_gate: str | None,
    choose: bool,
    id_keep: float,
    confidence_gate: str,
    target_risk: float,
    delta: float,
    target_coverage: float | None,
    gate_stats: str | Path | None,
    named_sets: dict[str, Predictions],
    n_bootstrap: int,
    seed: int,
) -> tuple[Selective, dict, dict[str, tuple]]:
    """Fit the gated classifier on `fit_p`, then measure it and the single-score classifier
    on every set. Returns the classifier, its metrics block and the per-set decisions."""
    from skinclf.contracts.selective import combination_parts
    from skinclf.evaluate import shift
    from skinclf.evaluate.feature_scores import FEATURE_SCORES

    parse_fractions([id_keep], "--id-keep")
    if confidence_gate not in ("sgr", "coverage", "off"):
        raise ConfigError(f"--confidence-gate {confidence_gate!r}: use sgr, coverage or off.")
    score = single.score if single is not None else "msp"
    block: dict = {"fitted_on": fitted_on, "id_keep": id_keep, "confidence_gate": confidence_gate}
    chosen_by = "given (--ood-gate)"
    if choose:
        candidates = shift.gate_candidates(fit_p, score)
        ood_gate, block["choice"] = shift.choose_gate(fit_p, candidates, id_keep, temperature)
        chosen_by = f"--choose-gate: {shift.CHOOSE_GATE_CRITERION}"
        block["choice_criterion"] = shift.CHOOSE_GATE_CRITERION
    assert ood_gate is not None
    needs_stats = any(c in FEATURE_SCORES for c in combination_parts(ood_gate))
    if needs_stats and gate_stats is None:
        raise ConfigError(
            f"The OOD gate {ood_gate!r} uses feature scores: give --gate-stats RUN/"
            "feature_stats.npz (written by `skinclf predict --scores ...`), so that predict "
            "can apply it without the training images."
        )
    gated = shift.fit_gated_policy(
        fit_p,
        fitted_on,
        score,
        temperature,
        ood_gate,
        id_keep,
        confidence_gate,
        target_risk,
        delta,
        target_coverage,
        "selective_stats.npz" if needs_stats else None,
        chosen_by,
    )
    block["gate"] = gated.ood_gate
    block["threshold"] = gated.threshold
    block["sets"], decisions = {}, {}
    for name, p in named_sets.items():
        mine, abstain, reason = shift.outcome(gated, p, n_bootstrap, seed)
        entry = {"gated": mine}
        if single is not None:
            entry["single_score"] = shift.outcome(single, p, n_bootstrap, seed)[0]
        if p.labelled.any():
            msp = shift.score_values(p, "msp", temperature)
            entry["vs_msp_same_coverage"] = shift.same_coverage_comparison(
                p, ~abstain, msp, n_bootstrap, seed
            )
        block["sets"][name] = entry
        decisions[name] = (p.image_ids, abstain, reason)
    return gated, block, decisions


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
