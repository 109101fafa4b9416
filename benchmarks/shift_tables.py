"""The tables of abstention under shift in docs/experiments.md, from
results/shift_default_gates.json.

Two Markdown tables: each score's OOD detection AUROC (FPR at 95 % TPR), and each policy's
coverage, accepted balanced accuracy, ISIC difference against MSP alone at the same coverage,
PAD-UFES-20 silent failures and SCC abstention. They replace the part of docs/experiments.md
between the `shift-tables` markers (the rest is left alone), or are printed with --print.

    python benchmarks/shift_tables.py [--results JSON] [--page docs/experiments.md] [--print]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from table import DASH, interval, num  # next to this script

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- shift-tables:start -->", "<!-- shift-tables:end -->"
SCORE_ORDER = ("msp", "energy", "vim", "mahalanobis", "knn", "knn_k50", "rel_mahalanobis")


def detection_table(d: dict) -> list[str]:
    det = d["ood_detection"]
    scores = [s for s in SCORE_ORDER if s in det["test_vs_pad"]]
    scores += sorted(s for s in det["test_vs_pad"] if s.startswith("mahalanobis_"))
    pairs = ("test_vs_pad", "isic_vs_pad")
    best = {pair: max(det[pair][s]["auroc"] for s in scores) for pair in pairs}
    lines = ["| score | HAM test vs PAD | ISIC vs PAD | HAM test vs ISIC |", "|---|---|---|---|"]
    for s in scores:
        cells = []
        for pair in pairs:
            m = det[pair][s]
            cell = f"{m['auroc']:.3f} ({m['fpr_at_95_tpr']:.3f})"
            cells.append(f"**{cell}**" if m["auroc"] == best[pair] else cell)
        cells.append(num(det["test_vs_isic"][s]["auroc"]))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def _policy_row(label: str, gate: str, sets: dict, versus: dict | None) -> str:
    def cov_ba(name: str) -> str:
        s = sets.get(name, {})
        return f"{num(s.get('coverage'))} / {num(s.get('accepted_balanced_accuracy'))}"

    pad = sets.get("pad-ufes-20", {})
    scc = pad.get("semantic_ood_abstention")
    vs = (
        DASH
        if versus is None
        else f"{num(versus.get('difference'), '+.3f')} " + interval(versus.get("difference_ci95"))
    )
    return (
        f"| {label} | {gate} | {cov_ba('test')} | {cov_ba('isic2018')} | {vs} | "
        f"{num(pad.get('coverage'))} | {num(pad.get('silent_failure_rate'))} "
        f"{interval(pad.get('silent_failure_rate_ci95'))} | {num(scc, '.2f')} |"
    )


def policy_table(d: dict) -> list[str]:
    lines = [
        "| policy (fitted on validation) | gate | HAM test | ISIC | ISIC vs MSP | PAD coverage "
        "| PAD silent failures | SCC abstained |",
        "|---|---|---|---|---|---|---|---|",
    ]
    policies = d["policies"]
    first = next(iter(policies.values()))["sets"]
    single = {n: s.get("single_score", {}) for n, s in first.items()}
    lines.append(_policy_row("MSP only", DASH, single, None))
    rows = list(policies.items()) + [
        (f"{label} (measured on the other half of PAD-UFES-20)", p)
        for label, p in d.get("target_domain", {}).items()
    ]
    for label, p in rows:
        sets = {n: s["gated"] for n, s in p["sets"].items()}
        versus = p["sets"].get("isic2018", {}).get("vs_msp_same_coverage")
        lines.append(_policy_row(label, p["gate"]["score"], sets, versus))
    return lines


def render(d: dict) -> str:
    return "\n".join([*detection_table(d), "", *policy_table(d)])


def update_page(page: Path, text: str) -> bool:
    """Replace the text between the markers; False if they are missing."""
    old = page.read_text()
    if START not in old or END not in old:
        return False
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ROOT / "benchmarks/results/shift_default_gates.json"
    ap.add_argument("--results", type=Path, default=default)
    ap.add_argument("--page", type=Path, default=ROOT / "docs" / "experiments.md")
    ap.add_argument("--print", action="store_true", help="print the tables, change nothing")
    a = ap.parse_args()
    text = render(json.loads(a.results.read_text()))
    if a.print:
        print(text)
    elif update_page(a.page, text):
        print(f"rewrote the shift tables of {a.page}")
    else:
        raise SystemExit(f"{a.page} has no {START} ... {END} markers")


if __name__ == "__main__":
    main()
