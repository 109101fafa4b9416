"""The one model object: `Predictor` (loading, inference, decisions, export) and `load`."""

from skinclf.predictor.core import Inference, Member, Predictor, load, load_run, model_kind

__all__ = ["Inference", "Member", "Predictor", "load", "load_run", "model_kind"]
