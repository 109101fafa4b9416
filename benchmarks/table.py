"""The results table of benchmarks/README.md, regenerated from benchmarks/results/*.json.

    .venv/bin/python benchmarks/table.py [--results benchmarks/results] \
        [--readme benchmarks/README.md]

Rewrites the text between `<!-- results-table:start -->` and `<!-- results-table:end -->` (and
nothing else) with one Markdown table: benchmark, headline number(s), machine, date, JSON file.
The files the suite writes come first, in a fixed order, then every other file in the folder
that holds a two-run comparison (`a`, `b`, `paired_bootstrap_balanced_accuracy`: the output of
compare_presets.py and `skinclf compare`) or two cross-validations' (`skinclf compare`). A
missing number is written "–"; a file that is not JSON is listed with the reason. Reads no data
and runs no benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"
DASH = "–"
HEADER = ("benchmark", "headline", "machine", "date", "JSON")


def get(d: object, *keys: object) -> object:
    """d[k1][k2]... or None where a key or index is missing."""
    for k in keys:
        try:
            d = d[k]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def num(v: object, fmt: str = ".3f", suffix: str = "") -> str:
    """A number formatted with `fmt`, or "–" when it is missing or not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return DASH
    return f"{v:{fmt}}{suffix}"


def interval(v: object) -> str:
    lo, hi = get(v, 0), get(v, 1)
    return DASH if lo is None or hi is None else f"[{num(lo)}, {num(hi)}]"


def _speed(d: dict) -> str:
    train = {r.get("config"): r for r in d.get("train") or [] if isinstance(r, dict)}
    pred = {r.get("config"): r for r in d.get("predict") or [] if isinstance(r, dict)}
    base, bf16 = train.get("fp32, channels_last", {}), train.get("bf16, channels_last", {})
    size = get(d, "settings", "size")
    return (
        f"{get(d, 'settings', 'backbone') or DASH} at {num(size, 'd')} px: train "
        f"{num(base.get('images_per_s'), '.1f')} img/s fp32 channels_last "
        f"({num(base.get('fraction_of_matmul_peak'), '.1%')} of the fp32 matmul peak "
        f"{num(get(d, 'matmul_peak_gflops_per_s', 'fp32'), '.0f')} GFLOP/s); bf16 "
        f"{num(bf16.get('ratio_vs_fp32_channels_last'), '.2f', 'x')}; contiguous "
        f"{num(get(train.get('fp32', {}), 'ratio_vs_fp32_channels_last'), '.2f', 'x')}; "
        f"predict {num(get(pred.get('fp32, channels_last', {}), 'images_per_s'), '.1f')} img/s"
    )


def _backbone(d: dict) -> str:
    rows = [r for r in d.get("results") or [] if isinstance(r, dict)]
    parts = []
    for mode in ("train", "infer"):
        best = [
            r
            for r in rows
            if r.get("mode") == mode and r.get("precision") == "fp32" and r.get("channels_last")
        ]
        if best:
            top = max(best, key=lambda r: r.get("image_size") or 0)
            parts.append(
                f"{mode} {num(top.get('images_per_s'), '.1f')} img/s at "
                f"{num(top.get('image_size'), 'd')} px"
            )
    name = get(d, "settings", "backbone") or DASH
    return f"{name}, fp32 channels_last: " + ("; ".join(parts) if parts else DASH)


def _frozen(d: dict) -> str:
    t = d.get("train_images_per_second") or {}
    return (
        f"train img/s full {num(get(t, 'full'), '.1f')}, partial {num(get(t, 'partial'), '.1f')},"
        f" cached {num(get(t, 'cached'), '.1f')} ({num(d.get('speedup_cached_vs_full'), '.2f')}x"
        f" full); cache build {num(d.get('cache_build_views_per_second'), '.0f')} views/s"
    )


def _cache(d: dict) -> str:
    return (
        f"cache vs JPEG {num(get(d, 'ratio', 'best_cache_vs_best_jpeg'), '.1f', 'x')} "
        f"(best vs best); build {num(get(d, 'build', 'images_per_s'), ',.0f')} img/s"
    )


def _tune_workers(d: dict) -> str:
    runs = [r for r in d.get("runs") or [] if isinstance(r, dict)]
    per = ", ".join(
        f"{num(r.get('workers'), 'd')} worker(s) {num(r.get('trials_per_min'), '.1f')}"
        for r in runs
    )
    line = f"head-stage trials/min: {per or DASH} ({num(d.get('speedup'), '.2f', 'x')})"
    last = runs[-1] if runs else {}
    if isinstance(last.get("finished"), int) and isinstance(last.get("trial_phase_s"), float):
        line += (
            f"; {last['finished']} trials ({num(last.get('pruned'), 'd')} pruned) in "
            f"{last['trial_phase_s'] / 60:.1f} min with {num(last.get('workers'), 'd')} workers"
        )
    return line


def _tune_trials(d: dict) -> str:
    values = [get(t, "value") for t in d.get("trials") or []]
    values = [v for v in values if isinstance(v, (int, float))]
    best = max(values) if values else None
    return f"best validation balanced accuracy {num(best)} of {len(values)} complete trial(s)"


def _tune_study(d: dict) -> str:
    """benchmarks/tune_result.py: a study's trials, best against its baseline, pruning."""
    counts = d.get("counts") or {}
    words = {"FAIL": "failed"}
    states = ", ".join(f"{n} {words.get(s, s.lower())}" for s, n in counts.items())
    best, base = d.get("best") or {}, d.get("baseline") or {}
    line = f"{sum(counts.values())} trials ({states or DASH}); best validation balanced accuracy"
    line += f" {num(best.get('value'))} (trial {num(best.get('number'), 'd')})"
    if base:
        line += f" vs the untuned preset {num(base.get('value'))} (trial {base.get('number')})"
    saved = d.get("minutes_saved_by_pruning_estimate")
    if isinstance(saved, (int, float)):
        line += f"; pruning saved about {saved:.0f} of {d.get('minutes_spent', 0) + saved:.0f} min"
    return line


def _shift(d: dict) -> str:
    policies = d.get("policies") or {}
    if not isinstance(policies, dict) or not policies:
        return DASH
    name, p = next(iter(policies.items()))
    sets = get(p, "sets") or {}

    def gated(start: str, key: str) -> object:
        s = next((v for n, v in sets.items() if str(n).startswith(start)), {})
        return get(s, "gated", key)

    return (
        f"{name}: HAM test coverage {num(gated('test', 'coverage'), '.2f')} / accepted BA "
        f"{num(gated('test', 'accepted_balanced_accuracy'))}; ISIC coverage "
        f"{num(gated('isic', 'coverage'), '.2f')}; PAD-UFES-20 silent failures "
        f"{num(gated('pad', 'silent_failure_rate'))}"
    )


def _serve(d: dict) -> str:
    p = d.get("predict_and_runtimes") or {}
    onnx = get(p, "network_images_per_s_alternated", "onnxruntime")
    torch_ = get(p, "network_images_per_s_alternated", "pytorch")
    best = lambda v: max(v) if isinstance(v, list) and v else None  # noqa: E731
    return (
        f"predict {num(get(p, 'predict_end_to_end_cold_cache', 'none', 'images_per_s'), '.1f')}"
        f" img/s end to end; network ONNX Runtime {num(best(onnx), '.1f')} vs PyTorch "
        f"{num(best(torch_), '.1f')} img/s; serve median "
        f"{num(get(d, 'serve', 'conditions', '1_clients', 'median_s'), '.2f')} s (1 client)"
    )


def _comparison(d: dict) -> str:
    def side(s: object) -> str:
        backbone = str(get(s, "backbone") or "").removeprefix("efficientnet_")
        who = " ".join(str(x) for x in (get(s, "preset"), backbone) if x)
        if not who:  # a predictions file: its run folder (a `skinclf run` keeps it in eval/)
            folder = Path(str(get(s, "file") or get(s, "run") or DASH)).parent
            who = (folder.parent.name if folder.name == "eval" else folder.name) or DASH
        ba = get(s, "test_balanced_accuracy")
        ba = get(s, "balanced_accuracy") if ba is None else ba
        ci = get(s, "test_balanced_accuracy_ci95") or get(s, "balanced_accuracy_ci95")
        return f"{who} {num(ba)} {interval(ci)}"

    def both(key: str, label: str, fmt: str = ".3f") -> str:
        a, b = (get(d.get(x), key) or get(d.get(x), key.removeprefix("test_")) for x in "ab")
        return "" if a is None and b is None else f"; {label} A {num(a, fmt)} vs B {num(b, fmt)}"

    paired = d.get("paired_bootstrap_balanced_accuracy") or {}
    return (
        f"balanced accuracy A {side(d.get('a'))} vs B {side(d.get('b'))}; A - B "
        f"{num(get(paired, 'difference'), '+.3f')} {interval(get(paired, 'difference_ci95'))},"
        f" P(A > B) {num(get(paired, 'p_a_greater'), '.2f')}"
        + both("test_macro_f1", "macro-F1")
        + both("test_aurc_msp", "AURC (MSP)")
        + both("seconds_to_val_balanced_accuracy_0.70", "s to val BA 0.70", ".0f")
    )


Summary = Callable[[dict], str]


def _held_out(d: dict) -> str:
    """An unfinished cv: the held-out balanced accuracy of each finished fold."""
    folds = d["out_of_fold"]["folds"]
    each = ", ".join(
        f"{name} {num(f['balanced_accuracy'])} {interval(f['balanced_accuracy_ci95'])}"
        for name, f in folds.items()
    )
    return f"{len(folds)} of {d['folds']} folds finished, held-out balanced accuracy {each}"


def _cv(d: dict) -> str:
    oof = d["out_of_fold"]
    if "pooled" not in oof:
        text = _held_out(d)
    else:
        pooled = oof["pooled"]
        text = (
            f"{d['folds']}-fold out-of-fold balanced accuracy {num(pooled['balanced_accuracy'])} "
            f"{interval(pooled['balanced_accuracy_ci95'])} over {pooled['n']:,} images "
            f"(cross-fitted logit offsets: {num(oof['pooled_offsets']['balanced_accuracy'])})"
        )
    for name, ext in d.get("external", {}).items():
        parts = []
        if ens := ext.get("ensemble"):
            no_offsets = ens["no_offsets"]
            parts += [
                f"ensemble {num(no_offsets['balanced_accuracy'])} "
                f"{interval(no_offsets['balanced_accuracy_ci95'])}",
                f"with offsets {num(ens['offsets']['balanced_accuracy'])}",
            ]
        if "single_model_balanced_accuracy_mean" in ext:
            parts.append(f"one fold model {num(ext['single_model_balanced_accuracy_mean'])} (mean)")
        text += f"; {name}: " + ", ".join(parts)
    seconds = [s for s in d.get("train_seconds", {}).values() if s]
    if seconds:
        text += f"; {num(sum(seconds) / len(seconds) / 60, '.0f')} min training per fold"
    return text


# the files the suite writes (and the older ones it knows), in the table's order
def _detection(d: dict) -> str:
    """cv_detection.py: each folder's MSP and k-NN detection AUROC."""
    parts = []
    for folder, entry in d["folders"].items():
        scores = entry["scores"]
        each = (f"{s} {num(get(scores, s, 'auroc'))}" for s in ("msp", "knn") if s in scores)
        parts.append(f"{Path(folder).name}: {', '.join(each)}")
    return f"{d['id']} vs {d['ood']} AUROC: " + "; ".join(parts)


KNOWN: list[tuple[str, str, Summary]] = [
    ("presets.json", "quality: default vs paper (HAM10000 test)", _comparison),
    ("presets_isic2018.json", "quality: default vs paper (ISIC 2018)", _comparison),
    ("cv3_default.json", "quality: default, 3-fold cross-validation", _cv),
    ("cv3_sog.json", "quality: default + Shades of Gray, 3-fold cross-validation", _cv),
    ("cv3_lite0.json", "quality: default with Lite0, 3-fold cross-validation", _cv),
    ("cv3_lite1.json", "quality: default with Lite1, 3-fold cross-validation", _cv),
    ("cv5_default.json", "quality: default, 5-fold cross-validation", _cv),
    ("cv5_lite0.json", "quality: default with Lite0, 5-fold cross-validation", _cv),
    ("presets_quick.json", "quality, quick: default vs paper (HAM10000 subset)", _comparison),
    ("presets_quick_isic2018.json", "quality, quick: default vs paper (ISIC 2018)", _comparison),
    ("speed.json", "speed: train/predict, matmul peak", _speed),
    ("frozen_cache.json", "speed: frozen-stage cache", _frozen),
    ("cache.json", "speed: decode cache vs JPEG", _cache),
    ("tune_head_workers.json", "speed: tuning trials/min", _tune_workers),
    ("tune_head_workers_200.json", "speed: tuning trials/min, 200 trials each", _tune_workers),
    (
        "tune_head_workers_fused.json",
        "speed: tuning trials/min, fused AdamW (2026-12-04)",
        _tune_workers,
    ),
    (
        "tune_head_workers_mask.json",
        "speed: tuning trials/min, faster head steps (2026-12-04)",
        _tune_workers,
    ),
    (
        "tune_head_workers_hyperband.json",
        "speed: tuning trials/min, --pruner hyperband (2026-12-04)",
        _tune_workers,
    ),
    (
        "tune_head_workers_hyperband_2.json",
        "speed: tuning trials/min, --pruner hyperband, repeated (2026-12-04)",
        _tune_workers,
    ),
    ("shift_default_gates.json", "selective and shift", _shift),
    ("backbone.json", "speed: backbone sizes/precisions", _backbone),
    ("serve_predict_default.json", "predict, ONNX Runtime, serve", _serve),
    ("tune_finetune_lite0.json", "tuning: fine-tuning search", _tune_trials),
    ("tune_finetune_default.json", "tuning: fine-tuning study of default", _tune_study),
    ("cv3_detection.json", "shift: OOD detection of the cv ensembles", _detection),
]


def is_comparison(d: object) -> bool:
    return isinstance(d, dict) and all(
        k in d for k in ("a", "b", "paired_bootstrap_balanced_accuracy")
    )


def is_cv_comparison(d: object) -> bool:
    """`skinclf compare` of two cvs: out-of-fold and external comparisons under their names."""
    return isinstance(d, dict) and is_comparison(d.get("out_of_fold"))


def _cv_comparison(d: dict) -> str:
    parts = []
    for name, part in d.items():
        if is_comparison(part):
            parts.append(f"{name.replace('_', '-')}: {_comparison(part)}")
        elif name.endswith("_by_fold") and isinstance(part, dict):
            each = (
                f"{fold} {num(get(c, 'paired_bootstrap_balanced_accuracy', 'difference'), '+.3f')}"
                for fold, c in part.items()
            )
            parts.append(f"{name[: -len('_by_fold')]}, fold model A - B: {', '.join(each)}")
    return "; ".join(parts)


def machine(d: dict) -> str:
    m = d.get("machine")
    if isinstance(m, str):
        return m
    if not isinstance(m, dict):
        return DASH
    cpu = m.get("gpu") or m.get("cpu") or m.get("processor")
    cpu = cpu or str(m.get("platform") or "").split("-with-")[0]
    cores = next((m[k] for k in ("logical_cpus", "cores", "cpu_count", "cpus") if k in m), None)
    parts = [str(cpu) if cpu else "", f"{cores} CPUs" if cores else ""]
    return ", ".join(p for p in parts if p) or DASH


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def row(path: Path, name: str, summary: Summary, link_from: Path) -> list[str]:
    link = f"[{path.name}]({Path(os.path.relpath(path, link_from)).as_posix()})"
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [name, f"unreadable: {type(exc).__name__}", DASH, DASH, link]
    if not isinstance(d, dict):
        return [name, "unreadable: not a JSON object", DASH, DASH, link]
    try:
        headline = summary(d)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        headline = DASH
    meta = d["out_of_fold"] if is_cv_comparison(d) else d  # where the date and machine are
    date = meta.get("date")
    return [name, headline, machine(meta), str(date)[:10] if date else DASH, link]


def rows(results: Path, link_from: Path) -> list[list[str]]:
    """One row per known results file that exists, then one per other comparison file."""
    out = [
        row(results / f, name, fn, link_from) for f, name, fn in KNOWN if (results / f).is_file()
    ]
    known = {f for f, _, _ in KNOWN}
    for path in sorted(results.glob("*.json")):
        if path.name in known:
            continue
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if is_comparison(d):
            out.append(row(path, f"quality: {path.stem}", _comparison, link_from))
        elif is_cv_comparison(d):
            out.append(row(path, f"quality: {path.stem}", _cv_comparison, link_from))
    return out


def render(results: Path, link_from: Path) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows(results, link_from)]
    return "\n".join(lines)


def update_readme(readme: Path, results: Path) -> bool:
    """Rewrite the table between the markers of `readme`; True if the file changed."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(
            f"{readme} has no {START} ... {END} markers: add them where the table goes."
        )
    new = text[: start + len(START)] + "\n" + render(results, readme.parent) + "\n" + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "benchmarks" / "README.md")
    args = parser.parse_args()
    changed = update_readme(args.readme, args.results)
    print(f"{'updated' if changed else 'unchanged'}: the results table of {args.readme}")


if __name__ == "__main__":
    main()
