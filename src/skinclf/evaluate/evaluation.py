"""The `skinclf evaluate` step: predictions files and a policy in; metrics.json, report.html
(and the gated classifier's decisions) out.

Model-agnostic: it reads only predictions files (DESIGN.md), so predictions from any model can
be evaluated. It measures; the policy it measures is fitted by `skinclf.policy`
(`SelectivePolicy`): given (the calibrate step's), or fitted from the validation and
calibration files for a standalone `skinclf evaluate` (then written to OUT/selective.json).
With only a test file it reports what needs no fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinclf.contracts.metrics_report import MetricsReport
from skinclf.contracts.predictions import Predictions, read_predictions
from skinclf.contracts.score_registry import CONFIDENCE_SCORES
from skinclf.contracts.scores import score_values
from skinclf.contracts.selective import Selective, apply_selective, load_selective
from skinclf.errors import ConfigError
from skinclf.evaluate import metrics as M
from skinclf.evaluate.bootstrap import metric_ci
from skinclf.evaluate.calibration import calibration_summary
from skinclf.evaluate.classification import baselines, classification_metrics
from skinclf.evaluate.ood import ood_detection, semantic_ood_at_threshold
from skinclf.evaluate.report import ScoredSet, write_report
from skinclf.evaluate.selective import (
    DEFAULT_COVERAGES,
    aurc,
    check_fraction,
    selective_summary,
)
from skinclf.evaluate.subgroups import add_subgroups
from skinclf.jsonable import jsonable
from skinclf.policy.fit import PolicySettings, SelectivePolicy
from skinclf.policy.sgr import (
    ThresholdOutcome,
    apply_threshold,
)

__all__ = [
    "EvaluationOptions",
    "EvaluationResult",
    "PredictionSets",
    "Selective",
    "apply_selective",
    "baselines",
    "classification_metrics",
    "evaluate_predictions",
    "load_selective",
    "parse_fractions",
]


@dataclass
class EvaluationResult:
    """What `evaluate_predictions` wrote and computed: `report` is metrics.json."""

    report: MetricsReport
    selective: Selective | None
    metrics_path: Path
    report_path: Path
    selective_path: Path | None

    @property
    def metrics(self) -> dict:
        """Deprecated: metrics.json as a dict (`report.model_dump()`); read `report`."""
        return self.report.model_dump()


@dataclass(frozen=True)
class _Settings:
    """The numbers every measurement uses: the policy's target risk, coverages, the bootstrap."""

    target_risk: float
    delta: float
    coverages: tuple[float, ...]
    n_bootstrap: int
    seed: int


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


def _available_scores(test: Predictions, temperature: float | None) -> list[str]:
    names = [s for s in CONFIDENCE_SCORES if s != "msp_ts" or temperature is not None]
    return names + [c for c in test.conf if c not in names]


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


@dataclass(frozen=True)
class PredictionSets:
    """The predictions files an evaluation reads, by set. `ood` and `external` may be several
    files; `shifted` (the validation images under synthetic corruption) and `target_domain`
    (unlabelled images of the deployment domain) serve the OOD gate's choice when the policy is
    fitted here, and `shifted` is measured too; `names` gives each --ood/--external file its
    set name (`skinclf run` and `cv` give their folders'; default: the file's dataset)."""

    test: str | Path
    val: str | Path | None = None
    calib: str | Path | None = None
    ood: Sequence[str | Path] = ()
    external: Sequence[str | Path] = ()
    shifted: str | Path | None = None
    target_domain: str | Path | None = None
    names: Mapping[str | Path, str] | None = None


@dataclass(frozen=True)
class EvaluationOptions:
    """What is measured and how: the scores (default: every one available: logit scores,
    msp_ts with a validation file, the test file's conf_ columns), the coverages of the
    selective tables, bootstrap resamples and seed, and example images in report.html."""

    scores: Sequence[str] | None = None
    coverages: Sequence[float] = DEFAULT_COVERAGES
    n_bootstrap: int = 1000
    seed: int = 0
    examples: bool = True


def evaluate_predictions(
    sets: PredictionSets,
    out_dir: str | Path,
    policy: SelectivePolicy | PolicySettings,
    options: EvaluationOptions = EvaluationOptions(),
    gate_stats: str | Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Measure the predictions files of `sets` under a policy; write metrics.json and
    report.html (and, for a policy fitted here, selective.json).

    `policy`: a fitted `SelectivePolicy` (the calibrate step's, `SelectivePolicy.load`) is
    measured as it is: nothing is fitted and no selective.json is written. `PolicySettings`
    are fitted here first (`SelectivePolicy.fit` on the validation and calibration files, the
    OOD gate's feature statistics `gate_stats`, RUN/feature_stats.npz, copied beside
    selective.json) and the policy is written to OUT/selective.json. `on_step` is told each
    step's name (progress).
    """
    step = on_step or (lambda _s: None)
    step("reading predictions")
    run = _read_inputs(sets.test, sets.val, sets.calib, sets.ood, sets.external, sets.names)
    shifted_p, target_p = _choice_files(sets.shifted, sets.target_domain)
    fitted_here = isinstance(policy, PolicySettings)
    if isinstance(policy, PolicySettings):
        step("fitting the policy")
        policy = SelectivePolicy(policy)
        policy.fit(run.val, run.calib, shifted_p, target_p, gate_stats)
    run.temperature = policy.temperature if run.val is not None else None
    run.notes.extend(policy.notes)
    o = options
    s = _settings(policy.target_risk, policy.delta, o.coverages, o.n_bootstrap, o.seed)
    run.score_names = _score_names(o.scores, run.test, run.temperature)
    result, decisions = _measure(run, policy, s, step, shifted_p, target_p)
    result["scores"] = list(run.score_names)
    result["settings"] = _settings_block(s, sets, policy.record.get("risk_choice"))
    result["notes"] = list(dict.fromkeys(run.notes))
    step("writing the report")
    report = MetricsReport.model_validate(jsonable(result))
    return _write_outputs(Path(out_dir), report, run, policy, fitted_here, decisions, o.examples)


def _measure(
    run: _Run,
    policy: SelectivePolicy,
    s: _Settings,
    step: Callable[[str], None],
    shifted: Predictions | None,
    target_domain: Predictions | None,
) -> tuple[dict, dict]:
    """Every set measured under `policy`: metrics.json's blocks, and the gated decisions."""
    result: dict = {"test": _test_block(run, s, step)}
    if run.val is not None:
        result.update(_val_blocks(run))
    selective = policy.single
    if selective is not None:
        result["sgr"] = _sgr_block(run, selective, policy.record.get("single_fit"), s)
    _ood_blocks(run, result, selective, s, step)
    _external_blocks(run, result, s, step)
    decisions = _policy_step(run, result, policy, shifted, target_domain, s, step)
    if run.calib is not None:
        run.scored(run.calib, "calib", "calib")
    return result, decisions


def _settings(
    target_risk: float, delta: float, coverages: Sequence[float], n_bootstrap: int, seed: int
) -> _Settings:
    fractions = parse_fractions(coverages, "coverage")
    return _Settings(float(target_risk), float(delta), fractions, n_bootstrap, seed)


def _choice_files(
    shifted: str | Path | None, target_domain: str | Path | None
) -> tuple[Predictions | None, Predictions | None]:
    """The files --choose-gate judges candidates on, read: --shifted or --target-domain."""
    files = (shifted, target_domain)
    read = [read_predictions(f, require_labels=False) if f else None for f in files]
    return read[0], read[1]


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


def _sgr_block(run: _Run, selective: Selective, fit: dict | None, s: _Settings) -> dict:
    """The SGR fit (the policy's record of it; from the stored classifier for a policy file
    written before the record) and the same threshold on the test set (and its semantic OOD
    rows)."""
    fit = fit or {
        "threshold": selective.threshold,
        "solution_exists": selective.solution_exists,
        "steps": None,
        "n": selective.n_calib,
        "n_accepted": round(selective.calib_coverage * selective.n_calib),
        "coverage": selective.calib_coverage,
        "risk": selective.calib_risk,
        "bound": selective.bound,
    }
    tm = run.test.labelled
    test_residuals = (run.test.pred[tm] != run.test.y[tm]).astype(float)
    conf_all = run.score(run.test, selective.score)
    on_test = apply_threshold(conf_all[tm], test_residuals, fit["threshold"], s.target_risk)
    block = {
        "score": selective.score,
        "temperature": selective.temperature,
        "target_risk": s.target_risk,
        "delta": s.delta,
        "fitted_on": selective.fitted_on,
        "confidence_gate": selective.confidence_gate,
        "solution_exists": fit["solution_exists"],
        "threshold": fit["threshold"],
        "steps": fit["steps"],
        selective.fitted_on: {
            "n": fit["n"],
            "n_accepted": fit["n_accepted"],
            "coverage": fit["coverage"],
            "risk": fit["risk"],
            "bound": fit["bound"],
        },
        "test": _outcome(on_test),
        "note": selective.note,
    }
    if run.test.semantic_ood.any():
        block["test_semantic_ood"] = semantic_ood_at_threshold(
            conf_all[tm], test_residuals, conf_all[run.test.semantic_ood], fit["threshold"]
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


def _settings_block(s: _Settings, sets: PredictionSets, choice: dict | None = None) -> dict:
    return {
        **({"target_risk_choice": choice} if choice is not None else {}),
        "target_risk": s.target_risk,
        "delta": s.delta,
        "coverages": list(s.coverages),
        "n_bootstrap": s.n_bootstrap,
        "seed": s.seed,
        "files": {
            "test": str(sets.test),
            "val": str(sets.val) if sets.val else None,
            "calib": str(sets.calib) if sets.calib else None,
            "ood": [str(o) for o in sets.ood],
            "external": [str(e) for e in sets.external],
        },
    }


def _write_outputs(
    out_dir: Path,
    report: MetricsReport,
    run: _Run,
    policy: SelectivePolicy,
    fitted_here: bool,
    decisions: dict,
    examples: bool = True,
) -> EvaluationResult:
    """metrics.json, the decisions, report.html and, for a policy fitted here (not given),
    its selective.json (the gated classifier if any) with the gate's statistics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = report.save(out_dir / "metrics.json")
    selective_path = None
    if fitted_here and policy.selective is not None:
        selective_path = policy.save(out_dir)
    if policy.gated is not None:
        _write_decisions(out_dir, decisions)
    report_path = write_report(
        out_dir / "report.html",
        report,
        run.sets,
        temperature=run.temperature,
        selective=policy.single,
        gated=policy.gated,
        examples=examples,
    )
    return EvaluationResult(report, policy.single, metrics_path, report_path, selective_path)


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
    policy: SelectivePolicy,
    shifted: Predictions | None,
    target_domain: Predictions | None,
    s: _Settings,
    step: Callable[[str], None],
) -> dict:
    """The gated selective classifier measured on every set (result["policy"]), when the
    policy has one; its decisions per set."""
    chosen = policy.gated
    if chosen is None:
        return {}
    step("gated selective classifier")
    named_sets = {
        "test": run.test,
        **_named(run.external, result.get("external", {})),
        **_named(run.ood, result.get("ood", {})),
    }
    for name, extra in (("corrupted", shifted), ("target_domain", target_domain)):
        if extra is not None:
            if name in named_sets:
                raise ConfigError(f"A set is already named {name!r}; rename its dataset column.")
            named_sets[name] = extra
    gate = chosen.gate
    block: dict = {
        "fitted_on": chosen.fitted_on,
        "id_keep": gate.id_keep if gate is not None else None,
        "confidence_gate": chosen.confidence_gate,  # coverage where auto certified no risk
    }
    block.update(policy.record.get("gate_choice", {}))
    block["gate"] = chosen.ood_gate
    block["threshold"] = chosen.threshold
    block["target_risk"] = chosen.target_risk
    block["delta"] = chosen.delta
    block["target_coverage"] = chosen.target_coverage
    # on the calibration images the OOD gate keeps: what the confidence gate accepts, their
    # error rate, and its upper bound with probability 1 - delta
    block[chosen.fitted_on] = {
        "n": chosen.n_calib,
        "coverage": chosen.calib_coverage,
        "risk": chosen.calib_risk,
        "bound": chosen.bound,
    }
    block["sets"], decisions = _policy_sets(chosen, policy.single, named_sets, run, s)
    add_subgroups(block["sets"], named_sets, decisions)
    result["policy"] = block
    return decisions


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


def _write_decisions(out_dir: Path, decisions: dict) -> None:
    """Each set's decisions by the gated classifier: OUT/decisions/SET.csv."""
    import pandas as pd

    from skinclf.atomic import atomic_path

    folder = out_dir / "decisions"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (ids, abstain, reason) in decisions.items():
        frame = pd.DataFrame({"image_id": ids, "abstain": abstain, "abstain_reason": reason})
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
