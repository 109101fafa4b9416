"""Lightning callbacks: one summary line per epoch, best-weights keeper for stage 1, and the
check that fine-tuning starts with exactly the frozen stages in eval mode; and the checkpoint
writer (a Trainer plugin) that replaces checkpoints atomically."""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins import TorchCheckpointIO

from skinclf import atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it and renames it into place.

    Lightning's own writer stages the file in the system temp folder and moves it; across file
    systems the move is a copy, so a process killed during it leaves a truncated last.ckpt that
    --resume cannot load (and a stray file in /tmp). Here a kill leaves the previous checkpoint
    whole, and a full disk is one DataError naming the checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        import torch

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, buffer.getbuffer())


def learning_rates(trainer: L.Trainer) -> str:
    """The learning rates at the end of the epoch's last step: the head's (`train.lr`'s group)
    and, when it trains, the backbone's (`train.backbone_lr`'s)."""
    groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
    if not groups:
        return "lr n/a"
    text = f"lr {groups[0]['lr']:.2e}"
    return text + (f" (backbone {groups[1]['lr']:.2e})" if len(groups) > 1 else "")


class EpochSummary(L.Callback):
    """Prints one line per epoch and measures training throughput (images/s)."""

    def __init__(self, epochs: int, log: Callable[[str], None] = print) -> None:
        self.epochs = epochs
        self.print_fn = log
        self._t0 = 0.0
        self._train_seconds: list[float] = []
        self._train_images: list[int] = []
        self._seen = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._seen = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._seen += len(batch[1])

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_seconds.append(time.perf_counter() - self._t0)
            self._train_images.append(self._seen)

    @property
    def images_per_second(self) -> float | None:
        if not self._train_seconds:
            return None
        return round(sum(self._train_images) / sum(self._train_seconds), 2)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Runs after validation (Lightning 2): train and val metrics of the epoch are known."""
        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        parts = [f"epoch {trainer.current_epoch + 1}/{self.epochs}"]
        for key, label in (
            ("train_loss", "train_loss"),
            ("train_balanced_accuracy", "train_bal_acc"),
            ("val_loss", "val_loss"),
            ("val_accuracy", "val_acc"),
            ("val_balanced_accuracy", "val_bal_acc"),
        ):
            if key in m:
                parts.append(f"{label} {m[key]:.4f}")
        parts.append(learning_rates(trainer))
        if self._train_seconds:
            parts.append(f"{self._train_images[-1] / self._train_seconds[-1]:.1f} img/s")
        self.print_fn("  ".join(parts))


class BestWeights(L.Callback):
    """Keeps an in-memory copy of the weights with the best monitored value (higher is better)."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best_score = float("-inf")
        self.best_state: dict | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) > self.best_score:
            self.best_score = float(value)
            self.best_state = copy.deepcopy(module.state_dict())

    def restore(self, module: L.LightningModule) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


class TrainModeCheck(L.Callback):
    """Fails fast when fine-tuning starts with any module in the wrong mode.

    Exactly the frozen stages (`SkinClassifier.frozen_modules`: their BatchNorm keeps its
    running statistics) may be in eval mode; every other module must train (dropout, drop-path,
    batch statistics). Replaces Lightning's blanket "module(s) in eval mode" warning, which
    fires by design for the frozen stages and so hid a model left in eval mode by inference
    (`train.stages.finetune` silences that warning around its own `trainer.fit` only).
    """

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        frozen = {id(m) for m in getattr(module, "frozen_modules", [])}
        wrong = [
            f"{name or type(module).__name__} ({'eval' if id(m) not in frozen else 'train'})"
            for name, m in module.named_modules()
            if m.training == (id(m) in frozen)
        ]
        if wrong:
            raise RuntimeError(
                f"Fine-tuning would start with {len(wrong)} module(s) in the wrong mode, e.g. "
                f"{', '.join(wrong[:3])}: only the frozen stages may be in eval mode."
            )


def epoch_bar() -> L.Callback:
    """Lightning's rich progress bar, numbering epochs as the epoch lines do (1/N ... N/N)
    rather than from 0 to N - 1."""
    from lightning.pytorch.callbacks import RichProgressBar

    class EpochBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            text = f"Epoch {current_epoch + 1}"
            if self.trainer.max_epochs is not None:
                text += f"/{self.trainer.max_epochs}"
            return f"{text:{len(self.validation_description)}}"

    return EpochBar(leave=False)
