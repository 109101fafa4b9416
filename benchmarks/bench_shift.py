"""Abstention under shift, regenerated from one trained run's predictions files.

Fits each selective classifier on HAM10000 validation predictions only and measures it on the
HAM10000 test split, the external ISIC 2018 images (labelled, to be kept) and PAD-UFES-20
(smartphone photos, to be abstained on or classified), as `skinclf evaluate` does. Writes
results/shift_default_gates.json (the README's table and figure: benchmarks/plot_shift.py) and
prints a table.

    python benchmarks/bench_shift.py --eval DIR --gate-stats RUN/feature_stats.npz \
        [--isic FILE] [--pad FILE] [--pad-metadata PAD/metadata.csv] [--out JSON]

DIR holds the predictions files val.csv, val_corrupted.csv (`skinclf predict RUN --split val
--corrupt mix`) and test.csv, predicted with every gate score (a `skinclf run` output's eval/
folder has them all), and those of the ISIC 2018 images and PAD-UFES-20 (--isic, --pad;
default DIR/isic.csv and DIR/pad.csv). With --pad-metadata, the opt-in target-domain mode
is measured too: the PAD-UFES-20 patients are split in two halves (seeded); the gate is chosen
with the unlabelled images of one half and measured on the other, reported apart.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from skinclf.contracts.metrics_report import MetricsReport
from skinclf.evaluate.evaluation import EvaluationOptions, PredictionSets, evaluate_predictions
from skinclf.policy.fit import PolicySettings

ROOT = Path(__file__).resolve().parents[1]
SGR = {"target_risk": 0.25, "delta": 0.05}
ID_KEEPS = (0.95, 0.97, 0.98, 0.99)  # shares of validation images the OOD gate keeps


@dataclass(frozen=True)
class Files:
    """The predictions files compared: validation (clean and corrupted), HAM test, ISIC, PAD."""

    eval: Path
    isic: Path
    pad: Path

    @property
    def val(self) -> Path:
        return self.eval / "val.csv"

    @property
    def val_corrupted(self) -> Path:
        return self.eval / "val_corrupted.csv"

    @property
    def test(self) -> Path:
        return self.eval / "test.csv"


def policies(e: Files) -> dict[str, dict]:
    """label -> evaluate options of each policy compared (all fitted on validation)."""
    shifted = {"choose_gate": True, "shifted": e.val_corrupted}
    chosen = "chosen on corrupted validation (ID only), keep"
    return {
        **{f"{chosen} {keep:.2f}": {**shifted, "id_keep": keep} for keep in ID_KEEPS},
        "chosen by errors kept (ID only), keep 0.95": {"choose_gate": True, "id_keep": 0.95},
        "mahalanobis given, keep 0.95": {"ood_gate": "mahalanobis", "id_keep": 0.95},
        "knn given, keep 0.95": {"ood_gate": "knn", "id_keep": 0.95},
        "mahalanobis_stages given, keep 0.95": {"ood_gate": "mahalanobis_stages", "id_keep": 0.95},
        "chosen on corrupted validation, keep 0.95, confidence gate at 80 % coverage": {
            **shifted,
            "id_keep": 0.95,
            "confidence_gate": "coverage",
            "target_coverage": 0.8,
        },
    }


def _evaluate(e: Files, out: Path, stats: Path, ood: list[Path], **kw) -> MetricsReport:
    """The policy fitted from `kw`'s settings (its files: shifted, target_domain) and measured."""
    files = {k: kw[k] for k in ("shifted", "target_domain") if k in kw}
    settings = {k: v for k, v in kw.items() if k not in files}
    sets = PredictionSets(e.test, e.val, ood=ood, external=[e.isic], **files)
    policy = PolicySettings(selective_score="msp", **SGR, **settings)
    options = EvaluationOptions(n_bootstrap=1000, seed=0)
    return evaluate_predictions(sets, out, policy, options, gate_stats=stats).report


def _policy_entry(m: MetricsReport, kw: dict) -> dict:
    p = m.policy
    assert p is not None, "no gated policy was fitted"
    keep = {"fitted_on", "id_keep", "confidence_gate", "choice", "choice_criterion", "gate"}
    return {
        "settings": {**SGR, "selective_score": "msp"},
        "options": {k: str(v) for k, v in kw.items()},
        **p.model_dump(include=keep),
        "sets": {name: entry.model_dump() for name, entry in p.sets.items()},
    }


def detection(e: Files) -> dict:
    """AUROC and FPR at 95 % TPR of every score column, in-distribution positive, for HAM test
    vs PAD, ISIC vs PAD and HAM test vs ISIC (labelled in-distribution rows of test and ISIC)."""
    from skinclf.contracts.predictions import read_predictions
    from skinclf.evaluate.ood import ood_detection

    test, isic = read_predictions(e.test), read_predictions(e.isic)
    pad = read_predictions(e.pad, require_labels=False)
    pairs = {"test_vs_pad": (test, pad), "isic_vs_pad": (isic, pad), "test_vs_isic": (test, isic)}
    out: dict = {}
    for name, (a, b) in pairs.items():
        ma = a.labelled
        out[name] = {
            s: ood_detection(a.conf[s][ma], b.conf[s]) for s in sorted(a.conf) if s in b.conf
        }
    return out


def split_pad(pad: Path, metadata: Path, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """pad.csv split by patient into (target-domain half without labels, evaluated half)."""
    meta = pd.read_csv(metadata, dtype=str)
    patient = dict(zip(meta["img_id"], meta["patient_id"], strict=True))
    frame = pd.read_csv(pad, keep_default_na=False)
    patients = sorted(set(frame["image_id"].map(lambda i: patient[Path(i).name])))
    rng = np.random.default_rng(seed)
    target = set(rng.permutation(patients)[: len(patients) // 2])
    in_target = frame["image_id"].map(lambda i: patient[Path(i).name] in target)
    unlabelled = frame[in_target].assign(label="", semantic_ood=False)
    paths = folder / "pad_target_domain.csv", folder / "pad_evaluated.csv"
    unlabelled.to_csv(paths[0], index=False)
    frame[~in_target].to_csv(paths[1], index=False)
    return paths


def run(e: Files, stats: Path, pad_metadata: Path | None, work: Path) -> dict:
    results: dict = {"policies": {}}
    for label, kw in policies(e).items():
        m = _evaluate(e, work / label.replace(" ", "_"), stats, [e.pad], **kw)
        results["policies"][label] = _policy_entry(m, kw)
        t = m.test
        results.setdefault(
            "test",
            {
                "n": t.n,
                "balanced_accuracy": t.balanced_accuracy,
                "balanced_accuracy_ci95": t.balanced_accuracy_ci95,
                "accuracy": t.accuracy,
            },
        )
        external = {name: e.model_dump() for name, e in (m.external or {}).items()}
        results.setdefault("external", external)
    results["ood_detection"] = detection(e)
    if pad_metadata is not None:
        target, evaluated = split_pad(e.pad, pad_metadata, work)
        kw = {"choose_gate": True, "target_domain": target, "id_keep": 0.95}
        m = _evaluate(e, work / "target_domain", stats, [evaluated], **kw)
        results["target_domain"] = {"opt-in, keep 0.95": _policy_entry(m, kw)}
    return results


def print_table(results: dict) -> None:
    table = Table(title="abstention under shift (gated policy; MSP only in the first row)")
    for col in (
        "policy",
        "gate",
        "HAM test cov / BA",
        "ISIC cov / BA",
        "PAD cov",
        "PAD silent",
        "SCC abst.",
    ):
        table.add_column(col)
    rows = list(results["policies"].items()) + list(results.get("target_domain", {}).items())
    first = rows[0][1]["sets"]
    single = {n: s.get("single_score", {}) for n, s in first.items()}
    for label, gate, sets in [("MSP only", "-", single)] + [
        (lbl, p["gate"]["score"], {n: s["gated"] for n, s in p["sets"].items()}) for lbl, p in rows
    ]:

        def f(name_start: str, key: str, sets: dict = sets) -> str:
            s = next((v for n, v in sets.items() if n.startswith(name_start)), {})
            v = s.get(key)
            return "-" if v is None else f"{v:.3f}"

        table.add_row(
            label,
            gate,
            f"{f('test', 'coverage')} / {f('test', 'accepted_balanced_accuracy')}",
            f"{f('isic', 'coverage')} / {f('isic', 'accepted_balanced_accuracy')}",
            f("pad", "coverage"),
            f("pad", "silent_failure_rate"),
            f("pad", "semantic_ood_abstention"),
        )
    Console().print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", type=Path, required=True, help="folder of predictions files")
    ap.add_argument("--gate-stats", type=Path, required=True, help="RUN/feature_stats.npz")
    ap.add_argument("--isic", type=Path, help="ISIC 2018 predictions (default EVAL/isic.csv)")
    ap.add_argument("--pad", type=Path, help="PAD-UFES-20 predictions (default EVAL/pad.csv)")
    ap.add_argument("--pad-metadata", type=Path, help="PAD-UFES-20 metadata.csv (patients)")
    default_out = ROOT / "benchmarks/results/shift_default_gates.json"
    ap.add_argument("--out", type=Path, default=default_out)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = Files(a.eval, a.isic or a.eval / "isic.csv", a.pad or a.eval / "pad.csv")
        results = run(files, a.gate_stats, a.pad_metadata, Path(tmp))
    results = {
        "what": "Gated selective classifiers fitted on HAM10000 validation predictions only; "
        "OOD: PAD-UFES-20, external ID: ISIC 2018 test-dev",
        "date": date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        **results,
    }
    a.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print_table(results)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
