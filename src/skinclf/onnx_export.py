"""The classifier as an ONNX graph, and ONNX Runtime behind the same inference code as PyTorch.

The graph maps resized RGB pixels, uint8 NCHW (N, 3, S, S), to `logits` (N, C), `features`
(N, D) and, for a backbone with stages, `stages` (N, S): each stage's global-average-pooled
output, concatenated, what the stage scores of an OOD gate read; normalisation is inside it.
Decoding, colour handling and resizing (`data.cache.decode_image`), D4 test-time augmentation
and averaging (`inference.infer`) and the ensemble's mean probabilities stay outside, in the
code both runtimes share: the graph outputs raw logits (no offset or temperature is applied to
them anywhere).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skinclf.errors import DataError, MissingExtraError

ONNX_OPSET = 17
INPUT_NAME = "pixels"
OUTPUTS = ("logits", "features")
STAGES = "stages"  # the optional third output


def _require(module: str, feature: str) -> None:
    """MissingExtraError naming the `onnx` extra when `module` is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(
            f"{feature} needs the optional package {module}, which is not installed; install "
            f'it with pip install "skinclf[onnx]" (or pip install {module}) and run again.'
        )


class _Graph(nn.Module):
    """What is exported: uint8 pixels -> (logits, features[, stages]) of a `models.Classifier`;
    the stages' pooled outputs are taken by the same forward hooks as `inference.infer`'s."""

    def __init__(self, classifier: nn.Module, stages: bool) -> None:
        super().__init__()
        self.classifier = classifier
        self.stages = stages

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from skinclf.inference.batch import stage_taps

        with stage_taps(self.classifier, enabled=self.stages) as pooled:
            features = self.classifier.features(pixels)  # uint8 -> /255 -> normalised inside
            logits = self.classifier.head(features)
            if not self.stages:
                return logits, features
            return logits, features, torch.cat(list(pooled), dim=1)


def graph_inputs(image_size: int) -> dict:
    """The graph's input, as the manifest describes it."""
    return {
        INPUT_NAME: {
            "dtype": "uint8",
            "shape": ["batch", 3, image_size, image_size],
            "layout": "NCHW, RGB, 0..255, already decoded and resized (see preprocessing)",
        }
    }


def export_onnx(classifier: nn.Module, path: Path, image_size: int) -> dict:
    """Write `classifier` as an ONNX graph (legacy TorchScript exporter, dynamic batch axis)
    and return the manifest's `onnx` entry (without `file`)."""
    from skinclf.inference.batch import stage_modules

    _require("onnx", "Exporting an ONNX graph (--onnx)")
    stages = bool(stage_modules(classifier))
    outputs = [*OUTPUTS, STAGES] if stages else list(OUTPUTS)
    graph = _Graph(classifier, stages).eval()
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, on purpose
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))
    return {"opset": ONNX_OPSET, "inputs": graph_inputs(image_size), "outputs": outputs}


class OnnxClassifier(nn.Module):
    """An ONNX graph behind the `features(x)` / `head(f)` interface that `inference.infer`
    calls, so ONNX Runtime and PyTorch share the batching, TTA and averaging code.

    `features` runs the whole graph (CPU, fp32) and keeps its logits (and the stages' pooled
    outputs, `last_stages`, when the graph gives them); `head` returns the logits.
    """

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        super().__init__()
        _require("onnxruntime", "Running an ONNX graph")
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such ONNX graph.")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        self._device = nn.Parameter(torch.zeros(0), requires_grad=False)  # infer's device
        self._logits: tuple[torch.Tensor, torch.Tensor] | None = None
        self.has_stages = STAGES in {o.name for o in self.session.get_outputs()}
        self.last_stages: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(x.cpu().numpy().astype(np.uint8, copy=False))
        names = [*OUTPUTS, STAGES] if self.has_stages else list(OUTPUTS)
        logits, features, *stages = self.session.run(names, {INPUT_NAME: pixels})
        features = torch.from_numpy(features)
        self._logits = (features, torch.from_numpy(logits))
        self.last_stages = torch.from_numpy(stages[0]) if stages else None
        return features

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self._logits is None or self._logits[0] is not features:
            raise RuntimeError("OnnxClassifier.head needs the features of its last features().")
        return self._logits[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
