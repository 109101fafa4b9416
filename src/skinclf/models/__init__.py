"""Backbones: a registry of names (timm's), one factory, and local weight loading."""

from skinclf.models.checkpoint import load_backbone_weights, package_weights_file, read_state_dict
from skinclf.models.efficientnet_lite import LITE_MEAN, LITE_STD, convert_reference_state_dict
from skinclf.models.flops import (
    BackboneCost,
    backbone_cost,
    backbone_costs,
    count_forward_flops,
    count_parameters,
)
from skinclf.models.registry import (
    BackboneEntry,
    BackboneInfo,
    BlockSplit,
    block_split,
    check_pretrained_download,
    create_backbone,
    feature_size,
    get_backbone_info,
    infer_stages,
    list_backbones,
    offline_backbones,
)

__all__ = [
    "LITE_MEAN",
    "LITE_STD",
    "BackboneCost",
    "BackboneEntry",
    "BackboneInfo",
    "BlockSplit",
    "backbone_cost",
    "backbone_costs",
    "block_split",
    "check_pretrained_download",
    "convert_reference_state_dict",
    "count_forward_flops",
    "count_parameters",
    "create_backbone",
    "feature_size",
    "get_backbone_info",
    "infer_stages",
    "list_backbones",
    "load_backbone_weights",
    "offline_backbones",
    "package_weights_file",
    "read_state_dict",
]
