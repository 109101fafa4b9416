"""The figure of abstention under shift (README, docs) (from results/shift_default_gates.json).

For each policy (MSP alone, and each gated policy fitted on HAM10000 validation only): the share of
PAD-UFES-20 images that are silent failures (accepted and wrong), and the coverage kept on the
HAM10000 test split and on the external ISIC 2018 images, with 95 % bootstrap intervals.

    python benchmarks/plot_shift.py [RESULTS_JSON] [OUT_PNG]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PANELS = (
    (
        "pad-ufes-20",
        "silent_failure_rate",
        "PAD-UFES-20: silent failures\n(accepted and wrong; lower is better)",
    ),
    ("test", "coverage", "HAM10000 test: coverage"),
    ("isic2018", "coverage", "ISIC 2018 (external): coverage"),
)


def policy_rows(results: dict) -> list[tuple[str, dict]]:
    """(label, sets) for MSP alone, then each gated policy."""
    policies = results["policies"]
    first = next(iter(policies.values()))["sets"]
    rows = [("MSP only", {name: s["single_score"] for name, s in first.items()})]
    rows += [
        (label, {name: s["gated"] for name, s in p["sets"].items()})
        for label, p in policies.items()
    ]
    return rows


def plot(results: dict, out: Path) -> Path:
    rows = policy_rows(results)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.4), sharey=True)
    y = np.arange(len(rows))
    for ax, (dataset, key, title) in zip(axes, PANELS, strict=True):
        values = np.array([sets[dataset][key] for _, sets in rows])
        ci = np.array(
            [
                sets[dataset].get(f"{key}_ci95", [v, v])
                for (_, sets), v in zip(rows, values, strict=True)
            ]
        )
        ax.barh(y, values, xerr=[values - ci[:, 0], ci[:, 1] - values], color="#4c72b0", capsize=3)
        for yi, v, hi in zip(y, values, ci[:, 1], strict=True):
            ax.text(hi + 0.02, yi, f"{v:.2f}", va="center", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [label for label, _ in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(results["what"][:120] + "…", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


if __name__ == "__main__":
    src = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else ROOT / "benchmarks/results/shift_default_gates.json"
    )
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs/img/shift_policies.png"
    print(plot(json.loads(src.read_text()), dst))
