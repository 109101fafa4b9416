"""`skinclf evaluate` command(s)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from skinclf.contracts.score_registry import GATE_SCORES
from skinclf.errors import ConfigError

if TYPE_CHECKING:
    from skinclf.contracts.metrics_report import (
        MetricsReport,
        PolicyBlock,
        PolicyOutcome,
        SgrBlock,
    )

console = Console()


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


# the options of `skinclf evaluate`, one per line of its signature
_TEST = typer.Option(..., "--test", help="Predictions file of the test split.")
_OUT = typer.Option(..., "--out", help="Output folder (a run's eval/ by convention).")
_VAL = typer.Option(
    None, "--val", help="Validation predictions: enables temperature scaling and SGR."
)
_CALIB = typer.Option(
    None, "--calib", help="Calibration predictions: the SGR threshold is fitted here."
)
_OOD = typer.Option([], "--ood", help="Out-of-distribution predictions file (repeatable).")
_EXTERNAL = typer.Option(
    [],
    "--external",
    help="Labelled in-distribution predictions from another source, e.g. the ISIC 2018 "
    "test images (repeatable): measured like --test, and must be kept by an OOD gate.",
)
_SCORES = typer.Option(
    None, "--scores", help="Comma-separated scores to evaluate (default: all available)."
)
_OOD_GATE = typer.Option(
    None,
    "--ood-gate",
    help="Out-of-distribution gate before the confidence gate: a score that can gate ("
    f"{', '.join(GATE_SCORES)}) or a rank combination such as mahalanobis+msp.",
)
_ID_KEEP = typer.Option(
    0.95, "--id-keep", help="Share of in-distribution calibration images the gate keeps."
)
_GATE_STATS = typer.Option(
    None,
    "--gate-stats",
    help="Feature statistics of the run (RUN/feature_stats.npz, fitted by `skinclf calibrate` "
    "or a `skinclf run`); copied beside selective.json so predict needs no training images.",
)
_CHOOSE_GATE = typer.Option(
    False,
    "--choose-gate",
    help="Choose the gate score without OOD labels. With --shifted: the one whose policy "
    "leaves the fewest silent failures on the corrupted in-distribution images; without: "
    "the one that leaves the fewest errors among the calibration images it keeps.",
)
_SHIFTED = typer.Option(
    None,
    "--shifted",
    help="Predictions of in-distribution images under synthetic corruption (`skinclf "
    "predict RUN --split val --corrupt all`): what --choose-gate judges candidates on.",
)
_TARGET_DOMAIN = typer.Option(
    None,
    "--target-domain",
    help="Opt-in: predictions of a few unlabelled images of the target domain (patients "
    "disjoint from the evaluated ones); --choose-gate then picks the gate that accepts the "
    "fewest of them. Report the result apart from in-distribution-only choices.",
)
_CONFIDENCE_GATE = typer.Option(
    "sgr", "--confidence-gate", help="After the OOD gate: sgr, coverage or off."
)
_TARGET_COVERAGE = typer.Option(
    None, "--target-coverage", help="With --confidence-gate coverage: the share to keep."
)
_TARGET_RISK = typer.Option(
    "auto",
    "--target-risk",
    help="SGR target risk r* in (0, 1], or auto: the lowest of 0.02, 0.05, 0.1, 0.15, 0.2, "
    "0.25, 0.3, 0.4, 0.5 that SGR certifies on the --calib (else --val) predictions while "
    "accepting at least 70 % of them (each fitted at delta/9).",
)
_DELTA = typer.Option(0.05, "--delta", help="SGR confidence parameter in (0, 1).")
_COVERAGES = typer.Option(
    "1,0.9,0.8,0.7,0.5", "--coverages", help="Coverages for selective metrics, each in (0, 1]."
)
_SELECTIVE_SCORE = typer.Option(
    "auto",
    "--selective-score",
    help="Score stored in selective.json (auto: lowest validation AURC among logit scores).",
)
_POLICY = typer.Option(
    None,
    "--policy",
    help="A fitted policy (selective.json, e.g. RUN/eval/selective.json from `skinclf run` or "
    "`skinclf calibrate`) to measure: nothing is fitted and no selective.json written; the "
    "fitting options (--ood-gate ... --selective-score) are then not used.",
)
_BOOTSTRAP = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs.")
_SEED = typer.Option(0, "--seed", help="Seed of the bootstrap.")
_NO_EXAMPLES = typer.Option(
    False,
    "--no-examples",
    help="Leave the grid of accepted and rejected example images out of report.html.",
)


def evaluate(
    test: Path = _TEST,
    out: Path = _OUT,
    val: Path | None = _VAL,
    calib: Path | None = _CALIB,
    ood: list[Path] = _OOD,
    external: list[Path] = _EXTERNAL,
    scores: str | None = _SCORES,
    ood_gate: str | None = _OOD_GATE,
    id_keep: float = _ID_KEEP,
    gate_stats: Path | None = _GATE_STATS,
    choose_gate: bool = _CHOOSE_GATE,
    shifted: Path | None = _SHIFTED,
    target_domain: Path | None = _TARGET_DOMAIN,
    confidence_gate: str = _CONFIDENCE_GATE,
    target_coverage: float | None = _TARGET_COVERAGE,
    target_risk: str = _TARGET_RISK,
    delta: float = _DELTA,
    coverages: str = _COVERAGES,
    selective_score: str = _SELECTIVE_SCORE,
    policy: Path | None = _POLICY,
    bootstrap: int = _BOOTSTRAP,
    seed: int = _SEED,
    no_examples: bool = _NO_EXAMPLES,
) -> None:
    """Evaluate predictions files: metrics.json and report.html in OUT, under a policy.

    The policy is the one given with --policy (measured as it is), else fitted here from --val
    and --calib and written to OUT/selective.json. Works on any predictions files (image_id,
    dataset, label, semantic_ood, logit_*, prob_*, optional conf_*), so predictions of other
    models can be evaluated too.

    Example: skinclf evaluate --val runs/a/eval/val.csv --calib runs/a/eval/calib.csv --test
    runs/a/eval/test.csv --ood runs/a/eval/pad.csv --out runs/a/eval
    """
    from skinclf.evaluate.evaluation import (
        EvaluationOptions,
        PredictionSets,
        evaluate_predictions,
        parse_fractions,
    )
    from skinclf.pipeline.summary import policy_warning
    from skinclf.policy.fit import PolicySettings, SelectivePolicy

    risk = _target_risk(target_risk, bootstrap)
    score_list = [s.strip() for s in scores.split(",") if s.strip()] if scores else None
    sets = PredictionSets(test, val, calib, ood or (), external or (), shifted, target_domain)
    given = SelectivePolicy.load(policy) if policy is not None else None
    to_fit = PolicySettings(
        risk, delta, selective_score, ood_gate, choose_gate, id_keep, confidence_gate,
        target_coverage,
    )  # fmt: skip
    options = EvaluationOptions(
        score_list, parse_fractions(coverages, "coverage"), bootstrap, seed, not no_examples
    )
    with console.status("evaluating") as status:
        result = evaluate_predictions(
            sets, out, given or to_fit, options, gate_stats,
            on_step=lambda s: status.update(f"evaluating: {s}"),
        )  # fmt: skip
    _print_summary(result.report)
    note = policy_warning(result.report)
    if note:
        console.print(f"[yellow]warning[/] {note}", highlight=False)
    written = [result.metrics_path, result.report_path, result.selective_path]
    console.print("wrote " + ", ".join(str(p) for p in written if p))


def _target_risk(target_risk: str, bootstrap: int) -> float | str:
    """--target-risk parsed (auto or a risk); ConfigError for it or a --bootstrap below 1."""
    from skinclf.policy.sgr import parse_target_risk

    if bootstrap < 1:
        raise ConfigError(f"--bootstrap must be at least 1, got {bootstrap}.")
    try:
        return parse_target_risk(target_risk)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _print_summary(m: MetricsReport) -> None:
    """The headline numbers of metrics.json: test, selective scores, SGR, OOD, external."""
    t = m.test
    lo, hi = t.balanced_accuracy_ci95 or (None, None)
    console.print(
        f"test: n={t.n}  accuracy {_fmt(t.accuracy)}  balanced accuracy "
        f"{_fmt(t.balanced_accuracy)} [{_fmt(lo)}, {_fmt(hi)}]  macro-F1 {_fmt(t.macro_f1)}"
    )
    table = Table(title="selective classification (test)")
    for col in ("score", "AURC", "AUGRC", "AURC bal.", "AUGRC bal.", "BA@80%"):
        table.add_column(col, justify="right" if col != "score" else "left")
    for name, s in (t.selective or {}).items():
        table.add_row(
            name,
            _fmt(s.aurc),
            _fmt(s.augrc),
            _fmt(s.aurc_balanced),
            _fmt(s.augrc_balanced),
            _fmt((s.balanced_accuracy_at_coverage or {}).get("0.8")),
        )
    console.print(table)
    if m.sgr is not None:
        _print_sgr(m.sgr)
    for name, o in (m.ood or {}).items():
        msp = (o.detection or {}).get("msp")
        console.print(
            f"OOD {name}: n={o.n}, balanced accuracy {_fmt(o.balanced_accuracy)}, "
            f"detection AUROC (msp) {_fmt(msp.auroc if msp is not None else None)}"
        )
    for name, e in (m.external or {}).items():
        lo, hi = e.balanced_accuracy_ci95 or (None, None)
        console.print(
            f"external {name}: n={e.n}, balanced accuracy {_fmt(e.balanced_accuracy)} "
            f"[{_fmt(lo)}, {_fmt(hi)}]"
        )
    if m.policy is not None:
        _print_policy(m.policy)
    for note in m.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def _print_sgr(g: SgrBlock) -> None:
    from skinclf.contracts.metrics_report import Outcome

    t = g.test or Outcome()
    console.print(
        f"SGR ({g.score}, r*={g.target_risk:g}, delta={g.delta:g}, fitted on "
        f"{g.fitted_on}): threshold {_fmt(g.threshold)}; test coverage "
        f"{_fmt(t.coverage)}, risk {_fmt(t.risk)}, target met {t.target_met}"
    )


def _outcome_values(o: PolicyOutcome | None) -> list:
    """A set's columns: coverage, accepted (balanced) accuracy, silent failures, SCC."""
    if o is None:
        return [None] * 5
    return [
        o.coverage,
        o.accepted_accuracy,
        o.accepted_balanced_accuracy,
        o.silent_failure_rate,
        o.semantic_ood_abstention,
    ]


def _print_policy(policy: PolicyBlock) -> None:
    gate = policy.gate
    assert gate is not None
    console.print(
        f"gated selective classifier: OOD gate {gate.score} keeps {gate.id_kept:.3f} of "
        f"{gate.fitted_on} (asked {gate.id_keep:g}), then the confidence gate "
        f"({policy.confidence_gate})"
    )
    table = Table(title="abstention per set (gated / single score)")
    for col in (
        "set",
        "coverage",
        "accepted acc.",
        "accepted bal. acc.",
        "silent failures",
        "SCC abstained",
    ):
        table.add_column(col, justify="right" if col != "set" else "left")
    for name, entry in policy.sets.items():
        pairs = zip(_outcome_values(entry.gated), _outcome_values(entry.single_score), strict=True)
        table.add_row(name, *(f"{_fmt(g)} / {_fmt(s)}" for g, s in pairs))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("evaluate")(evaluate)
