"""The cosine schedule with warm-up (torch's LinearLR then CosineAnnealingLR) gives the learning
rates of the closed-form lambda it replaced, at every step, and resumes where it stopped."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from skinclf.train.schedules import warmup_cosine

BASE = (1e-3, 1e-4)  # head and backbone groups
CASES = [(1, 0), (10, 0), (37, 0), (10, 3), (100, 10), (57, 56), (5, 5), (5, 8), (1000, 37)]


def old_cosine(total: int, warmup: int) -> Callable[[int], float]:
    """The LambdaLR factor train/module.py used before (kept here as the reference)."""

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return cosine


def _optimizer() -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in BASE]
    return torch.optim.AdamW(
        [{"params": [p], "lr": lr} for p, lr in zip(params, BASE, strict=True)]
    )


def _rates(
    make: Callable[[torch.optim.Optimizer], LRScheduler], steps: int, cut: int | None = None
) -> list[list[float]]:
    """Each group's learning rate at steps 0..steps; with `cut`, the scheduler and optimizer
    are rebuilt from their state dicts after `cut` steps (a resumed run)."""
    opt = _optimizer()
    sched = make(opt)
    rates = []
    for step in range(steps + 1):
        if step == cut:
            state = (opt.state_dict(), sched.state_dict())
            opt = _optimizer()
            sched = make(opt)
            opt.load_state_dict(state[0])
            sched.load_state_dict(state[1])
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return rates


def _same(old: list[list[float]], new: list[list[float]]) -> None:
    """Equal up to float rounding: torch updates the rate step by step, the lambda in closed
    form."""
    assert len(old) == len(new)
    for step, (a, b) in enumerate(zip(old, new, strict=True)):
        for x, y, base in zip(a, b, BASE, strict=True):
            assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15 * base), (step, x, y)


@pytest.mark.parametrize(("total", "warmup"), CASES)
def test_warmup_cosine_gives_the_old_rate_at_every_step(total: int, warmup: int) -> None:
    old = _rates(lambda opt: LambdaLR(opt, old_cosine(total, warmup)), total)
    new = _rates(lambda opt: warmup_cosine(opt, total, warmup), total)
    _same(old, new)
    if warmup:  # the ramp's first step and the full rate after it, by hand
        assert new[0] == pytest.approx([b / (warmup + 1) for b in BASE], rel=1e-12)
    if warmup < total:
        assert new[warmup] == pytest.approx(list(BASE), rel=1e-12)
        assert new[total] == pytest.approx([0.0, 0.0], abs=1e-18)


@pytest.mark.parametrize(("total", "warmup", "cut"), [(20, 5, 3), (20, 5, 5), (20, 5, 12)])
def test_resumed_schedule_continues_with_the_same_rates(total: int, warmup: int, cut: int):
    old = _rates(lambda opt: LambdaLR(opt, old_cosine(total, warmup)), total)
    resumed = _rates(lambda opt: warmup_cosine(opt, total, warmup), total, cut=cut)
    _same(old, resumed)


def test_the_epoch_line_shows_each_groups_rate_after_the_epoch() -> None:
    from types import SimpleNamespace

    from skinclf.train.callbacks import EpochSummary

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in BASE]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, BASE, strict=True)])
    lines: list[str] = []
    trainer = SimpleNamespace(
        optimizers=[opt], callback_metrics={}, current_epoch=0, is_global_zero=True
    )
    summary = EpochSummary(epochs=3, log=lines.append)
    summary.on_train_epoch_start(trainer, None)
    for group in opt.param_groups:  # the schedule moved during the epoch
        group["lr"] /= 10
    summary.on_train_epoch_end(trainer, None)
    head, backbone = (lr / 10 for lr in BASE)
    assert lines == [f"epoch 1/3  lr {head:.2e} (backbone {backbone:.2e})"]


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_only_on_a_terminal(monkeypatch, terminal: bool) -> None:
    from types import SimpleNamespace

    from skinclf.train.stages import bars

    monkeypatch.setattr("sys.stdout", SimpleNamespace(isatty=lambda: terminal))
    assert bars(True) is terminal  # in a log file the epoch lines stand alone
    assert bars(False) is False
