"""The LightningModules: the maths of training. Lightning's Trainer holds the loop.

`SkinClassifier` is backbone + head on images (uint8 in, logits out: normalisation lives inside
the model, so a checkpoint predicts the same way everywhere). `HeadClassifier` trains the same
head on cached frozen-backbone features (stage 1, transfer learning).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torchmetrics
from torch import nn

from skinclf.classes import CLASSES, NUM_CLASSES
from skinclf.config import RunConfig
from skinclf.models.classifier import SPEC_KEY, Classifier, ClassifierSpec
from skinclf.models.classifier import build_head as models_build_head
from skinclf.train.augment import augment_batch
from skinclf.train.distill import hard_labels
from skinclf.train.mixing import BatchMix, sample_mix


def build_head(cfg: RunConfig, in_features: int) -> nn.Module:
    """The configured head (`model.head`) on `in_features` pooled features."""
    m = cfg.model
    return models_build_head(m.head, in_features, m.head_hidden, m.dropout, NUM_CLASSES)


def classifier_spec(
    cfg: RunConfig, mean: Sequence[float], std: Sequence[float], num_features: int
) -> ClassifierSpec:
    """The spec of the classifier a run trains (saved in its checkpoints)."""
    m = cfg.model
    return ClassifierSpec(
        backbone=m.backbone,
        num_features=int(num_features),
        head=m.head,
        head_hidden=m.head_hidden,
        dropout=m.dropout,
        classes=tuple(CLASSES),
        image_size=cfg.data.image_size,
        resize=cfg.data.resize,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        channels_last=cfg.trainer.channels_last,
        drop_path_rate=m.drop_path_rate,
        color_constancy=cfg.data.color_constancy,
    )


def step_seed(seed: int, step: int) -> int:
    """The seed of one training step: dropout and augmentation depend on (seed, step) only."""
    return (seed * 1_000_003 + step * 7919) % (2**63 - 1)


def seed_generator(seed: int, device: torch.device) -> None:
    """Seed the random numbers of `device`: on the CPU its generator alone (`torch.manual_seed`
    also queues a lazy CUDA seeding, which records a stack trace each call: a millisecond a
    step, more than a whole step of the head)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


class MaskDropout(nn.Dropout):
    """Dropout with its mask drawn as uniform numbers >= p: the same distribution as
    `nn.Dropout`, about twice as fast on the CPU (whose `bernoulli_` dominates a head step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # in place: 0 or 1/(1-p) where the uniform number is >= p
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


def with_mask_dropout(head: nn.Module) -> nn.Module:
    """`head` with its `nn.Dropout` layers as `MaskDropout` (no weights: the state dict is the
    same, so a stage-1 head loads into the classifier's own)."""
    for name, layer in head.named_children():
        if type(layer) is nn.Dropout:
            setattr(head, name, MaskDropout(layer.p))
    return head


class _Classifier(L.LightningModule):
    """Loss, metrics and logging shared by both stages."""

    def __init__(self, cfg: RunConfig, loss: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.loss_fn = loss
        metrics = {
            "accuracy": torchmetrics.classification.MulticlassAccuracy(
                NUM_CLASSES, average="micro"
            ),
            "balanced_accuracy": torchmetrics.classification.MulticlassRecall(
                NUM_CLASSES, average="macro"
            ),
        }
        self.train_metrics = torchmetrics.MetricCollection(metrics, prefix="train_")
        self.val_metrics = self.train_metrics.clone(prefix="val_")

    def logits(
        self, x: torch.Tensor, augment: bool = False, mix: BatchMix | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        seed = step_seed(self.cfg.seed, self.global_step)
        seed_generator(seed, self.device)
        mix = self.sample_mix(len(y), seed + 2)
        logits = self.logits(x, augment=True, mix=mix)
        if mix is None:
            loss = self.loss_fn(logits.float(), y)
        else:
            loss = mix.loss(self.loss_fn, logits.float(), y)
            y = mix.dominant_targets(y)
        self.update_train_metrics(logits.detach(), hard_labels(y))
        self.log_train_step(loss)
        return loss

    def update_train_metrics(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.train_metrics.update(logits, y)

    def log_train_step(self, loss: torch.Tensor) -> None:
        """The epoch means of the training loss and metrics, and the learning rates."""
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        if self._trainer is not None and self.trainer.optimizers:
            groups = self.trainer.optimizers[0].param_groups
            self.log("lr", groups[0]["lr"], on_step=False, on_epoch=True)
            self.log("lr_backbone", groups[-1]["lr"], on_step=False, on_epoch=True)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.logits(x).float()
        loss = nn.functional.cross_entropy(logits, y)
        self.val_metrics.update(logits, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def sample_mix(self, n: int, seed: int) -> BatchMix | None:
        """This step's mixup/CutMix (fine-tuning only: stage 1's cached features are unmixed)."""
        return None


class HeadClassifier(_Classifier):
    """Stage 1: the head alone, on cached pooled features of the frozen backbone."""

    def __init__(self, cfg: RunConfig, loss: nn.Module, in_features: int) -> None:
        super().__init__(cfg, loss)
        self.head = with_mask_dropout(build_head(cfg, in_features))
        self.train_loss = torchmetrics.MeanMetric()
        self.train_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update_train_metrics(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Predicted classes kept, the metrics updated once an epoch: a torchmetrics update
        costs about as much as the head's forward pass."""
        self.train_outputs.append((logits.argmax(1), y))

    def log_train_step(self, loss: torch.Tensor) -> None:
        """Only accumulated here and logged once an epoch (`on_train_epoch_end`): a head step
        takes about a millisecond, Lightning's per-step `log` several (tuning runs thousands)."""
        self.train_loss.update(loss.detach())

    def on_train_epoch_end(self) -> None:
        if self.train_outputs:
            preds, targets = (torch.cat(t) for t in zip(*self.train_outputs, strict=True))
            self.train_metrics.update(preds, targets)
            self.train_outputs.clear()
        self.log("train_loss", self.train_loss.compute(), prog_bar=True)
        self.log_dict(self.train_metrics.compute())
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self.train_loss.reset()
        self.train_metrics.reset()

    def logits(
        self, x: torch.Tensor, augment: bool = False, mix: BatchMix | None = None
    ) -> torch.Tensor:
        return self.head(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.transfer
        # fused: one kernel for all of the head's parameters; for the mlp head (1.3 M weights)
        # the per-tensor update cost about as much as the step's forward and backward passes
        return torch.optim.AdamW(
            self.head.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True
        )


class SkinClassifier(_Classifier):
    """Training of a `Classifier` (backbone + head on uint8 images, normalisation inside).

    The classifier's spec is saved in every checkpoint (hyperparameters), so
    `models.load_classifier(best.ckpt)` rebuilds it without this module or its loss.
    """

    def __init__(
        self,
        cfg: RunConfig,
        loss: nn.Module,
        backbone: nn.Module,
        stages: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        num_features: int,
    ) -> None:
        super().__init__(cfg, loss)
        spec = classifier_spec(cfg, mean, std, num_features)
        self.save_hyperparameters({SPEC_KEY: spec.to_dict()})
        self.classifier = Classifier(spec, backbone)
        self.num_features = num_features
        self.stages = list(stages)
        self.frozen_modules: list[nn.Module] = []
        self.set_trainable(cfg.train.unfreeze)
        # Set while training on cached activations of the first `prefix_blocks` blocks
        # (train.frozen_cache): inputs are then those activations, not images.
        self.prefix_blocks: int | None = None

    @property
    def backbone(self) -> nn.Module:
        return self.classifier.backbone

    @property
    def head(self) -> nn.Module:
        return self.classifier.head

    @property
    def mean(self) -> torch.Tensor:
        return self.classifier.mean

    @property
    def std(self) -> torch.Tensor:
        return self.classifier.std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.normalize(x)

    # --- model -----------------------------------------------------------------------------
    def set_trainable(self, unfreeze: int | str) -> None:
        """Train the last `unfreeze` stages of the backbone ('all': every parameter)."""
        n_stages = len(self.stages)
        keep = n_stages if unfreeze == "all" else max(0, min(int(unfreeze), n_stages))
        trainable = tuple(self.stages[n_stages - keep :])

        def in_stages(name: str, stages: Sequence[str]) -> bool:
            return any(name == s or name.startswith(s + ".") for s in stages)

        for name, param in self.backbone.named_parameters():
            param.requires_grad = unfreeze == "all" or in_stages(name, trainable)
        self.frozen_modules = [
            module
            for name, module in self.backbone.named_modules()
            if unfreeze != "all"
            and name
            and in_stages(name, self.stages)
            and not in_stages(name, trainable)
        ]

    def train(self, mode: bool = True) -> SkinClassifier:
        super().train(mode)
        for module in self.frozen_modules:  # frozen BatchNorm keeps its running statistics
            module.eval()
        return self

    def on_fit_start(self) -> None:
        # A new module has every submodule training, frozen stages included (nn.Module's
        # default); Lightning keeps the modes it finds, so set the intended ones here.
        self.train()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of uint8 (or [0, 1] float) images."""
        return self.classifier.features(x)

    def sample_mix(self, n: int, seed: int) -> BatchMix | None:
        return sample_mix(self.cfg.augment, n, seed)

    def logits(
        self, x: torch.Tensor, augment: bool = False, mix: BatchMix | None = None
    ) -> torch.Tensor:
        """Logits of uint8 images (or of cached activations, with `prefix_blocks` set).

        `augment`: the random augmentation of training; `mix`: mixup/CutMix of the network's
        input (the augmented images, or the cached activations).
        """
        if self.prefix_blocks is not None:
            a = x.float()
            return self._logits_from_activations(mix(a) if mix is not None else a)
        if augment and self.cfg.augment.enabled:
            g = torch.Generator().manual_seed(step_seed(self.cfg.seed, self.global_step) + 1)
            x = augment_batch(x.float() / 255.0, self.cfg.augment, g)
        if mix is not None:
            x = mix(x.float() / 255.0 if x.dtype == torch.uint8 else x)
        return self.head(self.features(x))

    def _logits_from_activations(self, a: torch.Tensor) -> torch.Tensor:
        """Logits from cached prefix activations (N, C, H, W)."""
        from skinclf.train.activations import suffix_features

        assert self.prefix_blocks is not None
        return self.head(suffix_features(self, a, self.prefix_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    # --- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):  # noqa: ANN201 (Lightning's union of return types)
        t = self.cfg.train
        backbone_params = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": list(self.head.parameters()), "lr": t.lr}]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": t.backbone_lr})
        if t.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
        elif t.optimizer == "adam":  # Keras-style L2 penalty, as in the paper's recipe
            opt = torch.optim.Adam(groups, weight_decay=t.weight_decay)
        else:
            opt = torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=t.weight_decay)

        if t.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt,
                mode="min" if t.plateau.monitor.endswith("loss") else "max",
                factor=t.plateau.factor,
                patience=t.plateau.patience,
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": sched,
                    "monitor": t.plateau.monitor,
                    "interval": "epoch",
                },
            }
        if t.schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if t.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=[g["lr"] for g in groups],
                total_steps=total,
                pct_start=max(0.05, min(0.5, t.warmup_epochs / max(t.epochs, 1))),
            )
        else:
            from skinclf.train.schedules import warmup_cosine

            steps_per_epoch = total / max(t.epochs, 1)
            sched = warmup_cosine(opt, total, warmup=int(t.warmup_epochs * steps_per_epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
