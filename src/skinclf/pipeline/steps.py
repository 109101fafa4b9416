"""Steps that are skipped when up to date, redone when an input or a setting changed, and
continued when a kill or Ctrl-C stopped them.

A `Step` is a name, its settings, its input files/folders, its outputs, the steps whose results
it uses, and a function. `run_steps` takes them in order: a step whose recorded fingerprint
(skinclf.pipeline.state) matches and whose outputs exist is skipped; otherwise it runs, and the
manifest records it as started before and done after (after its outputs are written, so a kill
in between makes the next run do it again). A step that had started under the same fingerprint
is told to resume (`StepContext.resume`), e.g. training continues from its last checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinclf.faults import fault_point
from skinclf.pipeline.state import (
    Fingerprint,
    RunState,
    StepRecord,
    digest,
    folder_digest,
    what_changed,
)


class Reporter:
    """What a run tells its user; the CLI draws it with rich, the default prints plain lines."""

    def step_start(self, index: int, total: int, step: Step, reason: str) -> None:
        print(f"[{index}/{total}] {step.name}: {step.title} ({reason})")

    def step_skip(self, index: int, total: int, step: Step) -> None:
        print(f"[{index}/{total}] {step.name}: up to date, skipped")

    def step_done(self, index: int, total: int, step: Step, seconds: float) -> None:
        print(f"[{index}/{total}] {step.name}: done in {seconds:.1f} s")

    def log(self, message: str) -> None:
        print(message)

    def sub(self, message: str) -> None:
        """A sub-step of the running step (e.g. `fitting the temperature`)."""
        print(f"  {message}")


@dataclass
class StepContext:
    """What a step's function is told: whether it continues an interrupted attempt, where to
    say things, and whether to draw progress bars."""

    resume: bool
    reporter: Reporter
    progress: bool


@dataclass
class Step:
    name: str
    title: str
    function: Callable[[StepContext], Sequence[Path] | None]  # returns outputs found on the way
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    needs: Sequence[str] = ()


@dataclass
class Outcome:
    """What happened to a step in this run: "skipped", "ran", "redone" or "resumed"."""

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class _Decision:
    status: str  # skipped, ran, redone, resumed
    reason: str


def label(path: Path, out: Path) -> str:
    """How the manifest names a path: relative to the output folder when inside it (so a moved
    or copied output folder stays up to date), else absolute."""
    resolved, root = Path(path).resolve(), Path(out).resolve()
    return resolved.relative_to(root).as_posix() if root in resolved.parents else str(resolved)


def _decide(
    entry: StepRecord | None, fp: Fingerprint, outputs: Sequence[Path], out: Path
) -> _Decision:
    if entry is None:
        return _Decision("ran", "not run before")
    if entry.fingerprint != fp.value:
        return _Decision("redone", "redone: " + what_changed(entry.parts, fp))
    if entry.status != "done":
        return _Decision("resumed", "interrupted before: continues where it stopped")
    recorded = [out / p for p in entry.outputs or []]  # (an absolute p stays itself)
    gone = [p for p in [*outputs, *recorded] if not p.exists()]
    if gone:
        return _Decision("redone", f"redone: its output {gone[0]} is missing")
    return _Decision("skipped", "up to date")


class _Digests:
    """Input digests; a dataset folder (outside the output folder) is listed once per run."""

    def __init__(self, out: Path):
        self.out = Path(out).resolve()
        self.folders: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        path = Path(path)
        resolved = path.resolve()
        if path.is_dir() and self.out not in resolved.parents and resolved != self.out:
            if resolved not in self.folders:
                self.folders[resolved] = folder_digest(path)
            return self.folders[resolved]
        return digest(path)


def run_steps(
    steps: Sequence[Step], state: RunState, reporter: Reporter, progress: bool = True
) -> list[Outcome]:
    """Run (or skip) `steps` in order, recording each in `state`; the outcome of each."""
    state.keep_only([s.name for s in steps])
    out = state.path.parent
    digests = _Digests(out)
    fingerprints: dict[str, str] = {}
    outcomes = []
    for index, step in enumerate(steps, 1):
        fp = Fingerprint(
            dict(step.settings),
            {label(p, out): digests(p) for p in step.inputs},
            {n: fingerprints[n] for n in step.needs},
        )
        fingerprints[step.name] = fp.value
        decision = _decide(state.steps.get(step.name), fp, step.outputs, out)
        if decision.status == "skipped":
            reporter.step_skip(index, len(steps), step)
            outcomes.append(Outcome(step.name, "skipped", decision.reason))
            continue
        reporter.step_start(index, len(steps), step, decision.reason)
        if decision.status != "resumed":
            state.started(step.name, fp)
        started = time.perf_counter()
        found = step.function(StepContext(decision.status == "resumed", reporter, progress))
        fault_point(f"step/{step.name}")  # (the tests' kill after a step's outputs)
        seconds = time.perf_counter() - started
        outputs = [label(p, out) for p in [*step.outputs, *(found or [])]]
        state.finished(step.name, outputs, seconds)
        reporter.step_done(index, len(steps), step, seconds)
        outcomes.append(Outcome(step.name, decision.status, decision.reason, seconds))
    return outcomes
