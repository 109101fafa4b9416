"""Batched inference on decoded images: logits and pooled features, with optional D4 TTA."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Inference:
    """What one pass over images gave, and how it ran."""

    logits: np.ndarray  # (N, C); with TTA, log of the view-averaged probabilities
    features: np.ndarray  # (N, D) pooled backbone features (view-averaged with TTA)
    tta: str  # none | d4
    precision: str  # 32 | bf16-mixed | 16-mixed


def infer(
    classifier: torch.nn.Module,
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    tta: str = "none",
    precision: str = "32",
    batch_size: int = 64,
    progress: bool = True,
    description: str = "predict",
) -> Inference:
    """Logits and features of `images[rows]` (uint8 N,H,W,3) from a classifier (anything with
    `features(x)` and `head(f)`, e.g. `models.Classifier`), in eval mode."""
    logits, feats = predict_arrays(
        classifier, images, rows, batch_size, tta, precision, progress, description
    )
    return Inference(logits, feats, tta, precision)


@torch.inference_mode()
def predict_arrays(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    batch_size: int = 64,
    tta: str = "none",
    precision: str = "32",
    progress: bool = True,
    description: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) for `images[rows]` (uint8 N,H,W,3); TTA averages the 8 D4 views.

    With TTA the logits returned are log of the mean probability over views (so that softmax
    of them is the view-averaged probability) and the features are the mean over views.
    Runs in eval mode and leaves every module in the mode it found it in.
    """
    with eval_mode(model):
        return _predict_arrays(
            model, images, rows, batch_size, tta, precision, progress, description
        )


def _predict_arrays(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    batch_size: int,
    tta: str,
    precision: str,
    progress: bool,
    description: str,
) -> tuple[np.ndarray, np.ndarray]:
    device = next(model.parameters()).device
    rows = np.asarray(rows, dtype=np.int64)
    out_logits, out_feats = [], []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=len(rows))
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(images[np.sort(idx)]))
            order = np.argsort(np.argsort(idx))  # memmap reads are faster in sorted order
            x = x[torch.from_numpy(order)].permute(0, 3, 1, 2).to(device)
            views = d4_views(x) if tta == "d4" else [x]
            probs, feats = [], []
            for v in views:
                with autocast_context(precision, device):
                    f = model.features(v)
                    logit = model.head(f)
                probs.append(torch.softmax(logit.float(), dim=1))
                feats.append(f.float())
                if len(views) == 1:
                    out_logits.append(logit.float().cpu())
            if len(views) > 1:
                out_logits.append(torch.log(torch.stack(probs).mean(0).clamp_min(1e-12)).cpu())
            out_feats.append(torch.stack(feats).mean(0).cpu())
            bar.advance(task, len(idx))
    return torch.cat(out_logits).numpy(), torch.cat(out_feats).numpy()
