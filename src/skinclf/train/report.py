"""The end of a training run: val/test predictions, metrics.json and curves.png."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from skinclf import atomic
from skinclf.classes import CLASSES
from skinclf.config import RunConfig
from skinclf.contracts.predictions import ImageRows, softmax, write_predictions
from skinclf.contracts.run_folder import TrainingRun
from skinclf.contracts.scores import SCORES
from skinclf.evaluate.classification import classification_summary
from skinclf.predictor import Member, Predictor

if TYPE_CHECKING:
    from skinclf.train.datamodule import PreparedData


def epoch_metrics(logs: Path) -> pd.DataFrame:
    """One row per epoch from every logs/version_*/metrics.csv (a resumed run adds versions;
    a later version wins for an epoch it repeats)."""
    frames = []
    for i, f in enumerate(
        sorted(logs.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    ):
        frame = pd.read_csv(f)
        if "epoch" in frame and len(frame):
            frames.append(frame.groupby("epoch").last().assign(_version=i))
    if not frames:
        return pd.DataFrame()
    joined = pd.concat(frames).reset_index().sort_values(["epoch", "_version"])
    per_epoch = joined.groupby("epoch").last().drop(columns=["_version", "step"], errors="ignore")
    return per_epoch.reset_index()


def plot_curves(per_epoch: pd.DataFrame, out_png: Path) -> None:
    """Loss, accuracy and balanced accuracy per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_epoch = per_epoch.set_index("epoch")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, name in zip(axes, ("loss", "accuracy", "balanced_accuracy"), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            col = f"{split}_{name}"
            if col in per_epoch:
                series = per_epoch[col].dropna()
                ax.plot(series.index + 1, series.values, style, label=split, markersize=3)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic.atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def finish_run(
    model,
    cfg: RunConfig,
    out: Path,
    data: PreparedData,
    precision: str,
    extra: dict | None = None,
    progress: bool = True,
    splits: Sequence[str] = ("val", "test", "calib"),
) -> dict:
    """Predict the run's `splits` (those not empty) with its best weights; write the files.

    `model`: the trained classifier (a `models.Classifier`, or the training module holding one
    as `.classifier`), predicted through a `Predictor`, as `skinclf predict` predicts."""
    classifier = getattr(model, "classifier", model)
    tta = cfg.predict.tta
    result: dict = {
        "tta": tta,
        "inference_precision": precision,
        "preset": cfg.preset,
        "backbone": cfg.model.backbone,
    }
    images, rows, ids, labels = data.images, data.rows, data.ids, data.labels
    by_id = data.table.set_index("image_id")
    predictor = Predictor([Member(out, classifier, cfg, {}, precision=precision)], out, "run")
    for split in splits:
        if len(rows[split]) == 0:
            continue
        logits = predictor.infer([images], ids[split], progress=progress)[0]
        part = by_id.loc[ids[split]]
        write_predictions(
            out / f"{split}_predictions.csv",
            ImageRows(
                ids[split],
                part["dataset"].astype(str).tolist(),
                [CLASSES[i] for i in labels[split]],
                part["semantic_ood"].astype(bool).to_numpy(),
            ),
            logits,
            conf={name: fn(logits) for name, fn in SCORES.items()},
        )
        result[split] = classification_summary(labels[split], softmax(logits))
    result.update(extra or {})
    atomic.write_text(TrainingRun(out).metrics, json.dumps(result, indent=2))
    per_epoch = epoch_metrics(out / "logs")
    if len(per_epoch):
        atomic.write_text(out / "metrics.csv", per_epoch.to_csv(index=False))
        plot_curves(per_epoch, out / "curves.png")
    return result
