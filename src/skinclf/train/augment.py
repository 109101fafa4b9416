"""Batch augmentation on tensors, driven by an explicit generator (reproducible and resumable).

One affine warp per image combines the dihedral group D4 (lesions have no orientation), flips,
rotation, translation and random-resized-crop; then brightness/contrast/saturation jitter.
Working on whole batches keeps the per-image cost far below the network's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from skinclf.config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def random_affine(cfg: AugmentConfig, n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates, in affine_grid's [-1, 1] units."""
    eye = torch.eye(2).expand(n, 2, 2).clone()
    lin = eye
    if cfg.d4:
        k = torch.randint(0, 4, (n,), generator=g)
        angle = k.float() * (math.pi / 2)
        rot = (
            torch.stack(
                [torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], 1
            )
            .round()
            .view(n, 2, 2)
        )
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        lin = rot @ torch.diag_embed(torch.stack([flip, torch.ones(n)], 1))
    if cfg.hflip:
        f = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        lin = lin @ torch.diag_embed(torch.stack([f, torch.ones(n)], 1))
    if cfg.vflip:
        f = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        lin = lin @ torch.diag_embed(torch.stack([torch.ones(n), f], 1))
    if cfg.rotate:
        a = _uniform(n, -cfg.rotate, cfg.rotate, g) * (math.pi / 180)
        rot = torch.stack([torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)], 1)
        lin = rot.view(n, 2, 2) @ lin
    shift = torch.zeros(n, 2)
    if cfg.scale is not None:
        area = _uniform(n, cfg.scale[0], cfg.scale[1], g)
        log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), g)
        w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
        h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
        shift = shift + torch.stack(
            [
                (1 - w) * (2 * torch.rand(n, generator=g) - 1),
                (1 - h) * (2 * torch.rand(n, generator=g) - 1),
            ],
            1,
        )
        lin = torch.diag_embed(torch.stack([w, h], 1)) @ lin
    if cfg.translate:
        shift = shift + _uniform(2 * n, -2 * cfg.translate, 2 * cfg.translate, g).view(n, 2)
    return torch.cat([lin, shift[:, :, None]], dim=2)


def color_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors uniform in [1 - s, 1 + s], per image."""
    n = x.shape[0]
    b, c, s = (_uniform(n, 1 - strength, 1 + strength, g).view(n, 1, 1, 1) for _ in range(3))
    x = x * b
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * c + gray.mean(dim=(2, 3), keepdim=True)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = gray + (x - gray) * s
    return x.clamp(0.0, 1.0)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, 3, H, W) with values in [0, 1]."""
    if not cfg.enabled:
        return x
    theta = random_affine(cfg, x.shape[0], g).to(x.dtype)
    if not torch.equal(theta, torch.eye(2, 3).expand_as(theta)):
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.color_jitter:
        x = color_jitter(x, cfg.color_jitter, g)
    return x
