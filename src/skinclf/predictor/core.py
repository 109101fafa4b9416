"""`Predictor`: the one model object. A training run, a `skinclf run` output folder, a cv folder
(its fold models) or an exported package loads as one `Predictor`: its members (averaged), their
preprocessing and inference settings, the logit offsets, and the selective classifier (policy)
with the feature statistics its OOD gate reads. `skinclf predict`, `skinclf.load`, the server and
export all go through it, so pixels become logits, scores and abstentions in one place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from skinclf.classes import CLASSES
from skinclf.config import RunConfig, read_config
from skinclf.contracts.cv_folder import CHECKPOINT, cv_runs, is_cv_folder
from skinclf.contracts.package_folder import MANIFEST_FILE, PackageFolder
from skinclf.contracts.run_folder import RunOutput, TrainingRun
from skinclf.contracts.score_registry import DEFAULT_SCORES
from skinclf.contracts.selective import REASON_MESSAGES, Selective, load_selective
from skinclf.errors import ConfigError, DataError
from skinclf.predictor.decisions import (
    abstain_decisions,
    combine_members,
    gate_feature_scores,
    gate_needs_stages,
    gate_stats,
    logit_scores,
    policy_note,
    selective_thresholds,
    with_offsets,
)
from skinclf.predictor.manifest import (
    Manifest,
    check_member,
    inside,
    is_package,
    package_offsets,
    package_selective,
    read_card,
    read_manifest,
)

RUNTIMES = ("torch", "onnx")
Kind = Literal["run", "job", "cv", "package", "ensemble"]


@dataclass
class Member:
    """One network of a model, with the folder it came from and how it predicts."""

    path: Path  # its run folder (a package's members/<i>/)
    model: Any  # a models.Classifier, or an OnnxClassifier
    cfg: RunConfig | None
    provenance: dict
    checkpoint: Path | None = None  # default: path/checkpoints/best.ckpt
    precision: str | None = None  # a package's recorded one (default: the config's)
    stats_path: Path | None = None  # a package's feature statistics

    @property
    def checkpoint_file(self) -> Path:
        return self.checkpoint or self.path / CHECKPOINT


@dataclass(frozen=True)
class Inference:
    """What the model decided for a batch of images."""

    logits: np.ndarray  # (N, C) after offsets; an ensemble's: log of the mean probabilities
    probs: np.ndarray  # (N, C)
    features: np.ndarray  # pooled features of the first member (then its stages' outputs)
    conf: dict[str, np.ndarray] = field(default_factory=dict)  # confidence scores
    abstain: np.ndarray | None = None  # None without a selective classifier
    reason: np.ndarray | None = None  # "", "unfamiliar", "uncertain"


def model_kind(path: Path | str) -> Kind:
    """What a model folder is: an exported package, a cv folder, a `skinclf run` output folder
    (`job`) or a training run folder; DataError naming what it lacks otherwise."""
    path = Path(path)
    if is_package(path):
        return "package"
    if is_cv_folder(path):
        return "cv"
    if (path / CHECKPOINT).is_file():
        return "run"
    job = RunOutput(path)
    if job.state.is_file() and job.run.path.is_dir():
        if job.run.best.is_file():
            return "job"
        raise DataError(
            f"{path} is a `skinclf run` output folder whose training has not finished (no "
            f"{job.run.best.relative_to(path)}); run the same `skinclf run` command again to "
            "finish it."
        )
    if not path.exists():
        raise DataError(f"{path} does not exist; give a model folder.")
    raise DataError(
        f"{path} is not a model: give a run folder (with {CHECKPOINT}), a `skinclf run` output "
        f"folder, a `skinclf cv` folder or a model package ({MANIFEST_FILE}) written by "
        "`skinclf export`."
    )


def load_run(run: Path | str) -> Member:
    """The best checkpoint of a run folder, rebuilt from the checkpoint alone, on the CPU."""
    from skinclf.models.classifier import load_classifier

    run = Path(run)
    ckpt = run / CHECKPOINT
    if not ckpt.is_file():
        raise DataError(f"{run} has no {CHECKPOINT}: is it a finished skinclf run?")
    cfg = read_config(TrainingRun(run).config)
    prov_path = TrainingRun(run).provenance
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    return Member(run, load_classifier(ckpt), cfg, prov)


def _package_members(path: Path, manifest: Manifest, runtime: str) -> list[Member]:
    """The members of a package: checkpoints (torch) or ONNX graphs, each with its run files."""
    from skinclf.models.classifier import load_classifier

    inference = manifest.inference
    stats = manifest.feature_stats
    stats_path = inside(path, stats, "statistics file") if stats else None
    onnx_files: list[str] = []
    if runtime == "onnx":
        onnx = manifest.onnx
        if onnx is None:
            raise DataError(f"{path} has no ONNX graph: export it with --onnx.")
        onnx_files = list(onnx.files or [onnx.file])
    members = []
    for i, name in enumerate(manifest.members):
        ckpt = inside(path, name, "member checkpoint")
        files = TrainingRun(ckpt.parent)  # a member's run files beside its checkpoint
        cfg = read_config(files.config) if files.config.is_file() else None
        if cfg is not None:  # the package's inference settings, for every member
            cfg.predict.tta = inference.tta
            cfg.predict.batch_size = inference.batch_size
        prov_path = files.provenance
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        if runtime == "onnx":
            from skinclf.onnx_export import OnnxClassifier

            model: Any = OnnxClassifier(inside(path, onnx_files[i], "ONNX graph"))
            precision = "32"
        else:
            model = load_classifier(ckpt, trusted=False)
            check_member(model.spec, manifest, ckpt)
            precision = inference.precision
        members.append(Member(files.path, model, cfg, prov, ckpt, precision, stats_path))
    return members


def own_policy(
    path: Path | str, kind: Kind | None = None, manifest: Manifest | None = None
) -> Path | None:
    """A model folder's own selective.json: a package's (its manifest's, when already read),
    else FOLDER/eval/selective.json when its evaluation wrote one; None otherwise."""
    path = Path(path)
    kind = kind or model_kind(path)
    if kind == "package":
        return package_selective(path, manifest)
    candidate = RunOutput(path).policy
    return candidate if candidate.is_file() else None


class Predictor:
    """A model ready to predict: members, preprocessing, logit offsets and selective classifier.

    Load one with `Predictor.from_path(path)` (a run folder, a `skinclf run` output folder, a cv
    folder or an exported package) or `skinclf.load(path)`. `predict(images)` returns one row per
    image; `predict_batch(pixels)` an `Inference` of preprocessed pixels.
    """

    def __init__(
        self,
        members: Sequence[Member],
        path: Path,
        kind: Kind,
        *,
        offsets: np.ndarray | None = None,
        policy_path: Path | None = None,
        manifest: Manifest | None = None,
        runtime: str = "torch",
    ) -> None:
        if not members:
            raise ConfigError("A model needs at least one member.")
        self.members = list(members)
        self.path = Path(path)
        self.kind = kind
        self.runtime = runtime
        self.manifest = manifest
        self.offsets = offsets
        self.policy_path = policy_path
        self.policy: Selective | None = load_selective(policy_path) if policy_path else None
        self.gate_stats = None  # read once at load: every request uses them, a bad file fails here
        if self.policy is not None and gate_feature_scores(self.policy):
            assert policy_path is not None
            self.gate_stats = gate_stats(self.policy, policy_path)
        self.stages = self.policy is not None and gate_needs_stages(self.policy)
        if self.stages and runtime == "onnx" and not self._graphs_have_stages():
            raise ConfigError(
                f"{self.path}: its OOD gate reads the backbone stages' outputs, which its ONNX "
                "graph does not give (exported by an older skinclf); export it again with "
                "--onnx, or use the torch runtime."
            )
        self.card: dict = read_card(PackageFolder(self.path).card) if kind == "package" else {}
        self._settings()

    def _settings(self) -> None:
        """Classes, preprocessing and inference settings: the manifest's, else the first
        member's (its checkpoint's spec and its run's config). `tta` and `batch_size` may be
        changed before predicting."""
        m, cfg = self.manifest, self.first.cfg
        self.precision = self.member_precision(self.first)
        if m is not None:
            self.classes = tuple(m.classes)
            self.image_size, self.resize = m.preprocessing.image_size, m.preprocessing.resize
            self.tta, self.batch_size = m.inference.tta, m.inference.batch_size
            return
        spec = self.first.model.spec
        self.classes = tuple(spec.classes) if getattr(spec, "classes", None) else tuple(CLASSES)
        self.image_size, self.resize = int(spec.image_size), str(spec.resize)
        self.tta = cfg.predict.tta if cfg is not None else "none"
        self.batch_size = cfg.predict.batch_size if cfg is not None else 64

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_path(
        cls,
        path: Path | str,
        runtime: str = "torch",
        policy: Path | str | None | Literal["auto"] = "auto",
    ) -> Predictor:
        """The model in `path`. `policy`: "auto" (its own selective.json: a package's, or
        FOLDER/eval/selective.json), a selective.json to apply, or None (never abstain)."""
        if runtime not in RUNTIMES:
            raise ConfigError(f"Unknown runtime {runtime!r}; use torch or onnx.")
        path = Path(path)
        kind = model_kind(path)
        if runtime == "onnx" and kind != "package":
            raise ConfigError(
                f"{path}: the onnx runtime reads an exported package; export it with "
                "`skinclf export --onnx` first, or use the torch runtime."
            )
        manifest = read_manifest(path) if kind == "package" else None
        members = cls._members(path, kind, manifest, runtime)
        policy_path = own_policy(path, kind, manifest) if policy == "auto" else policy
        offsets = cls._offsets(path, kind, manifest)
        return cls(
            members,
            path,
            kind,
            offsets=offsets,
            policy_path=Path(policy_path) if policy_path else None,
            manifest=manifest,
            runtime=runtime,
        )

    @classmethod
    def from_paths(
        cls, paths: Sequence[Path | str], policy: Path | str | None | Literal["auto"] = None
    ) -> Predictor:
        """Several model folders averaged as one ensemble (their own logit offsets are left out:
        fitted for one model, they do not fit the average); one folder: `from_path`."""
        if not paths:
            raise ConfigError("Give at least one model folder.")
        if len(paths) == 1:
            return cls.from_path(paths[0], policy=policy)
        members = []
        for p in paths:
            kind = model_kind(p)
            manifest = read_manifest(p) if kind == "package" else None
            members += cls._members(Path(p), kind, manifest, "torch")
        if policy == "auto":
            raise ConfigError("An average of several folders has no own policy; give one.")
        return cls(
            members, Path(paths[0]), "ensemble", policy_path=Path(policy) if policy else None
        )

    @staticmethod
    def _members(path: Path, kind: Kind, manifest: Manifest | None, runtime: str) -> list[Member]:
        if kind == "package":
            assert manifest is not None
            return _package_members(path, manifest, runtime)
        if kind == "cv":
            return [load_run(fold) for fold in cv_runs(path)]
        if kind == "job":
            return [load_run(RunOutput(path).run.path)]
        return [load_run(path)]

    @staticmethod
    def _offsets(path: Path, kind: Kind, manifest: Manifest | None) -> np.ndarray | None:
        if kind == "package":
            return package_offsets(path, manifest)
        from skinclf.scoring.offsets import OFFSETS_FILE, read_offsets

        file = path / OFFSETS_FILE
        return read_offsets(file) if kind == "cv" and file.is_file() else None

    def _graphs_have_stages(self) -> bool:
        return all(getattr(m.model, "has_stages", False) for m in self.members)

    # ------------------------------------------------------------------ what it is

    @property
    def first(self) -> Member:
        return self.members[0]

    @property
    def spec(self):  # -> ClassifierSpec (torch members) or None (ONNX)
        return getattr(self.first.model, "spec", None)

    @property
    def model_id(self) -> str:
        if self.manifest is not None:
            return self.manifest.model_id
        return self.path.resolve().name

    @property
    def skinclf_version(self) -> str:
        from skinclf import __version__

        return self.manifest.skinclf_version if self.manifest is not None else __version__

    @property
    def selective(self) -> Selective | None:
        """The policy (its name in skinclf 0.1's `skinclf.load`)."""
        return self.policy

    @property
    def selective_path(self) -> Path | None:
        return self.policy_path

    @property
    def thresholds(self) -> dict:
        """The thresholds of the selective classifier (OOD gate, confidence gate), or {}."""
        return selective_thresholds(self.policy)

    @property
    def policy_note(self) -> str:
        """One sentence when the policy cannot help a user: none at all, or one that abstains
        on every image; "" otherwise."""
        return policy_note(self.policy)

    def member_precision(self, member: Member) -> str:
        if member.precision:
            return member.precision
        from skinclf.inference.precision import resolve_precision

        assert member.cfg is not None
        return resolve_precision(member.cfg.trainer.precision, training=False)

    # ------------------------------------------------------------------ inference

    def infer(
        self,
        decoded: Sequence,
        image_ids: Sequence[str],
        *,
        tta: str | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        stages: bool = False,
        offsets: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits, probabilities, score features) of the images `image_ids` of `decoded` (one
        decoded image set per member, each with `.images` and `.rows(ids)`): the members
        combined, then the logit offsets added (`offsets` False: not). TTA, batch size and
        precision: the arguments, else the model's (`self.tta`, `self.batch_size`,
        `self.precision`; each folder's own in an average of several folders)."""
        from skinclf.inference.batch import InferenceSettings, infer

        results = []
        for member, images in zip(self.members, decoded, strict=True):
            cfg = member.cfg
            own = cfg is not None and self.kind == "ensemble"  # folders averaged: each its own
            results.append(
                infer(
                    member.model,
                    images.images,
                    images.rows(image_ids),
                    InferenceSettings(
                        tta=tta or (cfg.predict.tta if own else self.tta),
                        precision=self.member_precision(member) if own else self.precision,
                        batch_size=batch_size
                        or (cfg.predict.batch_size if own else self.batch_size),
                    ),
                    progress=progress,
                    description=f"predict {member.path.name}",
                    stages=stages or self.stages,
                )
            )
        logits, probs, feats = combine_members(results)
        if offsets:  # before the scores, which then follow the shifted decision
            logits, probs = with_offsets(logits, probs, self.offsets)
        return logits, probs, feats

    def scores(
        self, requested: Sequence[str], logits: np.ndarray, tta: str | None = None
    ) -> dict[str, np.ndarray]:
        """The requested logit scores (with `tta` / `ensemble` where they apply)."""
        return logit_scores(requested, logits, tta or self.tta, len(self.members))

    def decide(
        self,
        requested: Sequence[str],
        logits: np.ndarray,
        feats: np.ndarray,
        conf: dict[str, np.ndarray],
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(abstain, abstain_reason) of the policy (adding its scores to `conf`); an exported
        model without one abstains on nothing (it always says whether it abstains); (None, None)
        for a folder without one."""
        if self.policy is not None:
            assert self.policy_path is not None
            return abstain_decisions(
                self.policy, self.policy_path, requested, logits, feats, conf, self.gate_stats
            )
        if self.kind == "package":
            return np.zeros(len(logits), bool), np.full(len(logits), "", dtype=object)
        return None, None

    def predict_batch(
        self, pixels: np.ndarray, scores: Sequence[str] = DEFAULT_SCORES
    ) -> Inference:
        """The `Inference` of preprocessed images (N, S, S, 3) uint8 (`preprocess`)."""
        batch = _Pixels(np.asarray(pixels))
        ids = [str(i) for i in range(len(pixels))]
        logits, probs, feats = self.infer([batch] * len(self.members), ids)
        conf = self.scores(scores, logits)
        abstain, reason = self.decide(scores, logits, feats, conf)
        if abstain is None:
            n = len(pixels)
            abstain, reason = np.zeros(n, bool), np.full(n, "", dtype=object)
        return Inference(logits, probs, feats, conf, abstain, reason)

    # ------------------------------------------------------------------ the API

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
        out = self.predict_batch(pixels)
        note = self.policy_note
        rows = []
        for i in range(len(pixels)):
            reason = str(out.reason[i]) if out.reason is not None else ""
            message = REASON_MESSAGES.get(reason, "")
            if note and not (reason and self.policy is not None):
                message = note  # never "confident enough" from a model that cannot abstain
            rows.append(
                {
                    "image": str(names[i]),
                    "top_class": self.classes[int(np.argmax(out.probs[i]))],
                    "probabilities": {
                        c: float(p) for c, p in zip(self.classes, out.probs[i], strict=True)
                    },
                    "scores": {k: float(v[i]) for k, v in out.conf.items()},
                    "abstain": bool(out.abstain[i]) if out.abstain is not None else False,
                    "abstain_reason": reason,
                    "message": message,
                    "model_id": self.model_id,
                    "skinclf_version": self.skinclf_version,
                }
            )
        return rows

    def save(self, model_dir: Path | str, onnx: bool = False) -> Manifest:
        """Export this model as a package in `model_dir` (`skinclf export`); the manifest."""
        from skinclf.predictor.export import export_model

        if self.kind == "package":
            raise ConfigError(f"{self.path} is already a package; copy the folder instead.")
        if self.kind == "ensemble":
            raise ConfigError("Export one folder (a run, a `skinclf run` output or a cv).")
        return export_model(self.path, model_dir, onnx=onnx, selective=self.policy_path)


@dataclass(frozen=True)
class _Pixels:
    """Preprocessed images in row order (what `infer` reads from a decode cache)."""

    images: np.ndarray

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        return np.arange(len(image_ids))


def _image_name(image: object, i: int) -> str:
    return Path(image).name if isinstance(image, str | Path) else f"image-{i}"


def load(model_dir: Path | str, runtime: str = "torch") -> Predictor:
    """The model in MODEL_DIR (an exported package, a run, a `skinclf run` output folder or a cv
    folder), with its own selective classifier, ready to `predict` images."""
    return Predictor.from_path(model_dir, runtime)
