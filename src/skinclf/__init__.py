"""skinclf: skin-lesion classifiers that know when not to answer.

`skinclf.load(MODEL_DIR)` is `skinclf.package.load`: the exported model, ready to predict
images. It is imported on first use, so `import skinclf` stays light (no torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"load": "skinclf.package"}  # attribute -> the module that defines it


def __getattr__(name: str) -> object:
    # importlib rather than an import statement: every layer imports `skinclf` (for
    # __version__), and skinclf.package sits above most of them
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skinclf' has no attribute {name!r}")
