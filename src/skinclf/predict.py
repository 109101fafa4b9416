"""Batch inference of trained runs, with confidence scores and optional abstention.

Several runs form an ensemble (mean probabilities). An exported model folder (MODEL_DIR of
`skinclf export`) is accepted wherever a run folder is: its members join the ensemble, its
selective.json is applied unless --selective names another, and `abstain` / `abstain_reason`
are always written for it. Writes the predictions file of DESIGN.md, or the ISIC 2018 Task 3
submission CSV.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf.atomic import write_text
from skinclf.classes import CLASSES
from skinclf.contracts.predictions import ImageRows, read_predictions, write_predictions
from skinclf.contracts.run_folder import FEATURE_STATS_FILE, TrainingRun
from skinclf.contracts.score_registry import (
    DEFAULT_SCORES,
    FEATURE_SCORES,
    SCORE_REGISTRY,
    STAGE_SCORES,
)
from skinclf.contracts.scores import SCORES, mc_dropout_msp, mc_dropout_neg_mutual_information
from skinclf.data.cache import build_cache, default_cache_dir
from skinclf.data.corruptions import corrupt_images, parse_corruptions
from skinclf.data.dataset import label_indices
from skinclf.data.formats import detect_format, raise_for_problems, read_dataset
from skinclf.data.split import read_split
from skinclf.errors import ConfigError, DataError
from skinclf.evaluate.metrics import balanced_accuracy
from skinclf.inference.batch import InferenceSettings, stage_dims
from skinclf.inference.feature_cache import cached_features, images_key
from skinclf.inference.precision import resolve_precision
from skinclf.models.classifier import checkpoint_fingerprint
from skinclf.outputs import check_output
from skinclf.predictor import Member, Predictor
from skinclf.predictor.core import load_run
from skinclf.predictor.manifest import is_package, package_offsets
from skinclf.scoring.feature_scores import FeatureStats, fit_feature_stats
from skinclf.scoring.offsets import OFFSETS_FILE, read_offsets

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ISIC_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


@dataclass(frozen=True)
class PredictOptions:
    """What `predict_file` computes and writes, beside which images: `tta` and `batch_size`
    (None: the model's own), the confidence `scores` (None: `DEFAULT_SCORES`), `mc_dropout`
    passes, the policy `selective` ("auto": the model's own; None: none, except that a single
    package applies its own), the `output_format` (predictions or isic2018-submission), the
    synthetic corruption `corrupt` (`mix`, `clinical`, `all` or comma-separated names of
    `skinclf.data.corruptions.FAMILIES`), and `apply_offsets` (a cv folder's logit offsets)."""

    tta: str | None = None
    scores: Sequence[str] | None = None
    mc_dropout: int = 0
    selective: Path | str | None = None
    output_format: str = "predictions"
    batch_size: int | None = None
    corrupt: str | None = None
    apply_offsets: bool = True


def images_table(path: Path) -> pd.DataFrame:
    """Plain image files (a file, or every image under a folder), without labels."""
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    )
    if not files:
        raise DataError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) found at {path}.")
    root = path.parent if path.is_file() else path
    return pd.DataFrame(
        {
            "image_id": [str(f.relative_to(root)) for f in files],
            "path": [str(f) for f in files],
            "label": "",
            "group": [str(f.relative_to(root)) for f in files],
            "dataset": "images",
            "semantic_ood": False,
        }
    )


def _check_same_split(
    first: Member, parts: pd.DataFrame, other: Member, theirs: pd.DataFrame, split: str
) -> None:
    """DataError naming the first image that `other`'s split puts in or out of `split` where
    `first`'s does not (the folds of a cross-validation share their calib split only)."""
    differs = (parts["split"].to_numpy() == split) != (theirs["split"].to_numpy() == split)
    if differs.any():
        i = int(np.argmax(differs))
        raise DataError(
            f"The runs of the ensemble were trained on different splits: image "
            f"{parts['image_id'].iloc[i]!r} is in '{parts['split'].iloc[i]}' in "
            f"{first.path / 'split.csv'} but in '{theirs['split'].iloc[i]}' in "
            f"{other.path / 'split.csv'}; --split needs runs sharing one split.csv (predict "
            "other images with --data)."
        )


def _dataset_table(root: Path | str, format: str = "auto") -> tuple[pd.DataFrame, dict[str, str]]:
    """The dataset table of `root`, and {image_id: reason} of its rows whose image file is
    missing (in the table with an empty path); any other problem is load_dataset's DataError."""

    result = read_dataset(root, format)
    table = result.table
    gone = (table["path"].astype(str) == "") & (table["image_id"].astype(str) != "")
    missing = [p for p in result.errors if p.kind == "missing-image"]
    reasons: dict[str, str] = {}
    if missing and len(missing) == int(gone.sum()):  # one per such row, in row order
        ids = table.loc[gone, "image_id"].astype(str)
        for image_id, problem in zip(ids, missing, strict=True):
            reasons[image_id] = f"image file is missing ({problem.message.rstrip('.')})"
        result.problems = [p for p in result.problems if p.kind != "missing-image"]
    raise_for_problems(result)
    return table, reasons


def _without_missing(
    table: pd.DataFrame, reasons: dict[str, str]
) -> tuple[pd.DataFrame, list[list[str]]]:
    """`table` without the rows whose image file is missing, and [image_id, reason] of those."""
    ids = table["image_id"].astype(str)
    gone = ids.isin(reasons)
    skipped = [[i, reasons[i]] for i in ids[gone]]
    if skipped and gone.all():
        raise DataError(
            f"None of the {len(skipped)} images has its image file, e.g. {skipped[0][1]}; "
            "run `skinclf data check` on the data."
        )
    return table[~gone].reset_index(drop=True), skipped


def input_table(
    data: Path | None,
    split: str | None,
    first: Member,
    others: Sequence[Member] = (),
) -> tuple[pd.DataFrame, list[list[str]], pd.DataFrame | None]:
    """The images to predict: `data`, or the `split` images of `first` (and of `others`,
    whose split.csv must then put the same images in `split`); [image_id, reason] of the
    images a dataset lists whose file is missing, left out of the table (predict reports them
    with the unreadable ones); and for a `split`, the run's whole labelled table, whose decode
    cache (built by training) holds the split's images (None when files are missing)."""

    if split is not None:
        data_path = first.provenance.get("data_path")
        if not data_path:
            raise DataError(f"{first.path}/provenance.json does not say which data it used.")
        table, missing = _dataset_table(data_path, first.cfg.data.format)
        table = table[table["label"].astype(str) != ""]
        parts = read_split(TrainingRun(first.path).split, table)
        for other in others:
            theirs = read_split(TrainingRun(other.path).split, table)
            _check_same_split(first, parts, other, theirs, split)
        chosen = parts.loc[parts["split"] == split, "image_id"]
        if chosen.empty:
            raise DataError(f"The run's split.csv has no '{split}' images.")
        chosen_table, gone = _without_missing(table[table["image_id"].isin(set(chosen))], missing)
        # decoded with every image of the run's data, as training decoded them (one cache)
        cover = _without_missing(table, missing)[0] if not missing else None
        return chosen_table, gone, cover
    assert data is not None
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data} does not exist.")
    if data.is_file():
        return images_table(data), [], None
    try:
        detect_format(data)
    except DataError:
        return images_table(data), [], None
    return *_without_missing(*_dataset_table(data)), None


def errors_file(out: Path | str) -> Path:
    """Where `predict` lists the images it skipped: `preds.csv` -> `preds.errors.csv`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.errors.csv")


def _skip_unreadable(
    table: pd.DataFrame,
    unreadable: dict[str, str],
    path: Path,
    missing: Sequence[Sequence[str]] = (),
) -> list[list[str]]:
    """[path, reason] of each image skipped, the `missing` ones (from `input_table`) first,
    then each unreadable image of `table`, written to `path` as path,reason (a stale file from
    an earlier run that skipped none is removed)."""
    skipped = [list(m) for m in missing] + [
        [str(p), f"image {unreadable[str(i)]}"]
        for i, p in zip(table["image_id"], table["path"], strict=True)
        if str(i) in unreadable
    ]
    if not skipped:
        path.unlink(missing_ok=True)
        return skipped

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(index=False))
    return skipped


def _mc_dropout(model, feats: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(K, N, C) probabilities from K passes of the head with its dropout active."""
    import torch

    torch.manual_seed(seed)
    head = model.head
    head.train()
    with torch.inference_mode():
        x = torch.from_numpy(feats)
        probs = np.stack([torch.softmax(head(x).float(), 1).numpy() for _ in range(k)])
    head.eval()
    return probs


def _train_features(run: Member, cache_dir: Path | None, progress: bool) -> tuple:
    table, missing, cover = input_table(None, "train", run)
    if missing:  # the statistics describe the whole training split
        raise DataError(
            f"Cannot fit the feature statistics of {run.path} on its training split: "
            f"{missing[0][1]}; restore the file and run again."
        )
    cfg = run.cfg
    images = build_cache(
        table if cover is None else cover,
        cfg.data.image_size,
        cfg.data.resize,
        cache_dir,
        progress=progress,
    )
    rows = images.rows(table["image_id"])
    feats = cached_features(
        run.model,
        images.images,
        rows,
        images_key(run.model.spec.backbone, images),
        cache_dir or default_cache_dir(),
        InferenceSettings(precision=resolve_precision(cfg.trainer.precision, training=False)),
        progress=progress,
        stages=True,
    )
    return feats, np.asarray(label_indices(table["label"]))


def feature_stats(
    run: Member, cache_dir: Path | None, progress: bool, fit: bool = False
):  # -> FeatureStats
    """The run's feature-space score statistics, RUN/feature_stats.npz. `fit` (the calibrate
    step of run, cv and `skinclf calibrate`): fitted on the training split's features unless the
    file already matches the checkpoint; otherwise they must exist (DataError naming the command
    that fits them): predicting never writes fitted state."""

    path = run.stats_path or run.path / FEATURE_STATS_FILE
    fingerprint = checkpoint_fingerprint(run.checkpoint_file)
    dims = stage_dims(run.model)
    stale = "has none"
    if path.is_file():
        stats = FeatureStats.load(path)
        has_stages = stats.stages is not None and stats.stages.dims == dims
        if stats.fingerprint == fingerprint and (has_stages or not dims or run.stats_path):
            return stats  # (a package's statistics are what they are: never refitted)
        other = stats.fingerprint != fingerprint
        stale = f"has them {'for another checkpoint' if other else 'without the backbone stages'}"
    if not fit:
        raise DataError(
            f"{run.path} {stale} ({path.name}), which the feature scores need; fit them on its "
            f"training split with `skinclf calibrate {run.path} --features-only` (or its whole "
            "policy without the flag; `skinclf run` and `skinclf cv` fit their own)."
        )
    feats, labels = _train_features(run, cache_dir, progress)
    linear = [m for m in run.model.head.modules() if hasattr(m, "weight") and m.weight.ndim == 2]
    weight = bias = None
    if len(linear) == 1:  # ViM needs the head to be one linear layer
        weight = linear[0].weight.detach().double().numpy()
        bias = linear[0].bias.detach().double().numpy()
    width = run.model.spec.num_features
    stats = fit_feature_stats(
        feats[:, :width],
        labels,
        weight,
        bias,
        fingerprint=fingerprint,
        stages=feats[:, width:] if dims else None,
        stage_dims=dims,
    )
    stats.save(path)
    return stats


def _check_request(
    data: Path | None,
    split: str | None,
    runs: Sequence[Path],
    output_format: str,
    requested: Sequence[str],
) -> None:
    """ConfigError, in one sentence, for a request that cannot be answered."""
    if (data is None) == (split is None):
        raise ConfigError("Give exactly one of --data PATH or --split val|test|calib.")
    if not runs:
        raise ConfigError("Give at least one run folder.")
    if output_format not in ("predictions", "isic2018-submission"):
        raise ConfigError(
            f"Unknown --format '{output_format}': predictions or isic2018-submission."
        )
    unknown = [s for s in requested if s not in SCORE_REGISTRY]
    if unknown:
        raise ConfigError(
            f"Unknown score {unknown[0]!r}; choose from {', '.join(sorted(SCORE_REGISTRY))}."
        )


def _check_temperature(requested: Sequence[str], predictor: Predictor) -> None:
    """ConfigError when msp_ts is asked for without a policy that carries a temperature."""
    if "msp_ts" in requested and predictor.policy is None:
        raise ConfigError(
            "msp_ts needs a temperature: give --selective RUN/eval/selective.json (written by "
            "`skinclf evaluate --val ...`)."
        )


def _decode(
    loaded: Sequence[Member],
    table: pd.DataFrame,
    missing: Sequence[Sequence[str]],
    out: Path,
    cache_dir: Path | None,
    progress: bool,
    cover: pd.DataFrame | None = None,
) -> tuple[list, pd.DataFrame, list[list[str]]]:
    """Each run's decoded images, the table without unreadable images, and the skipped ones;
    `cover`: a larger table whose decode cache holds the images (a run's whole dataset)."""

    decoded, unreadable = [], {}
    wanted = set(table["image_id"].astype(str))
    for run in loaded:
        spec = run.model.spec
        images = build_cache(
            table if cover is None else cover,
            spec.image_size,
            spec.resize,
            cache_dir,
            progress=progress,
            skip_unreadable=True,
        )
        decoded.append(images)
        unreadable.update({k: v for k, v in images.unreadable.items() if k in wanted})
    skipped = _skip_unreadable(table, unreadable, errors_file(out), missing)
    if skipped:
        table = table[~table["image_id"].astype(str).isin(unreadable)].reset_index(drop=True)
    if table.empty:
        raise DataError(
            f"None of the {len(skipped)} images could be read; the reason for each is in "
            f"{errors_file(out)}."
        )
    return decoded, table, skipped


@dataclass(frozen=True)
class _Corrupted:
    """Corrupted copies of decoded images, in table order (what `_infer_runs` reads)."""

    images: np.ndarray

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        return np.arange(len(image_ids))


def _corruption_names(corrupt: str | None) -> tuple[str, ...]:
    """The corruption families `--corrupt` asks for (none without it); ConfigError if unknown."""

    if not corrupt:
        return ()
    try:
        return parse_corruptions(corrupt)
    except ValueError as exc:
        raise ConfigError(f"--corrupt {corrupt!r}: {exc}.") from None


def _corrupted(
    decoded: Sequence, table: pd.DataFrame, names: Sequence[str], seed: int
) -> tuple[list, pd.DataFrame]:
    """Each run's images after one synthetic corruption per image, and the table with its
    `dataset` marked `:corrupted`."""

    ids = table["image_id"].astype(str).tolist()
    out = [_Corrupted(corrupt_images(d.images, d.rows(ids), names, seed)[0]) for d in decoded]
    table = table.assign(dataset=table["dataset"].astype(str) + ":corrupted")
    return out, table


def _confidence(
    requested: Sequence[str],
    logits: np.ndarray,
    feats: np.ndarray,
    predictor: Predictor,
    options: PredictOptions,
    cache_dir: Path | None,
    progress: bool,
) -> dict[str, np.ndarray]:
    """The requested confidence scores (conf_<name> columns) of the predicted images."""
    first, mc_dropout = predictor.first, options.mc_dropout
    conf = predictor.scores(requested, logits, options.tta or first.cfg.predict.tta)
    if mc_dropout or any(SCORE_REGISTRY[s].needs == "passes" for s in requested):
        pooled = feats[:, : first.model.spec.num_features]
        p = _mc_dropout(first.model, pooled, mc_dropout or 10, first.cfg.seed)
        conf["mc_dropout"] = mc_dropout_msp(p)
        conf["mc_dropout_neg_mi"] = mc_dropout_neg_mutual_information(p)
    wanted = tuple(s for s in FEATURE_SCORES if s in requested)
    if wanted:
        stats = feature_stats(first, cache_dir, progress)
        conf.update(stats.scores(feats, wanted))
    return conf


def model_offsets(runs: Sequence[Path]) -> np.ndarray | None:
    """The logit offsets of a single model folder that has them (a cv folder's
    logit_offsets.json, or an exported model's named by its manifest)."""

    if len(runs) != 1:
        return None
    if is_package(runs[0]):
        return package_offsets(runs[0])
    path = Path(runs[0]) / OFFSETS_FILE
    return read_offsets(path) if path.is_file() else None


def unused_offsets(runs: Sequence[Path]) -> list[str]:
    """The folders among several averaged ones whose logit offsets are not added (offsets fitted
    for one model do not fit the average; `skinclf cv-ensemble` refits them)."""
    if len(runs) < 2:
        return []
    return [str(r) for r in runs if model_offsets([r]) is not None]


def _write_submission(out: Path, table: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The ISIC 2018 Task 3 submission CSV (image, MEL, NV, ...), written atomically."""

    frame = pd.DataFrame({"image": [Path(i).stem for i in table["image_id"]]})
    for col in ISIC_COLUMNS:
        frame[col] = probs[:, CLASSES.index(col.lower())]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, frame.to_csv(index=False))  # never a half-written submission
    return frame


# The dataset table's metadata columns written as meta_<name> (HAM10000: age, sex,
# localization; PAD-UFES-20: age, gender, fitspatrick, region), where the table has them.
META_COLUMNS: tuple[str, ...] = ("age", "sex", "gender", "fitspatrick", "localization", "region")


def _image_rows(table: pd.DataFrame) -> ImageRows:
    """The images of the predictions file, with their image_path and meta_<name> columns."""

    paths = [os.path.abspath(p) if str(p) else "" for p in table["path"].astype(str)]
    meta = {c: table[c].tolist() for c in META_COLUMNS if c in table.columns}
    labels = [CLASSES[i] if i >= 0 else "" for i in label_indices(table["label"])]
    ids, datasets = table["image_id"].tolist(), table["dataset"].astype(str).tolist()
    ood = table["semantic_ood"].astype(bool).to_numpy()
    return ImageRows(ids, datasets, labels, ood, image_path=paths, meta=meta)


def _write_file(out: Path, table: pd.DataFrame, logits, probs, conf, abstain, reason):
    """The predictions file (DESIGN.md's schema), written atomically, read back as a frame."""
    write_predictions(out, _image_rows(table), logits, probs, conf, abstain, reason)
    return pd.read_csv(out)


def _load_predictor(runs: Sequence[Path], options: PredictOptions) -> Predictor:
    """The runs as one Predictor with the requested policy; each member with its config."""
    selective = options.selective
    if selective is None and len(runs) == 1 and is_package(runs[0]):
        selective = "auto"  # the exported model's own
    predictor = Predictor.from_paths(list(runs), policy=selective)
    for member in predictor.members:  # (the split, seed and data format come from it)
        if member.cfg is None:
            raise DataError(f"{member.path} has no config.yaml; export the model again.")
    return predictor


def predict_file(
    runs: list[Path],
    out: Path,
    data: Path | None = None,
    split: str | None = None,
    options: PredictOptions = PredictOptions(),
    cache_dir: Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict `data` (any dataset format, or plain images) or a run's own `split` into the
    file `out`, as `options` says (`PredictOptions`).

    A model folder with a `logit_offsets.json` (a `skinclf cv` folder) has its per-class logit
    offsets added to the logits before anything else (unless `options.apply_offsets` is off).
    With `options.corrupt` the images are predicted after a synthetic corruption, one family
    per image (seeded by the first run's seed); the file's `dataset` column then ends in
    `:corrupted`.

    Unreadable images are skipped: the others are predicted, and the skipped ones are listed
    with their reason (columns path,reason) in `errors_file(out)` and in the returned frame's
    `attrs["skipped"]` ([path, reason] pairs). DataError when no image could be read.
    """
    check_output(out, kind="file")  # before any image is predicted
    requested = list(options.scores or DEFAULT_SCORES)
    _check_request(data, split, runs, options.output_format, requested)
    corruptions = _corruption_names(options.corrupt)
    predictor = _load_predictor(runs, options)
    _check_temperature(requested, predictor)
    loaded = predictor.members
    table, missing, cover = input_table(data, split, loaded[0], loaded[1:])
    out = Path(out)
    decoded, table, skipped = _decode(loaded, table, missing, out, cache_dir, progress, cover)
    if corruptions:
        decoded, table = _corrupted(decoded, table, corruptions, loaded[0].cfg.seed)
    logits, probs, feats = predictor.infer(
        decoded,
        table["image_id"],
        tta=options.tta,
        batch_size=options.batch_size,
        progress=progress,
        stages=any(s in STAGE_SCORES for s in requested),
        offsets=options.apply_offsets,
    )
    conf = _confidence(requested, logits, feats, predictor, options, cache_dir, progress)
    abstain, reason = predictor.decide(requested, logits, feats, conf)
    if abstain is None and any(is_package(r) for r in runs):  # a package always says
        abstain, reason = np.zeros(len(logits), bool), np.full(len(logits), "", dtype=object)
    if options.output_format == "isic2018-submission":
        frame = _write_submission(out, table, probs)
    else:
        frame = _write_file(out, table, logits, probs, conf, abstain, reason)
    unused = unused_offsets(runs) if options.apply_offsets else []
    frame.attrs.update(skipped=skipped, unused_offsets=unused)
    return frame


def predict_held_out(
    run: Path, split: str = "val", cache_dir: Path | None = None, progress: bool = False
) -> float:
    """A trained run's own `split` through its `Predictor`, as `skinclf predict RUN --split`
    predicts it (the run's TTA, every logit score), into RUN/{split}_predictions.csv; its
    balanced accuracy. Training ends at its checkpoint; cross-validation's folds (their held-out
    fold) and the tuner's trials (the objective) get their predictions here, once."""

    out = Path(run) / f"{split}_predictions.csv"
    options = PredictOptions(scores=list(SCORES))
    predict_file([Path(run)], out, split=split, options=options, cache_dir=cache_dir,
                 progress=progress)  # fmt: skip
    p = read_predictions(out)
    return balanced_accuracy(p.y[p.labelled], p.pred[p.labelled])


def fit_feature_statistics(run: Path, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Fit a trained run's feature statistics on its training split (the first step of
    calibrating it), unless RUN/feature_stats.npz already matches its checkpoint; the file."""
    member = load_run(run)
    feature_stats(member, cache_dir, progress, fit=True)
    return member.stats_path or member.path / FEATURE_STATS_FILE
