"""Summarise a `skinclf tune` study as JSON: every trial (state, value, settings, per-epoch
validation balanced accuracy, minutes, baseline mark), the counts of each state, the best trial
against the baseline (the preset's own settings), and what pruning saved: for each pruned
trial, the mean length of the complete trials minus its own (an estimate of the minutes it
would have taken to run to its end). `--paused N=MIN` takes MIN minutes in which the study was
paused (e.g. SIGSTOP while a benchmark had the CPU) out of trial N's length. A failed trial
(its worker killed) has no length: it ends when a later worker finds its stale heartbeat,
which may be hours later. With --keep DIR, a copy of the study (SQLite, made with
SQLite's backup, consistent while a worker writes) and its split.csv go to DIR, so the study
outlives its run folder and a later session continues it:

    skinclf tune --storage sqlite:///DIR/study.db --split DIR/split.csv --out runs/tune-ft ...

    .venv/bin/python benchmarks/tune_result.py runs/tune-ft \
        --out benchmarks/results/tune_finetune_default.json \
        --keep benchmarks/results/tune/finetune-default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean

from skinclf.tune.show import resolve
from skinclf.tune.storage import open_storage, study_names


def trial_row(t, paused: float = 0.0) -> dict:
    """One trial; `paused`: minutes to take out of its length."""
    seconds = t.duration.total_seconds() if t.duration and t.state.name != "FAIL" else None
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "baseline": bool(t.user_attrs.get("baseline")),
        "params": dict(t.params),
        "per_epoch_val_balanced_accuracy": [
            t.intermediate_values[k] for k in sorted(t.intermediate_values)
        ],
        "minutes": None if seconds is None else round(seconds / 60 - paused, 2),
        "paused_minutes": paused,
    }


def paused_minutes(items: list[str]) -> dict[int, float]:
    """`--paused N=MIN` arguments as {trial number: minutes}."""
    out: dict[int, float] = {}
    for item in items:
        number, sep, minutes = item.partition("=")
        if not sep:
            raise SystemExit(f"--paused takes TRIAL=MINUTES, not {item!r}")
        out[int(number)] = out.get(int(number), 0.0) + float(minutes)
    return out


def summarise(trials: list[dict]) -> dict:
    """Counts, best vs baseline, and the minutes pruning saved (estimated)."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED" and t["minutes"] is not None]
    best = max(complete, key=lambda t: t["value"], default=None)
    base = next((t for t in complete if t["baseline"]), None)
    full = mean(t["minutes"] for t in complete if t["minutes"] is not None) if complete else None
    saved = None if full is None else sum(max(full - t["minutes"], 0.0) for t in pruned)
    spent = sum(t["minutes"] for t in trials if t["minutes"] is not None)
    return {
        "counts": counts,
        "best": best and {k: best[k] for k in ("number", "value", "params")},
        "baseline": base and {k: base[k] for k in ("number", "value", "params")},
        "best_minus_baseline": None if not (best and base) else best["value"] - base["value"],
        "minutes_spent": round(spent, 1),
        "mean_minutes_complete_trial": None if full is None else round(full, 2),
        "pruned_epochs": [len(t["per_epoch_val_balanced_accuracy"]) for t in pruned],
        "minutes_saved_by_pruning_estimate": None if saved is None else round(saved, 1),
    }


def keep(folder: Path, url: str, dest: Path) -> None:
    """A consistent copy of the study's SQLite file and its split.csv in `dest`."""
    if not url.startswith("sqlite:///"):
        raise SystemExit(f"--keep copies SQLite studies only, not {url}")
    dest.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(url.removeprefix("sqlite:///"))
    target = sqlite3.connect(dest / "study.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    split = folder / "split.csv"
    if split.is_file():
        (dest / "split.csv").write_text(split.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="study folder (with study.db), study file or storage URL")
    parser.add_argument("--study-name", default=None)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--keep", type=Path, default=None, help="copy study.db and split.csv here")
    parser.add_argument("--command", default=None, help="the tune command, for the record")
    parser.add_argument("--note", default=None)
    parser.add_argument(
        "--paused", action="append", default=[], metavar="N=MIN",
        help="minutes trial N was paused (taken out of its length); repeatable",
    )  # fmt: skip
    args = parser.parse_args()

    import optuna

    url, folder = resolve(args.study)
    storage = open_storage(url, heartbeat=None)
    name = args.study_name or study_names(storage)[0]
    study = optuna.load_study(study_name=name, storage=storage)
    paused = paused_minutes(args.paused)
    trials = [trial_row(t, paused.get(t.number, 0.0)) for t in study.get_trials(deepcopy=False)]
    result = {
        "benchmark": "skinclf tune study",
        "study": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "command": args.command,
        "note": args.note,
        "split_sha256": study.user_attrs.get("split_sha256"),
        "stage": study.user_attrs.get("stage"),
        **summarise(trials),
        "trials": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.keep is not None and folder is not None:
        keep(folder, url, args.keep)
    print(json.dumps({k: result[k] for k in ("counts", "best", "baseline")}, indent=1))


if __name__ == "__main__":
    main()
