"""Training does not depend on what the caches hold: a cold and a warm cache give the same
model, and fine-tuning starts with exactly the frozen stages in eval mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from skinclf.config import load_config
from skinclf.models.modes import eval_mode
from skinclf.train.callbacks import TrainModeCheck
from skinclf.train.training import FitOptions, fit

QUIET = {"progress": False, "log": lambda *_: None}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


class RecordModes(L.Callback):
    """Records which modules train during the first fine-tuning step."""

    def __init__(self) -> None:
        self.eval_names: set[str] | None = None
        self.frozen: set[str] = set()

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if self.eval_names is None:
            self.eval_names = {n for n, m in module.named_modules() if not m.training}
            ids = {id(m) for m in module.frozen_modules}
            self.frozen = {n for n, m in module.named_modules() if id(m) in ids}


@pytest.mark.slow
@pytest.mark.parametrize("frozen_cache", [False, True], ids=["images", "frozen-cache"])
def test_cold_and_warm_cache_train_the_same_model(
    make_sample: Callable[..., Path], tmp_path: Path, frozen_cache: bool
) -> None:
    data = make_sample("ham10000", n=6, size=32)
    overrides = ["data.image_size=32", "transfer.epochs=2", "trainer.threads=1"]
    if frozen_cache:
        overrides += ["train.frozen_cache=true", "train.frozen_views=2", "train.unfreeze=3"]
    cfg = load_config("sample", overrides=overrides)
    cache = tmp_path / "cache"
    runs, modes = [], []
    for name in ("cold", "warm"):  # the second run finds features (and activations) cached
        record = RecordModes()
        options = FitOptions(callbacks=[record])
        fit(data, tmp_path / name, cfg, cache_dir=cache, options=options, **QUIET)
        runs.append(_weights(tmp_path / name))
        modes.append(record)
    cold, warm = runs
    assert cold.keys() == warm.keys()
    for key in cold:
        assert torch.equal(cold[key], warm[key]), key
    for record in modes:  # only the frozen stages were in eval mode, cold or warm
        assert record.eval_names == record.frozen and record.frozen
        assert "head" not in record.eval_names and "backbone.conv_head" not in record.eval_names


def test_eval_mode_restores_each_modules_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    model.train()
    model[2].eval()  # a frozen BatchNorm inside a training model
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model] == [True, True, False] and model.training


class _Frozen(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.BatchNorm1d(2)
        self.head = nn.Linear(2, 2)
        self.frozen_modules = [self.frozen]


def test_train_mode_check_accepts_only_the_frozen_stages_in_eval() -> None:
    module, check = _Frozen(), TrainModeCheck()
    module.train()
    module.frozen.eval()
    check.on_train_start(None, module)  # exactly the frozen stage in eval: fine
    module.eval()  # what inference used to leave behind
    with pytest.raises(RuntimeError, match="wrong mode"):
        check.on_train_start(None, module)
    module.train()  # frozen stage training: also wrong
    with pytest.raises(RuntimeError, match=r"wrong mode, e\.g\. frozen \(train\):"):
        check.on_train_start(None, module)


def test_train_mode_check_installs_no_process_wide_warnings_filter() -> None:
    """fit silences Lightning's eval-mode warning around its own trainer.fit only; the callback
    leaves the process's warnings filters as they were."""
    import warnings

    before = list(warnings.filters)
    module = _Frozen()
    TrainModeCheck().on_fit_start(None, module)
    assert warnings.filters == before
