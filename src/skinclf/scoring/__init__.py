"""Confidence scores computed from features and statistics fitted on training data, and the
logit offsets a model carries: numpy only, no torch, no evaluation code (a deployed model
imports this, never `skinclf.evaluate`)."""
