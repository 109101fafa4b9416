"""The frozen-prefix / trainable-suffix split of train.frozen_cache, read from the registry."""

from __future__ import annotations

import pytest
import torch

from skinclf.config import load_config
from skinclf.errors import ConfigError
from skinclf.train.activations import frozen_blocks, prefix_forward, suffix_features


def _model(backbone_name: str):
    from skinclf.models import create_backbone
    from skinclf.train.module import SkinClassifier

    cfg = load_config("sample", overrides=[f"model.backbone={backbone_name}", "train.unfreeze=4"])
    backbone, info = create_backbone(backbone_name, pretrained=False)
    model = SkinClassifier(
        cfg,
        torch.nn.CrossEntropyLoss(),
        backbone,
        info.stages,
        info.mean,
        info.std,
        int(info.num_features),
    )
    return model.eval(), info


@pytest.mark.parametrize("name", ["mobilenetv2_100", "efficientnet_b0"])
def test_split_of_other_efficientnet_class_backbones_is_their_forward(name: str) -> None:
    torch.manual_seed(0)
    model, info = _model(name)
    k = frozen_blocks(model.backbone, info.stages, 4)
    assert k == 5  # stem, bn1, blocks 0-6, conv_head, bn2; the last 4 train
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        whole = model.features(x)
        split = suffix_features(model, prefix_forward(model, x, k), k)
    assert torch.allclose(whole, split, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny"])
def test_backbones_without_a_split_are_refused(name: str) -> None:
    from skinclf.models.flops import meta_backbone
    from skinclf.models.registry import get_backbone_info

    info = get_backbone_info(name)
    with pytest.raises(ConfigError, match="EfficientNet-style"):
        frozen_blocks(meta_backbone(info), info.stages, 2)
