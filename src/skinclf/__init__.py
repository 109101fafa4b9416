"""skinclf: skin-lesion classifiers that know when not to answer.

`skinclf.load(PATH)` is `skinclf.predictor.load`: the model in an exported package, a run, a
`skinclf run` output folder or a cv folder, as one `Predictor`, ready to predict images. It is
imported on first use, so `import skinclf` stays light (no torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# attribute -> the module that defines it
_LAZY = {"load": "skinclf.predictor", "Predictor": "skinclf.predictor"}


def __getattr__(name: str) -> object:
    # importlib rather than an import statement: every layer imports `skinclf` (for
    # __version__), and skinclf.predictor sits above most of them
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skinclf' has no attribute {name!r}")
