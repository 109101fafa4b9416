"""The stages' pooled outputs taken during inference (what the stage scores of the OOD gate
read): one pass, the same as a separate forward, view-averaged under TTA."""

from __future__ import annotations

import numpy as np
import torch

from skinclf.inference.batch import InferenceSettings, infer, stage_dims, stage_modules
from skinclf.models.classifier import ClassifierSpec, build_classifier


def _model():
    torch.manual_seed(0)
    spec = ClassifierSpec(backbone="efficientnet_lite0", num_features=1280, image_size=32)
    return build_classifier(spec).eval()


def test_stage_outputs_match_a_separate_forward() -> None:
    model = _model()
    images = np.random.default_rng(0).integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)
    two = InferenceSettings(batch_size=2)
    result = infer(model, images, np.arange(5), two, stages=True, progress=False)
    dims = stage_dims(model)
    assert len(dims) == len(stage_modules(model)) == 7
    assert result.stages is not None and result.stages.shape == (5, sum(dims))
    # by hand: run the stem and each block, pooling every block's output
    with torch.inference_mode():
        bb = model.backbone
        x = bb.bn1(bb.conv_stem(model.normalize(torch.from_numpy(images).permute(0, 3, 1, 2))))
        pooled = []
        for block in bb.blocks:
            x = block(x)
            pooled.append(x.mean(dim=(2, 3)))
    np.testing.assert_allclose(result.stages, torch.cat(pooled, 1).numpy(), rtol=1e-4, atol=1e-5)
    plain = infer(model, images, np.arange(5), progress=False)
    assert plain.stages is None
    np.testing.assert_allclose(plain.logits, result.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.score_features[:, :1280], result.features)


def test_stage_outputs_are_view_averaged_under_tta() -> None:
    model = _model()
    images = np.random.default_rng(1).integers(0, 255, size=(3, 32, 32, 3), dtype=np.uint8)
    d4 = InferenceSettings(tta="d4")
    tta = infer(model, images, np.arange(3), d4, stages=True, progress=False)
    from skinclf.inference.batch import d4_views

    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    views = [
        infer(
            model,
            v.permute(0, 2, 3, 1).contiguous().numpy(),
            np.arange(3),
            stages=True,
            progress=False,
        ).stages
        for v in d4_views(x)
    ]
    np.testing.assert_allclose(tta.stages, np.mean(views, axis=0), rtol=1e-4, atol=1e-5)
