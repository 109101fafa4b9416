"""`skinclf run` and `skinclf cv`: the whole job (check, split, cache, train, predict,
calibrate, evaluate, report) as resumable steps in one output folder: job.py and cv.py build
the steps, set_steps.py the ones they share, steps.py/state.py skip, redo or resume each by its
fingerprint, runner.py runs them.

The names below are loaded on first use (PEP 562), so that `skinclf.pipeline.summary`, which
`skinclf evaluate` reads, does not load the training code.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "STATE_FILE": "skinclf.contracts.run_folder",
    "CvOptions": "skinclf.pipeline.cv",
    "CvResult": "skinclf.pipeline.runner",
    "Outcome": "skinclf.pipeline.steps",
    "Reporter": "skinclf.pipeline.steps",
    "RunOptions": "skinclf.pipeline.job",
    "RunResult": "skinclf.pipeline.runner",
    "RunState": "skinclf.pipeline.state",
    "SampleData": "skinclf.pipeline.job",
    "Step": "skinclf.pipeline.steps",
    "StepContext": "skinclf.pipeline.steps",
    "run_cv": "skinclf.pipeline.runner",
    "run_job": "skinclf.pipeline.runner",
    "run_steps": "skinclf.pipeline.steps",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
