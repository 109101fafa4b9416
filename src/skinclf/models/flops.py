"""Size and cost of backbones: parameters and forward FLOPs, measured on the meta device (no memory,
no weights, no download)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from skinclf.models.registry import BackboneInfo, get_backbone_info, list_backbones, meta_model

if TYPE_CHECKING:
    import torch


@dataclass
class BackboneCost:
    """A backbone's registry entry with its parameter count and forward FLOPs at `image_size`."""

    info: BackboneInfo
    image_size: int
    parameters: int
    forward_flops: int | None  # None: the architecture cannot take images this small


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_forward_flops(model: torch.nn.Module, image_size: int, batch_size: int = 1) -> int:
    """FLOPs of one forward pass on `batch_size` RGB images (a multiply-accumulate counts as 2).

    Counted by torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products), on the
    device the model lives on; use the meta device to count without computing.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from skinclf.models.modes import eval_mode

    device = next(model.parameters()).device
    x = torch.empty(batch_size, 3, image_size, image_size, device=device)
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def meta_backbone(info: BackboneInfo) -> torch.nn.Module:
    """The architecture of `info` on the meta device, without weights (num_classes=0)."""
    return meta_model(info.timm_name)


def backbone_cost(name: str, image_size: int | None = None) -> BackboneCost:
    """Parameters and forward FLOPs of backbone `name` at `image_size` (default: its input size)."""
    info = get_backbone_info(name)
    return _cost(info, image_size)


def backbone_costs(image_size: int | None = None, progress: bool = False) -> list[BackboneCost]:
    """`backbone_cost` for every registered backbone."""
    infos = list_backbones()
    if not progress:
        return [_cost(info, image_size) for info in infos]
    from rich.progress import track

    return [_cost(info, image_size) for info in track(infos, description="Measuring backbones")]


def _cost(info: BackboneInfo, image_size: int | None) -> BackboneCost:
    model = meta_backbone(info)
    size = image_size or info.input_size
    try:
        flops: int | None = count_forward_flops(model, size)
    except RuntimeError:  # e.g. a kernel larger than the feature map
        flops = None
    return BackboneCost(info, size, count_parameters(model), flops)
