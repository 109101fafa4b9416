"""`skinclf tune`: Optuna studies over the search spaces the presets declare (`tune:`)."""

from skinclf.tune.prune import PruneOnValidation
from skinclf.tune.search import PRUNERS, STAGES, STUDY_NAMES, suggest_fixed, tune

__all__ = ["PRUNERS", "STAGES", "STUDY_NAMES", "PruneOnValidation", "suggest_fixed", "tune"]
