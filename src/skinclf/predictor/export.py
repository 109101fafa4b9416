"""`skinclf export`: a trained run, or a cross-validation folder of runs (`CV_DIR/fold_*/`, a
fold ensemble), as one self-contained model folder that `skinclf predict`, `skinclf.load` and
the server read (the layout is the manifest's, `skinclf.predictor.manifest`).

MODEL_DIR holds skinclf-model.json; members/<i>/ (classifier.ckpt with its ClassifierSpec, and
the run's config.yaml, split.csv and provenance.json); selective.json from the run's
evaluation with the feature statistics its OOD gate needs (feature_stats.npz, also used by
`predict --scores mahalanobis,...`); a cross-validation folder's per-class logit offsets
(logit_offsets.json, added to the ensemble's logits before anything else, as `skinclf predict`
adds them to the cv's); MODEL_CARD.md and model_card.json; model.onnx with --onnx.
The folder is written beside MODEL_DIR and renamed into place when complete; its file names are
`PackageFolder`'s (skinclf.contracts.package_folder), its manifest a `Manifest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from skinclf import __version__
from skinclf.config import read_config
from skinclf.contracts.cv_folder import CHECKPOINT, cv_runs, fold_folders, member_cvs
from skinclf.contracts.package_folder import PackageFolder
from skinclf.contracts.run_folder import METRICS_FILE, RunOutput, TrainingRun
from skinclf.errors import ConfigError, DataError
from skinclf.predictor.decisions import selective_thresholds
from skinclf.predictor.manifest import (
    PACKAGE_FORMAT,
    CardFiles,
    InferenceSpec,
    Manifest,
    Normalisation,
    OnnxEntry,
    Preprocessing,
    format_version,
    is_package,
)

COLOUR = "RGB, EXIF-rotated, alpha on white"
DECODER = (
    "skinclf.data.cache.decode_image: Pillow decode (JPEG at a reduced DCT scale still >= the "
    "size), then a bicubic antialiased resize; resize squash: the whole image, center-crop: the "
    "centred square"
)


def source_runs(source: Path | str) -> list[Path]:
    """The run folder `source`, the training run of a `skinclf run` output folder, the fold_*
    run folders of a cross-validation folder, or every member cv's fold runs of a
    `skinclf cv-ensemble` folder. DataError for anything else, naming what it is not."""
    from skinclf.predictor.core import model_kind

    source = Path(source)
    if not (source / CHECKPOINT).is_file() and (fold_folders(source) or member_cvs(source)):
        return cv_runs(source)  # (folds.csv or not: a fold that is not trained is named)
    kind = model_kind(source)
    if kind == "package":
        raise ConfigError(f"{source} is already an exported model; copy the folder instead.")
    if kind == "job":
        return [RunOutput(source).run.path]
    if kind == "run":
        return [source]
    return cv_runs(source)


def _check_out(out: Path, runs: Sequence[Path]) -> None:
    """ConfigError for an output folder that would overwrite something else than a model."""
    if any(out.resolve() == r.resolve() for r in runs):
        raise ConfigError(f"--out {out} is the run folder itself; give a new folder.")
    if out.exists() and not (out.is_dir() and (is_package(out) or not any(out.iterdir()))):
        raise ConfigError(
            f"{out} exists and is not an exported model folder; give a new or empty folder."
        )


def _check_members(models: Sequence, runs: Sequence[Path]) -> None:
    """DataError when the folds of an ensemble do not share classes and preprocessing."""
    first = models[0].spec
    keys = ("classes", "image_size", "resize")
    for run, model in zip(runs[1:], models[1:], strict=True):
        differs = [k for k in keys if getattr(model.spec, k) != getattr(first, k)]
        if differs:
            raise DataError(
                f"{run} has another {differs[0]} ({getattr(model.spec, differs[0])}) than "
                f"{runs[0]} ({getattr(first, differs[0])}): the members of one model must "
                "share classes and preprocessing."
            )


def _weights_id(models: Sequence) -> str:
    """12 hex digits of the sha256 of every member's weights (names and bytes)."""
    import torch

    h = hashlib.sha256()
    for model in models:
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return h.hexdigest()[:12]


def _write_member(run: Path, model, package: PackageFolder, i: int) -> None:
    """members/<i>/: the classifier checkpoint load_classifier reads, and the run's files."""
    import torch

    from skinclf.models.classifier import SPEC_KEY

    package.member(i).mkdir(parents=True)
    state = {"state_dict": model.state_dict(), "hyper_parameters": {SPEC_KEY: model.spec.to_dict()}}
    torch.save(state, package.member_checkpoint(i))
    theirs, ours = TrainingRun(run), TrainingRun(package.member(i))
    for src, dst in (
        (theirs.config, ours.config),
        (theirs.split, ours.split),
        (theirs.provenance, ours.provenance),
    ):
        if src.is_file():
            shutil.copy2(src, dst)


def _recorded_precision(run: Path) -> str:
    """The inference precision the run recorded (metrics.json, else provenance.json), else its
    config's, resolved on this machine."""
    files = TrainingRun(run)
    for path, keys in ((files.metrics, ("inference_precision",)), (files.provenance, ())):
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        value = data.get(keys[0]) if keys else (data.get("precision") or {}).get("inference")
        if value:
            return str(value)
    from skinclf.inference.precision import resolve_precision

    return resolve_precision(read_config(files.config).trainer.precision, training=False)


def _statistics(runs: Sequence[Path], sel_path: Path | None, package: PackageFolder) -> str | None:
    """feature_stats.npz: the OOD gate's statistics, else the first run's fresh ones, carrying
    the fingerprint of the member checkpoint; None when there are none."""
    from skinclf.contracts.selective import load_selective
    from skinclf.models.classifier import checkpoint_fingerprint
    from skinclf.scoring.feature_scores import FeatureStats

    gate = load_selective(sel_path).gate if sel_path else None
    run = TrainingRun(runs[0])
    source = run.feature_stats
    if gate is not None and gate.stats_file:
        source = sel_path.parent / gate.stats_file
        if not source.is_file():
            raise DataError(f"{source} is missing: {sel_path}'s OOD gate needs it.")
    elif not source.is_file():
        return None
    stats = FeatureStats.load(source)
    fresh = stats.fingerprint == checkpoint_fingerprint(run.best)
    if not fresh and source.parent == runs[0]:
        return None  # fitted for an older checkpoint of the run
    if fresh:
        member = package.member_checkpoint(0)
        stats = dataclasses.replace(stats, fingerprint=checkpoint_fingerprint(member))
    stats.save(package.feature_stats)
    return package.name(package.feature_stats)


def _copy_selective(sel_path: Path, package: PackageFolder, stats: str | None) -> str:
    """selective.json as evaluated, its OOD gate pointing at the package's statistics."""
    data = json.loads(sel_path.read_text())
    if data.get("ood_gate") and data["ood_gate"].get("stats_file") and stats:
        data["ood_gate"]["stats_file"] = stats
    package.policy.write_text(json.dumps(data, indent=2) + "\n")
    return package.name(package.policy)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _evaluation(source: Path, sel_path: Path | None) -> tuple[dict | None, str]:
    """The evaluation's metrics.json (beside selective.json, else SOURCE/eval/) and its path."""
    candidates = ([sel_path.parent / METRICS_FILE] if sel_path else []) + [
        RunOutput(source).metrics
    ]
    for path in candidates:
        data = _read_json(path)
        if data is not None:
            return data, str(path)
    return None, ""


def _onnx(models: Sequence, package: PackageFolder, image_size: int) -> OnnxEntry:
    """model.onnx (members/<i>/model.onnx for an ensemble) and the manifest's `onnx` entry."""
    from skinclf.onnx_export import export_onnx

    paths = (
        [package.onnx] if len(models) == 1 else [package.member_onnx(i) for i in range(len(models))]
    )
    entry: dict = {}
    for model, path in zip(models, paths, strict=True):
        entry = export_onnx(model, path, image_size)
    files = [package.name(p) for p in paths]
    return OnnxEntry(file=files[0], files=files, **entry)


def _provenance(runs: Sequence[Path], source: Path) -> dict:
    prov = _read_json(TrainingRun(runs[0]).provenance) or {}
    return {
        **prov,
        "run": source.name,
        "runs": [r.name for r in runs] if len(runs) > 1 else [source.name],
        "source": str(source.resolve()),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _copy_offsets(source: Path, package: PackageFolder) -> str | None:
    """SOURCE's logit_offsets.json (a cross-validation folder's), checked, or None."""
    from skinclf.scoring.offsets import OFFSETS_FILE, read_offsets

    if not (source / OFFSETS_FILE).is_file():
        return None
    read_offsets(source / OFFSETS_FILE)  # a damaged one: DataError before the package exists
    target = package.path / OFFSETS_FILE
    shutil.copy2(source / OFFSETS_FILE, target)
    return package.name(target)


def _manifest(
    models: Sequence,
    runs: Sequence[Path],
    source: Path,
    selective: str | None,
    stats: str | None,
    onnx: OnnxEntry | None,
    precision: str,
    offsets: str | None,
) -> Manifest:
    """The package's manifest (its members named as `PackageFolder` places them)."""
    spec, cfg = models[0].spec, read_config(TrainingRun(runs[0]).config)
    names = PackageFolder(Path())  # the files inside a package, as the manifest names them
    return Manifest(
        format=PACKAGE_FORMAT,
        format_version=format_version(offsets),
        model_id=f"{source.name}-{_weights_id(models)}",
        skinclf_version=__version__,
        classes=list(spec.classes),
        preprocessing=Preprocessing(
            image_size=spec.image_size,
            resize=spec.resize,
            colour=COLOUR,
            decoder=DECODER,
            normalisation=Normalisation(
                mean=list(spec.mean), std=list(spec.std), inside_model=True
            ),
        ),
        members=[names.name(names.member_checkpoint(i)) for i in range(len(models))],
        ensemble="mean probabilities" if len(models) > 1 else None,
        logit_offsets=offsets,
        inference=InferenceSpec(
            precision=precision, tta=cfg.predict.tta, batch_size=cfg.predict.batch_size
        ),
        selective=selective,
        feature_stats=stats,
        onnx=onnx,
        card=CardFiles(json=names.name(names.card), markdown=names.name(names.card_markdown)),
        provenance=_provenance(runs, source),
    )


def _offsets_card(source: Path, name: str | None) -> dict | None:
    """The logit offsets as the model card shows them: per class, and what they were fitted on."""
    if not name:
        return None
    data = json.loads((source / name).read_text())
    return {k: data.get(k) for k in ("offsets", "fitted_on", "n")}


def _card(manifest: Manifest, runs: Sequence[Path], sel_path: Path | None, source: Path) -> dict:
    """model_card.json: data, licence, split sizes, metrics, the selective classifier."""
    from skinclf.contracts.selective import load_selective
    from skinclf.model_card import (
        INTENDED_USE,
        LIMITATIONS,
        card_metrics,
        data_licence,
        selective_card,
        split_sizes,
    )

    prov = manifest.provenance
    evaluation, where = _evaluation(source, sel_path)
    sel = load_selective(sel_path) if sel_path else None
    prep, inference = manifest.preprocessing, manifest.inference
    splits = [split_sizes(TrainingRun(r).split) for r in runs]
    return {
        "model_id": manifest.model_id,
        "skinclf_version": manifest.skinclf_version,
        "exported": prov["exported"],
        "intended_use": INTENDED_USE,
        "model": {
            "backbone": ", ".join(
                dict.fromkeys(read_config(TrainingRun(r).config).model.backbone for r in runs)
            ),
            "image_size": prep.image_size,
            "resize": prep.resize,
            "members": len(runs),
            "tta": inference.tta,
            "precision": inference.precision,
            "logit_offsets": _offsets_card(source, manifest.logit_offsets),
        },
        "training_data": {
            "path": prov.get("data_path"),
            "n_images": prov.get("n_images"),
            "fingerprint": prov.get("data_fingerprint"),
            "licence": data_licence(prov),
            "splits": splits[0],
            **({"splits_per_member": splits} if len(splits) > 1 else {}),
        },
        "metrics": card_metrics(
            [_read_json(TrainingRun(r).metrics) or {} for r in runs], evaluation, where
        ),
        "selective": selective_card(sel, selective_thresholds(sel), evaluation),
        "limitations": list(LIMITATIONS),
    }


def export_model(
    source: Path | str,
    out: Path | str,
    onnx: bool = False,
    selective: Path | str | None = None,
) -> Manifest:
    """Write the model folder `out` from a run (or a CV folder of runs); returns the manifest.

    `selective`: the selective.json to include (default: SOURCE/eval/selective.json when it
    exists; without one the model never abstains).
    """
    from skinclf.atomic import write_text
    from skinclf.contracts.selective import load_selective
    from skinclf.model_card import render_markdown
    from skinclf.models.classifier import load_classifier

    source, out = Path(source), Path(out)
    runs = source_runs(source)
    _check_out(out, runs)
    sel_path = Path(selective) if selective else RunOutput(source).policy
    if selective is None and not sel_path.is_file():
        sel_path = None
    if sel_path is not None:
        load_selective(sel_path)  # a missing or malformed one: DataError before writing
    models = [load_classifier(TrainingRun(r).best) for r in runs]
    _check_members(models, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    package = PackageFolder(staging)
    try:
        for i, (run, model) in enumerate(zip(runs, models, strict=True)):
            _write_member(run, model, package, i)
        stats = _statistics(runs, sel_path, package)
        sel_name = _copy_selective(sel_path, package, stats) if sel_path else None
        graph = _onnx(models, package, models[0].spec.image_size) if onnx else None
        precision = _recorded_precision(runs[0])
        offsets = _copy_offsets(source, package)
        manifest = _manifest(models, runs, source, sel_name, stats, graph, precision, offsets)
        card = _card(manifest, runs, sel_path, source)
        write_text(package.card, json.dumps(card, indent=2) + "\n")
        write_text(package.card_markdown, render_markdown(card))
        write_text(package.manifest, manifest.to_json())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace(staging, out)
    return manifest


def _replace(staging: Path, out: Path) -> None:
    """Put the finished package in place: the old one is renamed aside first and removed only
    after the new one is in place, so `out` is never a half-deleted package."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        old.rmdir()
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
