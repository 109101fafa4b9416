"""An exported model (MODEL_DIR, written by `skinclf export`) and the Python API that uses it.

`load(MODEL_DIR)` reads the manifest (`skinclf-model.json`, checked for its format and version),
the member classifiers (one per run; a fold ensemble averages their probabilities), the
selective classifier and the model card. `Model.predict(images)` decodes and resizes each
image with the code of `skinclf predict` (`data.cache.decode_image`), runs the one inference
path (`inference.infer`, with the recorded TTA and precision), and returns one row per image:
probabilities, confidence scores, and whether and why the model abstains. The functions that
turn logits into scores and abstentions are shared with `skinclf predict`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skinclf import __version__
from skinclf.classes import CLASSES
from skinclf.errors import ConfigError, DataError

PACKAGE_FORMAT = "skinclf-model"
PACKAGE_FORMAT_VERSION = 2  # 2: may carry logit offsets (manifest key "logit_offsets")
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_FILE = "skinclf-model.json"
CARD_FILE = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
SELECTIVE_FILE = "selective.json"
FEATURE_STATS_FILE = "feature_stats.npz"  # in a run folder: fitted on its training split
LOGIT_SCORES = ("msp", "max_logit", "margin", "neg_entropy", "doctor")  # predict's default
RUNTIMES = ("torch", "onnx")


def format_version(offsets: str | None) -> int:
    """The manifest's format version: the lowest that describes the package. 1 unless it carries
    logit offsets, so an older skinclf reads the packages it predicts correctly and refuses, in
    one sentence, those it would predict without their offsets."""
    return PACKAGE_FORMAT_VERSION if offsets else 1


def is_package(path: Path | str) -> bool:
    """Whether `path` is an exported model folder (it holds the manifest)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def read_manifest(model_dir: Path | str) -> dict:
    """The manifest of MODEL_DIR; DataError in one sentence for a missing, damaged or foreign
    one, or one of another format version."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise DataError(
            f"{model_dir} has no {MANIFEST_FILE}: is it a model folder written by `skinclf export`?"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as a UTF-8 JSON file ({exc}).") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    readable_version = type(version) is int and version in READABLE_FORMAT_VERSIONS
    if found != PACKAGE_FORMAT or not readable_version:
        readable = " or ".join(map(str, READABLE_FORMAT_VERSIONS))
        newer = (
            found == PACKAGE_FORMAT
            and type(version) is int
            and version > max(READABLE_FORMAT_VERSIONS)
        )
        advice = "upgrade skinclf" if newer else "export the model again with this version"
        raise DataError(
            f"{path} is {found!r} format version {version}, but this skinclf ({__version__}) "
            f"reads {PACKAGE_FORMAT!r} format version {readable}; {advice}."
        )
    if tuple(manifest.get("classes", ())) != tuple(CLASSES):
        raise DataError(f"{path}: its classes {manifest.get('classes')} are not {list(CLASSES)}.")
    missing = [k for k in REQUIRED_KEYS if not manifest.get(k)]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; export the model again.")
    return manifest


REQUIRED_KEYS = ("model_id", "skinclf_version", "preprocessing", "inference", "members")


def check_member(spec, manifest: dict, where: Path) -> None:
    """DataError unless a member's own spec has the manifest's classes and preprocessing (a
    package never predicts with pixels or a class order other than its checkpoints')."""
    pre = manifest["preprocessing"]
    theirs = (tuple(spec.classes), spec.image_size, spec.resize)
    ours = (tuple(manifest["classes"]), int(pre["image_size"]), pre["resize"])
    if theirs != ours:
        raise DataError(
            f"{where}: its classes/size/resize {theirs} differ from the manifest's {ours}; "
            "export the model again."
        )


def package_selective(model_dir: Path | str) -> Path | None:
    """MODEL_DIR's selective.json, or None when it was exported without one."""
    name = read_manifest(model_dir).get("selective")
    return Path(model_dir) / name if name else None


def package_offsets(model_dir: Path | str, manifest: dict | None = None) -> np.ndarray | None:
    """MODEL_DIR's per-class logit offsets (a cross-validation's), or None without them;
    `manifest`: its manifest when already read."""
    from skinclf.evaluate.offsets import read_offsets

    name = (manifest or read_manifest(model_dir)).get("logit_offsets")
    return read_offsets(Path(model_dir) / name) if name else None


def with_offsets(
    logits: np.ndarray, probs: np.ndarray, offsets: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits + offsets, their softmax): the decision the offsets move, before any score;
    unchanged without offsets."""
    if offsets is None:
        return logits, probs
    from skinclf.contracts.predictions import softmax
    from skinclf.evaluate.offsets import apply_offsets

    shifted = apply_offsets(logits, offsets)
    return shifted, softmax(shifted)


# ------------------------------------------------------------ logits -> scores -> abstention


def combine_members(results: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, probabilities, score features of the first member: its pooled features, then
    its stages' pooled outputs when taken) of the members' `Inference`s; an ensemble averages
    probabilities and its logits are the log of the mean probabilities."""
    from skinclf.contracts.predictions import softmax

    probs = np.mean([softmax(r.logits) for r in results], axis=0)
    first = results[0]
    logits = np.log(np.clip(probs, 1e-12, None)) if len(results) > 1 else first.logits
    return logits, probs, first.score_features


def logit_scores(
    requested: Sequence[str], logits: np.ndarray, tta: str, n_members: int
) -> dict[str, np.ndarray]:
    """The requested logit scores, plus `tta` under D4 TTA and `ensemble` for an ensemble
    (both the MSP of the averaged probabilities)."""
    from skinclf.contracts.scores import SCORES

    conf = {name: SCORES[name](logits) for name in requested if name in SCORES}
    if "tta" in requested or tta == "d4":
        conf["tta"] = SCORES["msp"](logits)
    if n_members > 1:
        conf["ensemble"] = SCORES["msp"](logits)
    return conf


def gate_values(sel, selective: Path, feats: np.ndarray, stats=None) -> dict[str, np.ndarray]:
    """The OOD gate's feature-score components, from `stats` (a loaded `FeatureStats`) or the
    statistics beside selective.json."""
    names = gate_feature_scores(sel)
    if not names:
        return {}
    if stats is not None:
        return stats.scores(feats, names)
    return gate_stats(sel, selective).scores(feats, names)


def gate_feature_scores(sel) -> tuple[str, ...]:
    """The feature scores among the OOD gate's components (none without a gate)."""
    from skinclf.evaluate.feature_scores import FEATURE_SCORES

    gate = sel.gate
    return tuple(c for c in gate.components if c in FEATURE_SCORES) if gate else ()


def gate_needs_stages(sel) -> bool:
    """Whether the OOD gate uses a stage score (inference must take the stages' outputs)."""
    from skinclf.evaluate.feature_scores import STAGE_SCORES

    return any(c in STAGE_SCORES for c in gate_feature_scores(sel))


def gate_stats(sel, selective: Path):  # -> FeatureStats
    """The feature statistics the OOD gate of `selective` names; DataError when missing."""
    gate = sel.gate
    names = gate_feature_scores(sel)
    if not gate.stats_file:
        raise DataError(f"{selective}: its OOD gate uses {names[0]} but names no stats file.")
    stats_path = Path(selective).parent / gate.stats_file
    if not stats_path.is_file():
        raise DataError(
            f"{stats_path} is missing: selective.json's OOD gate needs the feature statistics "
            "that `skinclf evaluate --gate-stats` writes beside it."
        )
    return _load_stats(str(stats_path), stats_path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_stats(path: str, mtime_ns: int):  # -> FeatureStats
    """The feature statistics at `path`, read once per version of the file (a server predicts
    many requests with the same, often large, statistics)."""
    from skinclf.evaluate.feature_scores import FeatureStats

    return FeatureStats.load(path)


def abstain_decisions(
    sel,
    selective: Path,
    requested: Sequence[str],
    logits: np.ndarray,
    feats: np.ndarray,
    conf: dict[str, np.ndarray],
    stats=None,
) -> tuple[np.ndarray, np.ndarray]:
    """(abstain, abstain_reason) of the stored selective classifier; adds its scores to conf.
    `stats`: the gate's feature statistics, when already loaded."""
    from skinclf.contracts.scores import msp_ts
    from skinclf.contracts.selective import apply_policy

    if "msp_ts" in requested:
        if sel.temperature is None:
            raise ConfigError(
                f"msp_ts needs a temperature, but {selective} has none: it was fitted "
                "without --val; run `skinclf evaluate` with --val."
            )
        conf["msp_ts"] = msp_ts(logits, sel.temperature)
    values = gate_values(sel, selective, feats, stats)
    score_values, abstain, reason = apply_policy(sel, logits, values)
    conf.setdefault(sel["score"], score_values)
    for name, component in values.items():
        conf.setdefault(name, component)
    return abstain, reason


def selective_thresholds(sel) -> dict:
    """The thresholds of a selective classifier (OOD gate, confidence gate), or {}."""
    if sel is None:
        return {}
    out: dict = {
        "confidence": {
            "gate": sel.confidence_gate,
            "score": sel.score,
            "temperature": sel.temperature,
            "threshold": sel.threshold,
            "target_risk": sel.target_risk,
            "target_coverage": sel.target_coverage,
            "fitted_on": sel.fitted_on,
        }
    }
    gate = sel.gate
    if gate is not None:
        keys = ("score", "threshold", "id_keep", "id_kept", "fitted_on", "n", "chosen_by")
        out["ood"] = {k: getattr(gate, k) for k in keys}
    return out


# ------------------------------------------------------------ the API


def _image_name(image: object, i: int) -> str:
    return Path(image).name if isinstance(image, str | Path) else f"image-{i}"


class Model:
    """An exported model, ready to predict images (`skinclf.load(MODEL_DIR)`).

    `runtime`: "torch" (the member checkpoints) or "onnx" (model.onnx through ONNX Runtime,
    fp32, with the same preprocessing, TTA and averaging code outside the graph).
    """

    def __init__(self, model_dir: Path | str, runtime: str = "torch") -> None:
        from skinclf.contracts.selective import load_selective

        if runtime not in RUNTIMES:
            raise ConfigError(f"Unknown runtime {runtime!r}; use torch or onnx.")
        self.path = Path(model_dir)
        self.manifest: dict = read_manifest(self.path)
        m = self.manifest
        self.model_id: str = m["model_id"]
        self.skinclf_version: str = m["skinclf_version"]
        self.classes: tuple[str, ...] = tuple(m["classes"])
        self.image_size: int = int(m["preprocessing"]["image_size"])
        self.resize: str = m["preprocessing"]["resize"]
        self.tta: str = m["inference"]["tta"]
        self.batch_size: int = int(m["inference"]["batch_size"])
        self.precision: str = m["inference"]["precision"] if runtime == "torch" else "32"
        self.runtime = runtime
        self.card: dict = _read_card(self.path / CARD_FILE)
        self.selective_path = package_selective(self.path)
        self.selective = load_selective(self.selective_path) if self.selective_path else None
        self.thresholds: dict = selective_thresholds(self.selective)
        # read once at load: every request then uses these, and a missing file fails here
        self.gate_stats = (
            gate_stats(self.selective, self.selective_path)
            if self.selective is not None and gate_feature_scores(self.selective)
            else None
        )
        self.stages = self.selective is not None and gate_needs_stages(self.selective)
        if self.stages and runtime == "onnx":
            raise ConfigError(
                f"{self.path}: its OOD gate reads the backbone stages' outputs, which the ONNX "
                "graph does not give; use the torch runtime."
            )
        self.members = self._members()
        self.offsets = package_offsets(self.path, self.manifest)

    def _members(self) -> list:
        if self.runtime == "onnx":
            from skinclf.onnx_export import OnnxClassifier

            onnx = self.manifest.get("onnx")
            if not onnx:
                raise DataError(f"{self.path} has no ONNX graph: export it with --onnx.")
            return [OnnxClassifier(self.path / f) for f in onnx.get("files", [onnx["file"]])]
        from skinclf.models.classifier import load_classifier

        members = []
        for member in self.manifest["members"]:
            classifier = load_classifier(self.path / member, trusted=False)
            check_member(classifier.spec, self.manifest, self.path / member)
            members.append(classifier)
        return members

    def preprocess(
        self, image: object, name: str | None = None, max_pixels: int | None = None
    ) -> np.ndarray:
        """(S, S, 3) uint8 pixels of a path, the file's bytes, a Pillow image or a uint8 array:
        the decode and resize of `skinclf predict`. ImageError (a DataError) in one sentence
        for an unreadable, truncated or oversized image (`max_pixels`: the largest accepted,
        default the package-wide limit)."""
        from skinclf.data.cache import decode_image

        return decode_image(
            image, self.image_size, self.resize, name or "the uploaded file", max_pixels
        )

    def infer(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, probabilities, features) of preprocessed images (N, S, S, 3) uint8."""
        from skinclf.inference.batch import infer

        rows = np.arange(len(pixels))
        results = [
            infer(
                member,
                pixels,
                rows,
                self.tta,
                self.precision,
                self.batch_size,
                progress=False,
                stages=self.stages,
            )
            for member in self.members
        ]
        logits, probs, feats = combine_members(results)
        return (*with_offsets(logits, probs, self.offsets), feats)  # before the scores

    def predict(self, images: Sequence, names: Sequence[str] | None = None) -> list[dict]:
        """One row per image (paths, bytes, Pillow images or uint8 arrays): top class,
        probabilities in class order, confidence scores, abstain and its reason and message."""
        images = list(images)
        names = [_image_name(im, i) for i, im in enumerate(images)] if names is None else names
        if len(names) != len(images):
            raise ConfigError(f"Got {len(images)} images but {len(names)} names.")
        if not images:
            return []
        pixels = np.stack(
            [self.preprocess(im, str(n)) for im, n in zip(images, names, strict=True)]
        )
        return self.predict_pixels(pixels, names)

    def predict_pixels(self, pixels: np.ndarray, names: Sequence[str]) -> list[dict]:
        """The rows of `predict` for images already through `preprocess` (N, S, S, 3) uint8."""
        from skinclf.contracts.selective import REASON_MESSAGES

        logits, probs, feats = self.infer(pixels)
        n = len(pixels)
        conf = logit_scores(LOGIT_SCORES, logits, self.tta, len(self.members))
        abstain, reason = np.zeros(n, bool), np.full(n, "", dtype=object)
        if self.selective is not None:
            abstain, reason = abstain_decisions(
                self.selective,
                self.selective_path,
                LOGIT_SCORES,
                logits,
                feats,
                conf,
                self.gate_stats,
            )
        return [
            {
                "image": str(names[i]),
                "top_class": self.classes[int(np.argmax(probs[i]))],
                "probabilities": {c: float(p) for c, p in zip(self.classes, probs[i], strict=True)},
                "scores": {k: float(v[i]) for k, v in conf.items()},
                "abstain": bool(abstain[i]),
                "abstain_reason": str(reason[i]),
                "message": REASON_MESSAGES.get(str(reason[i]), ""),
                "model_id": self.model_id,
                "skinclf_version": self.skinclf_version,
            }
            for i in range(n)
        ]


def _read_card(path: Path) -> dict:
    """model_card.json, or {} when the package has none; DataError when it is damaged."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: is not a readable JSON model card ({exc}).") from None


def load(model_dir: Path | str, runtime: str = "torch") -> Model:
    """The exported model in MODEL_DIR (`skinclf export`), ready to `predict` images."""
    return Model(model_dir, runtime)
