"""Tuning throughput: `skinclf tune --stage head` with one worker vs two on a PostgreSQL study.

    .venv/bin/python benchmarks/bench_tune.py DATA --storage postgresql+psycopg://USER@HOST/DB \\
        [--trials 40] [--trials-two 200] [--pruner median] [--preset default] \\
        [--split split.csv] [--name tune_head_workers] [key=value ...]

DATA is a dataset folder (any format). First one trial in a throw-away SQLite study fills the
decode and feature caches (not timed); then the same search runs twice on the PostgreSQL URL,
each in a new study (`bench-<N>w-<time>`): one worker with all cores for --trials trials, then
`--workers 2` with half the cores each (OMP_NUM_THREADS) for --trials-two. Finished trials
(complete or pruned: `--pruner`, as `skinclf tune`) per minute are counted from the first
trial's start to the last one's end (Optuna's timestamps), so the process start-up is not in
them; the command's wall time is recorded too. Prints both and writes benchmarks/results/NAME.json.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def tune_command(args, out: Path, cache: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "skinclf", "tune", "--data", str(args.data), "--out", str(out)]
    cmd += ["--stage", "head", "--preset", args.preset, "--cache-dir", str(cache), "--no-progress"]
    cmd += ["--pruner", args.pruner]
    if args.split is not None:
        cmd += ["--split", str(args.split)]
    return cmd + extra + list(args.overrides)


def measure(args, workdir: Path, cache: Path, workers: int, stamp: str, n: int) -> dict:
    """One search of `n` trials with `workers` processes on the PostgreSQL study."""
    import optuna

    study = f"bench-{workers}w-{stamp}"
    extra = ["--storage", args.storage, "--study", study, "--trials", str(n)]
    extra += ["--workers", str(workers)]
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(tune_command(args, workdir / study, cache, extra), check=True, env=env)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=study, storage=args.storage).trials
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    complete = [t for t in done if t.state.name == "COMPLETE"]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    span = (last - first).total_seconds()
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "study": study,
        "trials": len(trials),
        "finished": len(done),
        "complete": len(complete),
        "pruned": len(done) - len(complete),
        "trial_phase_s": round(span, 2),
        "trials_per_min": round(len(done) / (span / 60), 2) if span > 0 else None,
        "command_wall_s": round(wall, 2),
        "best_value": max(t.value for t in complete),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="dataset folder (any format)")
    parser.add_argument("--storage", required=True, help="postgresql+psycopg://USER@HOST/DB")
    parser.add_argument("--trials", type=int, default=40, help="of the one-worker search")
    parser.add_argument("--trials-two", type=int, default=200, help="of the two-worker search")
    parser.add_argument("--pruner", default="median", help="median, hyperband or none")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--split", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: skinclf's own")
    parser.add_argument("--name", default="tune_head_workers", help="results file name")
    parser.add_argument("overrides", nargs="*", help="fixed settings as key=value")
    args = parser.parse_intermixed_args()

    from bench_backbone import cpu_description  # next to this script
    from skinclf.data.cache import default_cache_dir

    cache = args.cache_dir or default_cache_dir()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        workdir = Path(tmp)
        warm = tune_command(args, workdir / "warm", cache, ["--trials", "1"])
        subprocess.run(warm, check=True)  # decode and feature caches, not timed
        runs = [
            measure(args, workdir, cache, workers, stamp, n)
            for workers, n in ((1, args.trials), (2, args.trials_two))
        ]
    for run in runs:
        print(
            f"{run['workers']} worker(s) x {run['threads_per_worker']} threads: "
            f"{run['trials_per_min']} trials/min ({run['finished']} trials, {run['pruned']} "
            f"pruned, in "
            f"{run['trial_phase_s']:.1f} s; command {run['command_wall_s']:.1f} s)"
        )
    result = {
        "benchmark": "skinclf tune --stage head: one worker vs --workers 2 on PostgreSQL",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cpu_description(),  # bench_backbone.py, next to this script
        "python": platform.python_version(),
        "data": str(args.data),
        "preset": args.preset,
        "overrides": list(args.overrides),
        "trials": {"1": args.trials, "2": args.trials_two},
        "pruner": args.pruner,
        "runs": runs,
        "speedup": (
            round(runs[1]["trials_per_min"] / runs[0]["trials_per_min"], 2)
            if runs[0]["trials_per_min"] and runs[1]["trials_per_min"]
            else None
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
