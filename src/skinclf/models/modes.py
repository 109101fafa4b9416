"""Train/eval mode that is restored, module by module, after inference.

`module.eval()` inside a helper and a bare `module.train(was_training)` afterwards lose the
per-module modes: a `SkinClassifier` in training keeps its frozen stages in eval mode while the
rest trains, and a stage-1 feature pass must leave exactly that behind (a model left in eval
mode fine-tunes without dropout, drop-path and batch statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put `model` in eval mode for the block; afterwards every submodule has the mode it had."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
