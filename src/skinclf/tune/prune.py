"""Pruning a fine-tuning trial: each epoch's validation score goes to the trial."""

from __future__ import annotations

import lightning as L


class PruneOnValidation(L.Callback):
    """Reports each epoch's validation score to the trial and stops it when the pruner says so
    (Optuna's pruning protocol, as optuna-integration's Lightning callback does it)."""

    def __init__(self, trial, monitor: str = "val_balanced_accuracy") -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")
