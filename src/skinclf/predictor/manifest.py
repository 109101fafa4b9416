"""The model package's manifest (`skinclf-model.json`), read through a schema.

`read_manifest` returns the `Manifest` model: every key predict, serve and export read is
declared on it (others are kept as they are), and export writes the manifest from one
(`Manifest.to_json`). Every file a package names (members, policy, statistics, offsets, ONNX
graphs) must lie inside the package folder; a manifest that names `../other/...` or an absolute
path is refused. Each failure is one sentence naming the file and what to do. The folder's file
names are `skinclf.contracts.package_folder.PackageFolder`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skinclf import __version__
from skinclf.classes import CLASSES
from skinclf.contracts.package_folder import MANIFEST_FILE, PackageFolder
from skinclf.errors import DataError, first_schema_error

PACKAGE_FORMAT = "skinclf-model"
PACKAGE_FORMAT_VERSION = 2  # 2: may carry logit offsets (manifest key "logit_offsets")
READABLE_FORMAT_VERSIONS = (1, 2)
REQUIRED_KEYS = ("model_id", "skinclf_version", "preprocessing", "inference", "members")


class Normalisation(BaseModel):
    """The pixel normalisation (done inside the model: it takes uint8 pixels)."""

    model_config = ConfigDict(extra="allow")
    mean: list[float]
    std: list[float]
    inside_model: bool


class Preprocessing(BaseModel):
    model_config = ConfigDict(extra="allow")
    image_size: int = Field(gt=0)
    resize: Literal["squash", "center-crop"]
    colour: str | None = None
    decoder: str | None = None
    normalisation: Normalisation | None = None


class InferenceSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    precision: Literal["32", "bf16-mixed", "16-mixed"]
    tta: Literal["none", "d4"]
    batch_size: int = Field(gt=0)


class OnnxEntry(BaseModel):
    """The ONNX graphs: `file` (the first member's), `files` (one per member), and the graph's
    opset, inputs and outputs (`skinclf.onnx_export.export_onnx`)."""

    model_config = ConfigDict(extra="allow")
    file: str
    files: list[str] | None = None
    opset: int | None = None
    inputs: dict[str, Any] | None = None
    outputs: list[str] | None = None


class CardFiles(BaseModel):
    """The model card's files (manifest key "card": "json" and "markdown")."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    json_file: str = Field(alias="json")
    markdown: str


class Manifest(BaseModel):
    """The manifest: the keys predict, serve and export read, declared in the order export
    writes them; others are kept as they are (after these when written)."""

    model_config = ConfigDict(extra="allow")
    format: str
    format_version: int
    model_id: str = Field(min_length=1)
    skinclf_version: str = Field(min_length=1)
    classes: list[str]
    preprocessing: Preprocessing
    members: list[str] = Field(min_length=1)
    ensemble: str | None = None  # how members are combined ("mean probabilities"), None for one
    logit_offsets: str | None = None
    inference: InferenceSpec
    selective: str | None = None
    feature_stats: str | None = None
    onnx: OnnxEntry | None = None
    card: CardFiles | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)  # the first run's, and the export's

    def files(self) -> list[str]:
        """Every file of the package the manifest names."""
        named = [*self.members, self.selective, self.feature_stats, self.logit_offsets]
        if self.onnx is not None:
            named += [self.onnx.file, *(self.onnx.files or [])]
        return [n for n in named if n]

    def to_json(self) -> str:
        """The manifest file's text: the keys given, in the order declared, then the others."""
        return json.dumps(self.model_dump(by_alias=True, exclude_unset=True), indent=2) + "\n"


def format_version(offsets: str | None) -> int:
    """The manifest's format version: the lowest that describes the package. 1 unless it carries
    logit offsets, so an older skinclf reads the packages it predicts correctly and refuses, in
    one sentence, those it would predict without their offsets."""
    return PACKAGE_FORMAT_VERSION if offsets else 1


def is_package(path: Path | str) -> bool:
    """Whether `path` is an exported model folder (it holds the manifest)."""
    return PackageFolder(Path(path)).manifest.is_file()


def inside(model_dir: Path | str, name: str, what: str = "file") -> Path:
    """MODEL_DIR/name, refused in one sentence when `name` leads outside MODEL_DIR."""
    root = Path(model_dir).resolve()
    target = (root / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(root):
        manifest = PackageFolder(Path(model_dir)).manifest
        raise DataError(
            f"{manifest} names the {what} {name!r}, which is outside the "
            "package folder; a package only reads its own files: export the model again."
        )
    return Path(model_dir) / name


def _read_json(path: Path, model_dir: Path | str) -> object:
    if not path.is_file():
        raise DataError(
            f"{model_dir} has no {MANIFEST_FILE}: is it a model folder written by `skinclf export`?"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as a UTF-8 JSON file ({exc}).") from None


def _check_format(manifest: object, path: Path) -> None:
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


def read_manifest(model_dir: Path | str) -> Manifest:
    """The manifest of MODEL_DIR, checked against its schema; DataError in one sentence for a
    missing, damaged or foreign one, one of another format version, one with a wrong value,
    or one that names a file outside MODEL_DIR."""
    path = PackageFolder(Path(model_dir)).manifest
    manifest = _read_json(path, model_dir)
    _check_format(manifest, path)
    assert isinstance(manifest, dict)
    if tuple(manifest.get("classes", ())) != tuple(CLASSES):
        raise DataError(f"{path}: its classes {manifest.get('classes')} are not {list(CLASSES)}.")
    missing = [k for k in REQUIRED_KEYS if not manifest.get(k)]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; export the model again.")
    try:
        parsed = Manifest.model_validate(manifest)
    except ValidationError as exc:
        raise DataError(f"{path}: {first_schema_error(exc)}; export the model again.") from None
    for name in parsed.files():
        inside(model_dir, name)
    return parsed


def check_member(spec, manifest: Manifest, where: Path) -> None:
    """DataError unless a member's own spec has the manifest's classes and preprocessing (a
    package never predicts with pixels or a class order other than its checkpoints')."""
    pre = manifest.preprocessing
    theirs = (tuple(spec.classes), spec.image_size, spec.resize)
    ours = (tuple(manifest.classes), pre.image_size, pre.resize)
    if theirs != ours:
        raise DataError(
            f"{where}: its classes/size/resize {theirs} differ from the manifest's {ours}; "
            "export the model again."
        )


def _read(model_dir: Path | str, manifest: Manifest | None) -> Manifest:
    return manifest if manifest is not None else read_manifest(model_dir)


def package_selective(model_dir: Path | str, manifest: Manifest | None = None) -> Path | None:
    """MODEL_DIR's selective.json, or None when it was exported without one; `manifest`: its
    manifest when already read."""
    name = _read(model_dir, manifest).selective
    return inside(model_dir, name, "policy file") if name else None


def package_offsets(
    model_dir: Path | str, manifest: Manifest | None = None
):  # -> np.ndarray | None
    """MODEL_DIR's per-class logit offsets (a cross-validation's), or None without them;
    `manifest`: its manifest when already read."""
    from skinclf.scoring.offsets import read_offsets

    name = _read(model_dir, manifest).logit_offsets
    return read_offsets(inside(model_dir, name, "offsets file")) if name else None


def read_card(path: Path) -> dict:
    """model_card.json, or {} when the package has none; DataError when it is damaged."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: is not a readable JSON model card ({exc}).") from None
