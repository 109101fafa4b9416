"""A `skinclf` subcommand run in a subprocess and killed by `skinclf.faults.fault_point`
(SKINCLF_FAULT), for the resume tests of `run` and `cv`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def killed_at(subcommand: str, fault: str, args: list[str]) -> None:
    """`skinclf SUBCOMMAND ARGS` with SIGKILL at `fault`; fails the test unless it was killed."""
    env = dict(os.environ, SKINCLF_FAULT=fault)
    cmd = [sys.executable, "-m", "skinclf", subcommand, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:] + proc.stdout[-3000:]
