"""The trade-off of abstention under shift as one figure: for each policy of
results/shift_gate_families.json, the share of the external dermoscopy images (ISIC 2018) it
answers against the share of smartphone photos (PAD-UFES-20) it answers wrongly (silent
failures), with 95 % bootstrap intervals; the target region of issue 39 shaded.

    python benchmarks/plot_gate_families.py [--results JSON ...] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_SILENT, TARGET_COVERAGE = 0.01, 0.80


def plot(results: list[dict], out: Path, isic: str, pad: str) -> None:
    """One panel per results file (a trained model), one point per policy."""
    fig, axes = plt.subplots(1, len(results), figsize=(7.5 * len(results), 5.4), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, result in zip(axes[0], results, strict=True):
        ax.add_patch(plt.Rectangle((0, TARGET_COVERAGE), TARGET_SILENT, 1 - TARGET_COVERAGE,
                                   color="tab:green", alpha=0.15,
                                   label="target: silent failures <= 1 %, coverage >= 0.80"))
        for i, (name, p) in enumerate(result["policies"].items()):
            ext, ood = p["sets"][isic], p["sets"][pad]
            x, y = ood["silent_failure_rate"], ext["coverage"]
            (xlo, xhi), (ylo, yhi) = ood["silent_failure_rate_ci95"], ext["coverage_ci95"]
            ax.errorbar(x, y, xerr=[[x - xlo], [xhi - x]], yerr=[[y - ylo], [yhi - y]],
                        fmt="o" if "SGR" in name else "s", color=f"C{i % 4}", capsize=3,
                        label=f"{name} ({p['gate']})")  # fmt: skip
        ax.set_xlabel("PAD-UFES-20 smartphone photos: silent failures (accepted and wrong)")
        ax.set_ylabel("ISIC 2018 dermoscopy: coverage (answered)")
        ax.set_xlim(left=-0.005)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
        ax.set_title(f"{Path(result['run']).name} ({result['date']}): circles with SGR, "
                     "squares gate only", fontsize=9)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, nargs="+",
                    default=sorted(RESULTS.glob("shift_gate_families*.json")))  # fmt: skip
    ap.add_argument("--out", type=Path, default=ROOT / "docs/img/shift_gate_families.png")
    ap.add_argument("--isic", default="isic2018-test-dev")
    ap.add_argument("--pad", default="pad-ufes-20-300")
    args = ap.parse_args()
    plot([json.loads(f.read_text()) for f in args.results], args.out, args.isic, args.pad)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
