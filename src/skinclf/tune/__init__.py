"""`skinclf tune`: Optuna studies over the search spaces the presets declare (`tune:`)."""

from skinclf.tune.prune import PruneOnValidation
from skinclf.tune.search import PRUNERS, STAGES, STUDY_NAMES, TuneOptions, suggest_fixed, tune

__all__ = [
    "PRUNERS",
    "STAGES",
    "STUDY_NAMES",
    "PruneOnValidation",
    "TuneOptions",
    "suggest_fixed",
    "tune",
]
