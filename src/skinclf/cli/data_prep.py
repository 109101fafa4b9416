"""`skinclf data split` and `skinclf data cache` (added to the `data` group)."""

from __future__ import annotations

from skinclf.cli.data import app  # noqa: F401  (commands register on the data group)
