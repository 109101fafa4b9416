"""One inference path below the steps: a classifier and decoded images in, logits and pooled
features out (with D4 test-time augmentation), in a recorded precision. Used by a run's own
final predictions, by `skinclf predict` and by the server; no Lightning Trainer here.
"""
