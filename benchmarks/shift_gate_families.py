"""The OOD gate chosen without OOD images against each family of synthetic shifts, measured
on the external sets (docs/experiments.md, "Choosing the OOD gate against clinical-photography
shifts"): for one finished `skinclf run` output, the validation images are predicted under each
family (`mix`: ImageNet-C, `clinical`, `all`; into OUT/shift-families/, once), and each policy
is fitted as `skinclf run` fits its own (calibration images, --id-keep 0.95, --choose-gate
--shifted FAMILY) with the confidence gate of the default (SGR, --target-risk auto) and with it
off, plus the multi-depth gate `mahalanobis_stages` given. Read per policy: HAM10000 test, ISIC
2018 and PAD-UFES-20 coverage, accepted balanced accuracy and silent failures with bootstrap
intervals, and the SCC photos abstained on. Nothing is chosen on the external sets.

    python benchmarks/shift_gate_families.py runs/default --isic isic2018-test-dev \
        --pad pad-ufes-20-300 --out benchmarks/results/shift_gate_families.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from skinclf.contracts.run_folder import MC_DROPOUT
from skinclf.contracts.score_registry import FEATURE_SCORES
from skinclf.contracts.scores import SCORES
from skinclf.evaluate.evaluation import EvaluationOptions, PredictionSets, evaluate_predictions
from skinclf.policy.fit import PolicySettings
from skinclf.predict import PredictOptions, predict_file
from skinclf.provenance import machine, versions

FAMILIES = ("mix", "clinical", "all")
MULTI_DEPTH = "mahalanobis_stages"


def shifted_file(out: Path, family: str, own: str | None = None) -> Path:
    """The validation images under `family`, predicted once with every score (the run's own
    eval/val_corrupted.csv when its family, `own`, is that one)."""
    if family == own:
        return out / "eval" / "val_corrupted.csv"
    file = out / "shift-families" / f"val_{family}.csv"
    if not file.is_file():
        file.parent.mkdir(parents=True, exist_ok=True)
        tta = json.loads((out / "run" / "metrics.json").read_text())["tta"]
        options = PredictOptions(tta=tta, scores=[*SCORES, *FEATURE_SCORES],
                                 mc_dropout=MC_DROPOUT, corrupt=family)  # fmt: skip
        predict_file([out / "run"], file, split="val", options=options, progress=True)
    return file


def policy(out: Path, names: dict[str, str], shifted: Path, gate: str | None, off: bool,
           bootstrap: int) -> dict:  # fmt: skip
    """One policy fitted on the run's calibration images and measured on every set."""
    files = {name: out / "eval" / f"{name}.csv" for name in names.values()}
    with tempfile.TemporaryDirectory() as tmp:
        sets = PredictionSets(
            out / "eval" / "test.csv", out / "eval" / "val.csv", out / "eval" / "calib.csv",
            ood=[files[names["pad"]]], external=[files[names["isic"]]],
            shifted=shifted if gate is None else None,
            names={str(f): n for n, f in files.items()},
        )  # fmt: skip
        policy = PolicySettings(
            "auto", ood_gate=gate, choose_gate=gate is None, id_keep=0.95,
            confidence_gate="off" if off else "sgr",
        )  # fmt: skip
        options = EvaluationOptions(n_bootstrap=bootstrap, examples=False)
        stats = out / "run" / "feature_stats.npz"
        report = evaluate_predictions(sets, tmp, policy, options, stats).report
    block, external = report.policy, report.external or {}
    assert block is not None and block.gate is not None, "no gated policy was fitted"
    gated = {name: block.sets[name].gated.model_dump() for name in ("test", *names.values())}
    isic = external[names["isic"]]
    return {
        "gate": block.gate.score,
        "confidence_gate": block.confidence_gate,
        "target_risk": block.target_risk,
        "sets": gated,
        "isic_ungated_balanced_accuracy": isic.balanced_accuracy,
        "isic_ungated_balanced_accuracy_ci95": isic.balanced_accuracy_ci95,
    }


def _ci(entry: dict, key: str) -> str:
    value, ci = entry.get(key), entry.get(f"{key}_ci95")
    if value is None:
        return "–"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def print_table(result: dict, names: dict[str, str]) -> None:
    table = Table(title="OOD gate chosen on each synthetic family (nothing chosen on ISIC/PAD)")
    for col in ("policy", "gate", "HAM test cov. / acc. BA", "ISIC coverage",
                "ISIC acc. BA (ungated)", "PAD silent failures", "SCC abst."):  # fmt: skip
        table.add_column(col)
    for name, p in result["policies"].items():
        s = p["sets"]
        test, isic, pad = s["test"], s[names["isic"]], s[names["pad"]]
        table.add_row(
            name, p["gate"], f"{test['coverage']:.3f} / {test['accepted_balanced_accuracy']:.3f}",
            _ci(isic, "coverage"),
            f"{_ci(isic, 'accepted_balanced_accuracy')} "
            f"({p['isic_ungated_balanced_accuracy']:.3f})",
            _ci(pad, "silent_failure_rate"), f"{pad['semantic_ood_abstention']:.2f}",
        )  # fmt: skip
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="A finished `skinclf run` output folder.")
    ap.add_argument("--isic", default="isic2018-test-dev", help="Its eval/ name of ISIC 2018.")
    ap.add_argument("--pad", default="pad-ufes-20-300", help="Its eval/ name of PAD-UFES-20.")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--own-family", choices=FAMILIES,
                    help="The family of the run's own eval/val_corrupted.csv (reused for it): "
                    "mix for runs before 2026-12-07, all since.")  # fmt: skip
    ap.add_argument("--out-json", type=Path, required=True)
    args = ap.parse_args()
    names = {"isic": args.isic, "pad": args.pad}
    files = {f: shifted_file(args.out, f, args.own_family) for f in FAMILIES}
    policies = {}
    for off in (False, True):
        confidence = "gate only" if off else "SGR auto"
        for family in FAMILIES:
            policies[f"chosen on {family}, {confidence}"] = policy(
                args.out, names, files[family], None, off, args.bootstrap
            )
        policies[f"{MULTI_DEPTH} given, {confidence}"] = policy(
            args.out, names, files["all"], MULTI_DEPTH, off, args.bootstrap
        )
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "versions": versions(("skinclf", "torch", "timm", "numpy")),
        "run": str(args.out),
        "id_keep": 0.95,
        "policies": policies,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, names)


if __name__ == "__main__":
    main()
