"""`make bench` / `make bench-quick`: every benchmark as a subprocess, then the results table.

    .venv/bin/python benchmarks/suite.py [--quick] [--train] [--only NAME ...] \
        [--data ../shared/data] [--runs runs] [--dry-run]

Benchmarks, in order (each writes JSON under benchmarks/results/; one whose input is missing
is skipped with one line saying why; one that fails is reported and the others still run):
- **quality**: with `--train`, `skinclf run` of `default` and of `paper` (paper with
  default's backbone, `train.budget_minutes=30` each) on DATA/ham10000-224, with
  DATA/pad-ufes-20-300 as `--ood` and DATA/isic2018-test-dev as `--test`, into RUNS/default
  and RUNS/paper: the same lesion-grouped split (seed 0, with its calibration part), the same
  backbone, the same wall-clock budget; a run already done is not redone (the command does
  nothing), one interrupted is continued. Then `compare_presets.py` on their common test
  split -> presets.json and `skinclf compare` on the ISIC 2018 images ->
  presets_isic2018.json.
- **cv**: with `--train`, `skinclf cv` of `default` with 3 folds on DATA/ham10000-224 (the
  ISIC images as --test, PAD-UFES-20 as --ood) into RUNS/cv3-default, then cv_result.py ->
  cv3_default.json (out-of-fold numbers, the ensemble and each fold model on ISIC).
- **speed**: bench_speed.py (fp32 vs bf16, channels_last, matmul peak, prediction);
  **frozen_cache**: bench_frozen_cache.py; **cache**: bench_cache.py (DATA/ham10000-224);
  **tune**: bench_tune.py (needs a PostgreSQL URL: `--tune-storage` or
  SKINCLF_BENCH_STORAGE).
- **shift**: bench_shift.py on the predictions files of the default run (RUNS/default/eval:
  val, val_corrupted, test, isic2018-test-dev and pad-ufes-20-300, every gate score), then
  the figure (plot_shift.py, docs/img/) and the tables of docs/experiments.md (shift_tables.py)
  from its JSON.
- **table**: table.py rewrites the results table of benchmarks/README.md.

`--quick` (`make bench-quick`): speed at 128 px with fewer rounds, shift (if the default run
is there), and the quality comparison of runs/bench-quick/{default,paper} ->
presets_quick.json: with `--train` those are `skinclf run` for 5 minutes each on a
class-stratified quarter of HAM10000 (a folder of links, runs/bench-quick/ham10000-subset),
without the ISIC and PAD-UFES-20 sets. `--dry-run` prints the commands without running them.
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
PRESETS = ("default", "paper")
ISIC, PAD = "isic2018-test-dev", "pad-ufes-20-300"  # the shared sets, and their eval/ names
SHIFT_RISK = 0.25  # the SGR target risk of the runs' selective classifiers and bench_shift.py

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


def run_cmd(args: argparse.Namespace, runs: Path, preset: str, ham: Path) -> list[str]:
    """`skinclf run` of one preset: the full job (split with its calibration part, train,
    predict every set with every score, evaluate); the same command resumes or does nothing."""
    budget = 5 if args.quick else args.budget_minutes
    sets: list[str] = []
    for option, name in (("--ood", "pad-ufes-20-300"), ("--test", "isic2018-test-dev")):
        if not args.quick and (args.data / name).is_dir():
            sets += [option, str(args.data / name)]
    return [
        *SKINCLF,
        "run",
        "--data",
        str(ham),
        *sets,
        "--preset",
        preset,
        "--out",
        str(runs / preset),
        "--target-risk",
        str(SHIFT_RISK),
        "--no-progress",
        f"model.backbone={args.backbone or default_backbone()}",
        f"train.budget_minutes={budget}",
    ]


def preset_runs(args: argparse.Namespace, runs: Path, ham: Path) -> list[list[str]] | str:
    """`skinclf run` of default and paper (it skips what is done; nothing when both are done
    and `--train` is not given)."""
    missing = [p for p in PRESETS if not (runs / p / "eval" / "metrics.json").is_file()]
    if missing and not args.train:
        return f"no runs {', '.join(rel(runs / p) for p in missing)} (`--train` makes them)"
    if not args.train:
        return []
    if not ham.is_dir():
        return f"no data {rel(ham)} to train on"
    if args.quick and not args.dry_run:
        ham = ham_subset(ham, runs / "ham10000-subset", args.subset)
    elif args.quick:
        ham = runs / "ham10000-subset"
    return [run_cmd(args, runs, p, ham) for p in PRESETS]


def quality(args: argparse.Namespace) -> Plan:
    runs = args.runs / "bench-quick" if args.quick else args.runs
    cmds = preset_runs(args, runs, args.data / "ham10000-224")
    if isinstance(cmds, str):
        return cmds
    name = "presets_quick" if args.quick else "presets"
    a, b = runs / "default", runs / "paper"
    cmds.append(script("compare_presets.py", a, b, "--out", RESULTS / f"{name}.json"))
    isic = [run / "eval" / f"{ISIC}.csv" for run in (a, b)]
    if not args.quick:
        cmds.append(
            [*SKINCLF, "compare", *map(str, isic), "--out", str(RESULTS / f"{name}_isic2018.json")]
        )
    return cmds


CV_FOLDS = 3  # screening (issue: screen with 3 folds, confirm with 5)


def cv(args: argparse.Namespace) -> Plan:
    """With `--train`, `skinclf cv` of `default` (3 folds, the ISIC images as --test, PAD-UFES-20
    as --ood) into RUNS/cv3-default, then cv_result.py -> cv3_default.json, keeping its
    predictions in results/cv/cv3-default for later paired comparisons."""
    out = args.runs / f"cv{CV_FOLDS}-default"
    ham, isic = args.data / "ham10000-224", args.data / ISIC
    if not (out / "cv_summary.json").is_file() and not args.train:
        return f"no cross-validation {rel(out)} (`--train` makes it)"
    if not ham.is_dir() or not isic.is_dir():
        return f"no data {rel(ham)} and {rel(isic)}"
    sets = ["--test", str(isic)]
    sets += ["--ood", str(args.data / PAD)] if (args.data / PAD).is_dir() else []
    cmds = []
    if args.train:
        cmds.append([*SKINCLF, "cv", "--data", str(ham), "--folds", str(CV_FOLDS), *sets,
                     "--out", str(out), "--no-progress"])  # fmt: skip
    out_json, kept = RESULTS / f"cv{CV_FOLDS}_default.json", RESULTS / "cv" / out.name
    return [*cmds, script("cv_result.py", out, "--external", isic, "--out", out_json,
                          "--keep", kept)]  # fmt: skip


def shift(args: argparse.Namespace) -> Plan:
    """bench_shift.py on the predictions of the default `skinclf run` (RUNS/default/eval)."""
    run = args.shift_run or args.runs / "default"
    ev = run / "eval"
    files = {"isic": ev / f"{ISIC}.csv", "pad": ev / f"{PAD}.csv"}
    needed = [ev / f"{n}.csv" for n in ("val", "val_corrupted", "test")] + list(files.values())
    missing = [rel(f) for f in needed if not f.is_file()]
    if missing and not (args.train and not args.quick):
        return f"no predictions {', '.join(missing)} (the default `skinclf run` makes them)"
    cmd = script(
        "bench_shift.py",
        "--eval",
        ev,
        "--gate-stats",
        run / "run" / "feature_stats.npz",
        "--isic",
        files["isic"],
        "--pad",
        files["pad"],
    )
    meta = args.data / PAD / "metadata.csv"
    cmd += ["--pad-metadata", str(meta)] if meta.is_file() else []
    return [cmd, script("plot_shift.py"), script("shift_tables.py")]


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
    "cv": (cv, False),
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
            print(
                f"{name}: failed (exit {done.returncode}) after "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            return False
    return True


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the subset of `make bench-quick`")
    ap.add_argument(
        "--train",
        action="store_true",
        help="`skinclf run` default and paper (resumed, or nothing if done)",
    )
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
