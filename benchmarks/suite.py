"""`make bench` / `make bench-quick`: every benchmark as a subprocess, then the results table.

    .venv/bin/python benchmarks/suite.py [--quick] [--train] [--predict] [--only NAME ...] \
        [--data ../shared/data] [--runs runs] [--dry-run]

Benchmarks, in order (each writes JSON under benchmarks/results/; one whose input is missing
is skipped with one line saying why; one that fails is reported and the others still run):
- **quality**: `compare_presets.py` on RUNS/default and RUNS/paper (the same split, the same
  backbone, the same wall-clock budget) -> presets.json; with `--predict` also both runs on
  the ISIC 2018 images (`compare_predictions.py`) -> presets_isic2018.json. With `--train`,
  a run that is missing is trained first: `skinclf data split` (seed 0, lesion-grouped) of
  DATA/ham10000-224, then `skinclf train` for `default` and for `paper` with default's
  backbone, `train.budget_minutes=30` each.
- **speed**: bench_speed.py (fp32 vs bf16, channels_last, matmul peak, prediction);
  **frozen_cache**: bench_frozen_cache.py; **cache**: bench_cache.py (DATA/ham10000-224);
  **tune**: bench_tune.py (needs a PostgreSQL URL: `--tune-storage` or
  SKINCLF_BENCH_STORAGE).
- **shift**: bench_shift.py on the predictions files of RUNS/default/eval (val.csv,
  val_corrupted.csv, test.csv, isic.csv, pad.csv); `--predict` makes the missing ones with
  `skinclf predict` (every gate score) from the run, DATA/isic2018-test-dev and
  DATA/pad-ufes-20-300.
- **table**: table.py rewrites the results table of benchmarks/README.md.

`--quick` (`make bench-quick`): speed at 128 px with fewer rounds, shift, and the quality
comparison of runs/bench-quick/{default,paper} -> presets_quick.json: with `--train` those are
trained for 5 minutes each on a class-stratified quarter of HAM10000 (a folder of links,
runs/bench-quick/ham10000-subset); runs already there are reused. `--dry-run` prints the
commands without running them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
PY = sys.executable
SKINCLF = [PY, "-m", "skinclf"]
SCORES = "msp,max_logit,margin,neg_entropy,doctor,energy,mahalanobis,rel_mahalanobis,knn,vim"
SHIFT_FILES = ("val.csv", "val_corrupted.csv", "test.csv", "isic.csv", "pad.csv")

Plan = list[list[str]] | str  # the commands to run, or why the benchmark is skipped


def rel(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (for messages)."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def script(name: str, *args: object) -> list[str]:
    return [PY, str(BENCH / name), *map(str, args)]


def default_backbone() -> str:
    from skinclf.config import load_config

    return load_config("default").model.backbone


def ham_subset(source: Path, out: Path, fraction: float, seed: int = 0) -> Path:
    """A HAM10000 folder of links to `fraction` of each class's images (at least 10 per class):
    HAM10000_metadata.csv with those rows and HAM10000_images/ of links. Kept if it exists."""
    import pandas as pd

    if (out / "HAM10000_metadata.csv").is_file():
        return out
    meta = pd.read_csv(source / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    images = {p.stem: p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".png")}
    meta = meta[meta["image_id"].isin(images)]
    keep = pd.concat(
        g.sample(n=min(len(g), max(10, round(fraction * len(g)))), random_state=seed)
        for _, g in meta.groupby("dx")
    ).sort_values("image_id")
    folder = out / "HAM10000_images"
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in keep["image_id"]:
        src = images[image_id]
        (folder / src.name).symlink_to(src.resolve())
    keep.to_csv(out / "HAM10000_metadata.csv", index=False)
    return out


def train_plan(args: argparse.Namespace, runs: Path, ham: Path) -> list[list[str]] | str:
    """Commands that train the missing default/paper runs (nothing when both are there)."""
    missing = [p for p in ("default", "paper") if not (runs / p / "test_predictions.csv").is_file()]
    if not missing:
        return []
    if not args.train:
        return f"no runs {', '.join(rel(runs / p) for p in missing)} (`--train` makes them)"
    if not ham.is_dir():
        return f"no data {rel(ham)} to train on"
    if args.quick and not args.dry_run:
        ham = ham_subset(ham, runs / "ham10000-subset", args.subset)
    elif args.quick:
        ham = runs / "ham10000-subset"
    split = runs / "split.csv"
    cmds = [] if split.is_file() else [[*SKINCLF, "data", "split", str(ham), "--out", str(split)]]
    budget = 5 if args.quick else args.budget_minutes
    for preset in missing:
        cmds.append([
            *SKINCLF, "train", "--data", str(ham), "--split", str(split), "--out",
            str(runs / preset), "--preset", preset, "--no-progress",
            f"model.backbone={args.backbone or default_backbone()}",
            f"train.budget_minutes={budget}",
        ])
    return cmds


def predict_cmd(run: Path, out: Path, *where: str, scores: str = SCORES) -> list[str]:
    return [*SKINCLF, "predict", str(run), *where, "--scores", scores, "--no-progress",
            "--out", str(out)]


def quality(args: argparse.Namespace) -> Plan:
    runs = args.runs / "bench-quick" if args.quick else args.runs
    cmds = train_plan(args, runs, args.data / "ham10000-224")
    if isinstance(cmds, str):
        return cmds
    name = "presets_quick" if args.quick else "presets"
    a, b = runs / "default", runs / "paper"
    cmds.append(script("compare_presets.py", a, b, "--out", RESULTS / f"{name}.json"))
    isic = args.data / "isic2018-test-dev"
    if args.predict and isic.is_dir():
        shift_run = Path(os.path.abspath(args.shift_run or args.runs / "default"))
        for run in (a, b):
            if not (run / "eval" / "isic.csv").is_file():
                # the shift benchmark's run gets every gate score (its isic.csv is shared)
                scores = SCORES if Path(os.path.abspath(run)) == shift_run else "msp"
                where = ["--data", str(isic)]
                cmds.append(predict_cmd(run, run / "eval" / "isic.csv", *where, scores=scores))
        cmds.append(script("compare_predictions.py", a / "eval" / "isic.csv",
                           b / "eval" / "isic.csv", "--out", RESULTS / f"{name}_isic2018.json"))
    return cmds


def shift(args: argparse.Namespace) -> Plan:
    run = args.shift_run or args.runs / "default"
    ev = run / "eval"
    missing = [f for f in SHIFT_FILES if not (ev / f).is_file()]
    cmds: list[list[str]] = []
    if missing and not args.predict:
        return f"no predictions {', '.join(missing)} in {rel(ev)} (`--predict` makes them)"
    if missing and not (run / "config.yaml").is_file():
        return f"no predictions in {rel(ev)} and no trained run {rel(run)} to make them"
    sources = {
        "val.csv": ["--split", "val"],
        "val_corrupted.csv": ["--split", "val", "--corrupt", "mix"],
        "test.csv": ["--split", "test"],
        "isic.csv": ["--data", str(args.data / "isic2018-test-dev")],
        "pad.csv": ["--data", str(args.data / "pad-ufes-20-300")],
    }
    for f in missing:
        where = sources[f]
        if where[0] == "--data" and not Path(where[1]).is_dir():
            return f"no data {rel(Path(where[1]))} for {rel(ev / f)}"
        cmds.append(predict_cmd(run, ev / f, *where))
    cmd = script("bench_shift.py", "--eval", ev, "--gate-stats", run / "feature_stats.npz")
    meta = args.data / "pad-ufes-20-300" / "metadata.csv"
    cmds.append(cmd + (["--pad-metadata", str(meta)] if meta.is_file() else []))
    return cmds


def speed(args: argparse.Namespace) -> Plan:
    quick = ["--size", "128", "--rounds", "2", "--steps", "2", "--matmul", "1024"]
    return [script("bench_speed.py", *(quick if args.quick else []))]


def frozen_cache(args: argparse.Namespace) -> Plan:
    return [script("bench_frozen_cache.py", "--size", 224, "--unfreeze", 5)]


def cache(args: argparse.Namespace) -> Plan:
    ham = args.data / "ham10000-224"
    return [script("bench_cache.py", ham)] if ham.is_dir() else f"no data {rel(ham)}"


def tune(args: argparse.Namespace) -> Plan:
    url = args.tune_storage or os.environ.get("SKINCLF_BENCH_STORAGE")
    if not url:
        return "no PostgreSQL URL (--tune-storage or SKINCLF_BENCH_STORAGE)"
    ham = args.data / "ham10000-224"
    if not ham.is_dir():
        return f"no data {rel(ham)}"
    return [script("bench_tune.py", ham, "--storage", url)]


def table(args: argparse.Namespace) -> Plan:
    return [script("table.py")]


# name -> (plan, in the quick suite)
BENCHMARKS: dict[str, tuple[Callable[[argparse.Namespace], Plan], bool]] = {
    "quality": (quality, True),
    "speed": (speed, True),
    "frozen_cache": (frozen_cache, False),
    "cache": (cache, False),
    "tune": (tune, False),
    "shift": (shift, True),
    "table": (table, True),
}


def shown(cmd: list[str]) -> str:
    """The command as one shell line, paths under the repository relative to it."""
    return shlex.join(rel(Path(c)) if c.startswith("/") else c for c in cmd)


def run_plan(name: str, plan: Plan, dry_run: bool) -> bool:
    """Run the commands of one benchmark in order; False if one failed."""
    if isinstance(plan, str):
        print(f"{name}: skipped, {plan}", flush=True)
        return True
    for cmd in plan:
        print(f"{name}: {shown(cmd)}", flush=True)
        if dry_run:
            continue
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT)
        if done.returncode:
            print(f"{name}: failed (exit {done.returncode}) after "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            return False
    return True


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the subset of `make bench-quick`")
    ap.add_argument("--train", action="store_true", help="train missing default/paper runs")
    ap.add_argument("--predict", action="store_true", help="make missing predictions files")
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="these benchmarks only")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    ap.add_argument("--shift-run", type=Path, default=None, help="default: RUNS/default")
    ap.add_argument("--backbone", default=None, help="both presets' backbone (default's)")
    ap.add_argument("--budget-minutes", type=float, default=30, help="per training run")
    ap.add_argument("--subset", type=float, default=0.25, help="--quick: fraction of HAM10000")
    ap.add_argument("--tune-storage", default=None, help="PostgreSQL URL for bench_tune.py")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = args.only or [n for n, (_, quick) in BENCHMARKS.items() if quick or not args.quick]
    failed = []
    for name in names:
        if not run_plan(name, BENCHMARKS[name][0](args), args.dry_run):
            failed.append(name)
    print(f"failed: {', '.join(failed)}" if failed else "benchmarks done", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
