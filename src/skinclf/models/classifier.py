"""The trained classifier as a plain module that describes itself.

`Classifier` is backbone + head on uint8 images (N, 3, H, W) -> logits; normalisation lives
inside it, so a checkpoint predicts the same way everywhere. `ClassifierSpec` says everything
needed to rebuild it (backbone, head, classes, preprocessing) and is saved in the checkpoint
(the training module's hyperparameters), so `load_classifier(best.ckpt)` needs nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from skinclf.classes import CLASSES
from skinclf.digests import file_sha256
from skinclf.errors import DataError

SPEC_KEY = "classifier"  # the spec's key in the checkpoint's hyper_parameters
_STATE_PREFIX = "classifier."  # the classifier's keys in the training module's state_dict


@dataclass(frozen=True)
class ClassifierSpec:
    """What rebuilds a classifier: architecture, classes and preprocessing."""

    backbone: str  # a registry name (`skinclf models list`)
    num_features: int  # width of the backbone's pooled features
    head: str = "linear"  # linear: Dropout-Linear; mlp: Linear-ReLU-Dropout-Linear
    head_hidden: int = 1024
    dropout: float = 0.2
    classes: tuple[str, ...] = tuple(CLASSES)
    image_size: int = 192  # square input, pixels
    resize: str = "squash"  # how images are made square: squash | center-crop
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # of [0, 1] RGB pixels
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channels_last: bool = False
    drop_path_rate: float = 0.0
    color_constancy: str = "none"  # none | shades_of_gray (before the normalisation)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ClassifierSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("classes", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


SHADES_OF_GRAY_P = 6.0


def shades_of_gray(x: torch.Tensor, p: float = SHADES_OF_GRAY_P) -> torch.Tensor:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) of [0, 1] images (N, 3, H, W):
    each channel divided by its Minkowski p-norm mean (the illuminant estimate), scaled so
    that a grey illuminant leaves the image unchanged; clipped to [0, 1]."""
    illuminant = x.clamp_min(0).pow(p).mean(dim=(2, 3), keepdim=True).pow(1.0 / p)
    unit = illuminant / illuminant.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return (x / (unit * 3**0.5).clamp_min(1e-6)).clamp(0.0, 1.0)


def build_head(
    head: str, in_features: int, hidden: int, dropout: float, n_classes: int
) -> nn.Module:
    """`linear`: Dropout-Linear; `mlp`: the paper's Dense(hidden)-ReLU-Dropout-Dense."""
    if head == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, n_classes))


class Classifier(nn.Module):
    """Backbone + head on uint8 (or [0, 1] float) images; normalisation inside the model."""

    def __init__(self, spec: ClassifierSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.head = build_head(
            spec.head, spec.num_features, spec.head_hidden, spec.dropout, len(spec.classes)
        )
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        if self.spec.color_constancy == "shades_of_gray":
            x = shades_of_gray(x)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of uint8 (or [0, 1] float) images."""
        x = self.normalize(x)
        if self.spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(
    spec: ClassifierSpec, pretrained: bool = False, weights: Path | None = None
) -> Classifier:
    """A classifier of `spec`: backbone from the registry (ImageNet weights when `pretrained`)."""
    from skinclf.models.registry import create_backbone

    backbone, _ = create_backbone(
        spec.backbone, pretrained=pretrained, weights=weights, drop_path_rate=spec.drop_path_rate
    )
    model = Classifier(spec, backbone)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _classifier_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The classifier's own keys of a training module's state_dict (either layout)."""
    if any(k.startswith(_STATE_PREFIX) for k in state):
        return {k[len(_STATE_PREFIX) :]: v for k, v in state.items() if k.startswith(_STATE_PREFIX)}
    # checkpoints written before the spec was saved held backbone.*, head.*, mean, std beside
    # the training module's own tensors (e.g. loss_fn.adjustment of the logit-adjusted loss)
    own = ("backbone.", "head.")
    return {k: v for k, v in state.items() if k.startswith(own) or k in ("mean", "std")}


def _legacy_spec(path: Path, state: Mapping[str, torch.Tensor]) -> ClassifierSpec:
    """The spec of a checkpoint written before specs were saved: from the run's config.yaml."""
    from skinclf.config import read_config

    config = path.parent.parent / "config.yaml"  # RUN/checkpoints/best.ckpt
    if not config.is_file():
        raise DataError(
            f"{path} does not describe its classifier and has no config.yaml beside its run "
            "folder; it was not written by skinclf."
        )
    cfg = read_config(config)
    linear = [v for k, v in state.items() if k.startswith("head.") and v.ndim == 2]
    return ClassifierSpec(
        backbone=cfg.model.backbone,
        num_features=int(linear[0].shape[1]),
        head=cfg.model.head,
        head_hidden=cfg.model.head_hidden,
        dropout=cfg.model.dropout,
        image_size=cfg.data.image_size,
        resize=cfg.data.resize,
        mean=tuple(state["mean"].flatten().tolist()),
        std=tuple(state["std"].flatten().tolist()),
        channels_last=cfg.trainer.channels_last,
    )


def load_classifier(
    path: Path | str, map_location: str = "cpu", trusted: bool = True
) -> Classifier:
    """Rebuild the classifier of a skinclf checkpoint (`RUN/checkpoints/best.ckpt`), in eval mode.

    The checkpoint carries its `ClassifierSpec`; no training loss, optimiser or data is built.
    `trusted=False` (a model package received from elsewhere) unpickles tensors and plain
    values only (`torch.load(weights_only=True)`), never code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as exc:  # a damaged or foreign file: say which
        raise DataError(f"{path}: cannot be read as a checkpoint ({exc}).") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DataError(f"{path}: is not a skinclf checkpoint (no state_dict).")
    state = _classifier_state(ckpt["state_dict"])
    hparams = ckpt.get("hyper_parameters") or {}
    spec = (
        ClassifierSpec.from_dict(hparams[SPEC_KEY])
        if SPEC_KEY in hparams
        else _legacy_spec(path, state)
    )
    model = build_classifier(spec)
    model.load_state_dict(state)
    return model.eval()


def checkpoint_fingerprint(path: Path | str) -> str:
    """16 hex digits of the checkpoint file's sha256: what fitted statistics (feature_stats.npz)
    record, so a changed checkpoint is noticed."""
    return file_sha256(path)[:16]
