"""Batched inference on decoded images: logits, pooled features and the pooled output of each
backbone stage (what the stage scores of the OOD gate use), with optional D4 TTA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

from skinclf.models.modes import eval_mode


def d4_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 views of the dihedral group D4 (for test-time augmentation)."""
    views = []
    for flip in (False, True):
        base = torch.flip(x, dims=[3]) if flip else x
        views.extend(torch.rot90(base, k, dims=[2, 3]) for k in range(4))
    return views


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def stage_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The backbone's stages whose pooled outputs the stage scores use: the blocks of a timm
    EfficientNet / MobileNet (`backbone.blocks`), none for a backbone without them."""
    blocks = getattr(getattr(model, "backbone", None), "blocks", None)
    return list(blocks) if isinstance(blocks, torch.nn.Sequential) else []


@contextlib.contextmanager
def stage_taps(model: torch.nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """While open, each forward pass appends to the yielded list the global-average-pooled
    output of every stage (`stage_modules`), in order; the caller takes and clears them."""
    pooled: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        pooled.append(output.float().mean(dim=(2, 3)))

    handles = [m.register_forward_hook(keep) for m in stage_modules(model)] if enabled else []
    try:
        yield pooled
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def stage_dims(model: torch.nn.Module, size: int = 32) -> tuple[int, ...]:
    """Width of each stage's pooled output (one forward pass of a small blank image)."""
    if not stage_modules(model):
        return ()
    device = next(model.parameters()).device
    with eval_mode(model), stage_taps(model) as pooled:
        model.features(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device))
        return tuple(int(t.shape[1]) for t in pooled)


@dataclass(frozen=True)
class Inference:
    """What one pass over images gave, and how it ran."""

    logits: np.ndarray  # (N, C); with TTA, log of the view-averaged probabilities
    features: np.ndarray  # (N, D) pooled backbone features (view-averaged with TTA)
    tta: str  # none | d4
    precision: str  # 32 | bf16-mixed | 16-mixed
    stages: np.ndarray | None = None  # (N, S): each stage's pooled output, concatenated

    @property
    def score_features(self) -> np.ndarray:
        """What the feature scores read (`FeatureStats.scores`): the pooled features, then
        the stages' pooled outputs when they were taken."""
        if self.stages is None:
            return self.features
        return np.concatenate([self.features, self.stages], axis=1)


@dataclass(frozen=True)
class InferenceSettings:
    """How a pass over images runs: `tta` none | d4 (the mean over the 8 D4 views), the
    autocast `precision` (32 | bf16-mixed | 16-mixed) and `batch_size` images at a time."""

    tta: str = "none"
    precision: str = "32"
    batch_size: int = 64


def infer(
    classifier: torch.nn.Module,
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    settings: InferenceSettings = InferenceSettings(),
    progress: bool = True,
    description: str = "predict",
    stages: bool = False,
) -> Inference:
    """Logits and features of `images[rows]` (uint8 N,H,W,3) from a classifier (anything with
    `features(x)` and `head(f)`, e.g. `models.Classifier`), with the TTA, precision and batch
    size of `settings`; `stages`: also each backbone stage's pooled output (`Inference.stages`;
    None when the backbone has none).

    With D4 TTA the logits are the log of the mean probability over the 8 views (so that their
    softmax is the view-averaged probability) and the features are the mean over views. Runs in
    eval mode and leaves every module in the mode it found it in."""
    with eval_mode(classifier), torch.inference_mode():
        logits, feats, pooled = _predict_arrays(
            classifier, images, rows, settings, progress, description, stages
        )
    return Inference(logits, feats, settings.tta, settings.precision, pooled)


def _predict_arrays(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    settings: InferenceSettings,
    progress: bool,
    description: str,
    stages: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    device = next(model.parameters()).device
    tta, precision, batch_size = settings.tta, settings.precision, settings.batch_size
    rows = np.asarray(rows, dtype=np.int64)
    out_logits, out_feats, out_stages = [], [], []
    taps = stage_taps(model, enabled=stages)
    with Progress(disable=not progress, transient=True) as bar, taps as pooled:
        task = bar.add_task(description, total=len(rows))
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(images[np.sort(idx)]))
            order = np.argsort(np.argsort(idx))  # memmap reads are faster in sorted order
            x = x[torch.from_numpy(order)].permute(0, 3, 1, 2).to(device)
            views = d4_views(x) if tta == "d4" else [x]
            probs, feats, views_stages = [], [], []
            for v in views:
                with autocast_context(precision, device):
                    f = model.features(v)
                    logit = model.head(f)
                probs.append(torch.softmax(logit.float(), dim=1))
                feats.append(f.float())
                if pooled:
                    views_stages.append(torch.cat(pooled, dim=1))
                    pooled.clear()
                elif stages and getattr(model, "last_stages", None) is not None:
                    views_stages.append(model.last_stages.float())  # an ONNX graph's output
                if len(views) == 1:
                    out_logits.append(logit.float().cpu())
            if len(views) > 1:
                out_logits.append(torch.log(torch.stack(probs).mean(0).clamp_min(1e-12)).cpu())
            out_feats.append(torch.stack(feats).mean(0).cpu())
            if views_stages:
                out_stages.append(torch.stack(views_stages).mean(0).cpu())
            bar.advance(task, len(idx))
    stage_out = torch.cat(out_stages).numpy() if out_stages else None
    return torch.cat(out_logits).numpy(), torch.cat(out_feats).numpy(), stage_out
