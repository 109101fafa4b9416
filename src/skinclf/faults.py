"""A test hook: kill this process (SIGKILL, as `kill -9`) at a named point of a long step.

The fault tests prove that every long step survives being killed half-way and that running the
same command again ends as an uninterrupted run would. They set `SKINCLF_FAULT=NAME` (kill the
first time the code passes point NAME) or `SKINCLF_FAULT=NAME:after=N` (the N-th time). Points:

- `decode-cache`: after each image decoded into the decode cache's temporary file;
- `feature-cache`: after the feature cache's temporary file is written, before it is renamed;
- `activation-cache`: after each batch written into the activation cache's temporary file;
- `tune-trial`: in each tuning trial, once its parameters are chosen;
- `step/NAME`: in `skinclf run`, after step NAME (e.g. `evaluate`) wrote its outputs, before
  the run state records it as done (skinclf.pipeline.steps);
- `write/FILE`: before the temporary file of FILE (a file name, e.g. `last.ckpt`) is renamed
  into place (`skinclf.atomic.atomic_path`, which every cache and run file goes through).

Without the variable, `fault_point` does nothing (the variable is read once).
"""

from __future__ import annotations

import os
import signal

ENV = "SKINCLF_FAULT"

_UNREAD = ("", 0)
_spec: tuple[str, int] | None = _UNREAD
_passes = 0


def _parse(value: str) -> tuple[str, int]:
    name, _, after = value.partition(":after=")
    try:
        count = int(after) if after else 1
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: expected NAME or NAME:after=N") from None
    return name.strip(), count


def fault_point(name: str) -> None:
    """Kill the process with SIGKILL when `SKINCLF_FAULT` names this point (the N-th pass with
    `:after=N`); otherwise do nothing."""
    global _spec, _passes
    if _spec is _UNREAD:
        value = os.environ.get(ENV, "")
        _spec = _parse(value) if value else None
    if _spec is None or _spec[0] != name:
        return
    _passes += 1
    if _passes >= _spec[1]:
        os.kill(os.getpid(), signal.SIGKILL)
