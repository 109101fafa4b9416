"""`skinclf export --onnx`: the graph (uint8 pixels NCHW -> logits, features; dynamic batch)
and ONNX Runtime against PyTorch through the same preprocessing, TTA and averaging code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import skinclf
from skinclf.classes import CLASSES

ort = pytest.importorskip(
    "onnxruntime", reason='onnxruntime is not installed (pip install "skinclf[onnx]")'
)
pytest.importorskip("onnx", reason='onnx is not installed (pip install "skinclf[onnx]")')


def _images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Generated RGB images of several sizes and textures (never real data)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = size + 7 * i, size + 3 * (n - i)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), xx * yy], axis=-1)
        noise = rng.normal(0, 0.15, (h, w, 3))
        out.append(np.clip((base * 0.5 + 0.5 + noise) * 255, 0, 255).astype(np.uint8))
    return out


def test_graph_inputs_outputs(exported_model: Path) -> None:
    manifest = json.loads((exported_model / "skinclf-model.json").read_text())
    entry = manifest["onnx"]
    assert entry["file"] == "model.onnx" and isinstance(entry["opset"], int)
    assert entry["outputs"] == ["logits", "features", "stages"]  # what a stage gate reads
    size = manifest["preprocessing"]["image_size"]
    assert entry["inputs"]["pixels"]["shape"] == ["batch", 3, size, size]
    session = ort.InferenceSession(str(exported_model / entry["file"]))
    for n in (1, 5):  # a dynamic batch axis
        x = np.stack([im[:size, :size] for im in _images(n, size)]).transpose(0, 3, 1, 2)
        logits, features, stages = session.run(None, {"pixels": np.ascontiguousarray(x)})
        assert logits.shape == (n, len(CLASSES)) and features.shape[0] == stages.shape[0] == n


@pytest.mark.parametrize("tta", ["none", "d4"])
def test_onnx_runtime_agrees_with_pytorch(exported_model: Path, tta: str) -> None:
    torch_model = skinclf.load(exported_model)
    onnx_model = skinclf.load(exported_model, runtime="onnx")
    torch_model.tta = onnx_model.tta = tta  # the same TTA code runs both
    # ONNX Runtime runs fp32; the package's recorded precision is bf16 autocast on a CPU with
    # native bf16, so compare the networks at the one precision both run
    torch_model.precision = "32"
    images = _images(6, torch_model.image_size)
    a = torch_model.predict(images)
    b = onnx_model.predict(images)
    diff = max(
        abs(x["probabilities"][c] - y["probabilities"][c])
        for x, y in zip(a, b, strict=True)
        for c in CLASSES
    )
    assert diff < 1e-4
    assert [x["abstain_reason"] for x in a] == [y["abstain_reason"] for y in b]
