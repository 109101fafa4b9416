"""Run the steps of `skinclf run` or `skinclf cv` in their output folder, one process per
folder at a time (a lock file), each step skipped, redone or resumed by its fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from skinclf.errors import ConfigError
from skinclf.pipeline.cv import CvLayout, CvOptions, build_cv_steps
from skinclf.pipeline.job import LOCK_FILE, Layout, RunOptions, build_steps, check_options
from skinclf.pipeline.state import RunState
from skinclf.pipeline.steps import Outcome, Reporter, Step, run_steps


@dataclass
class CvResult:
    """What `run_cv` did: each step's outcome, and the summary file."""

    out: Path
    outcomes: list[Outcome]
    summary_path: Path


@dataclass
class RunResult:
    """What `run_job` did: each step's outcome, and where the results are."""

    out: Path
    outcomes: list[Outcome]
    metrics_path: Path
    report_path: Path


def run_job(opts: RunOptions, reporter: Reporter | None = None, progress: bool = True) -> RunResult:
    """Run every step of `skinclf run` that is not up to date in `opts.out`; a second
    process on the same folder is refused while one runs."""
    out = Path(opts.out)
    check_options(opts)
    lay = Layout(opts)
    outcomes = _run_locked(out, build_steps(opts, lay), opts, reporter, progress)
    return RunResult(out, outcomes, lay.folder.metrics, lay.folder.report)


def run_cv(opts: CvOptions, reporter: Reporter | None = None, progress: bool = True) -> CvResult:
    """Run every step of `skinclf cv` that is not up to date in its output folder (finished
    folds are skipped, an interrupted one continues); one process per folder at a time."""
    out = Path(opts.run.out)
    check_options(opts.run)
    lay = CvLayout(Layout(opts.run), opts.folds)
    outcomes = _run_locked(out, build_cv_steps(opts, lay), opts.run, reporter, progress)
    return CvResult(out, outcomes, lay.summary)


def _run_locked(
    out: Path, steps: list[Step], opts: RunOptions, reporter: Reporter | None, progress: bool
) -> list[Outcome]:
    out.mkdir(parents=True, exist_ok=True)
    if opts.cfg.trainer.threads:  # also when training is skipped: predict as it would
        torch.set_num_threads(opts.cfg.trainer.threads)
    lock = FileLock(str(out / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"Another skinclf process is working in {out}; wait for it or give another --out."
        ) from None
    try:
        return run_steps(steps, RunState.load(out), reporter or Reporter(), progress)
    finally:
        lock.release()
