"""The names in a `skinclf run` (or `skinclf cv`) output folder and in a training run folder,
each named once, with one path class per folder kind (`RunOutput`, `TrainingRun`): the run
state, and in eval/ the split sets, the internal sets, the name each dataset folder given with
--ood/--test gets (OUT/eval/NAME.csv), the policy, metrics and report files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "run_state.json"  # what ran, under which fingerprint (skinclf.pipeline.state)
SPLIT_SETS = ("val", "calib", "test")
CORRUPTED_SET = "val_corrupted"  # the validation images after `predict --corrupt all`
# the synthetic shifts the OOD gate is chosen on (`skinclf.data.corruptions`: ImageNet-C and
# clinical photography; docs/experiments.md, "Choosing the OOD gate against clinical-photography
# shifts")
SHIFT_CORRUPTION = "all"
# eval/ files of `skinclf cv --calib`: the ensemble's calib predictions before its offsets, the
# calibration part after `predict --corrupt all`, the out-of-fold images as its test set
CALIB_RAW, CALIB_CORRUPTED, OOF_SET = "calib_no_offsets", "calib_corrupted", "out_of_fold"
RESERVED_SETS = (*SPLIT_SETS, CORRUPTED_SET, CALIB_RAW, CALIB_CORRUPTED, OOF_SET)
# the policy file the calibrate step writes in eval/ (predict, export and serve apply it)
POLICY_FILE = "selective.json"
METRICS_FILE, REPORT_FILE = "metrics.json", "report.html"  # the evaluate step's, in eval/
FEATURE_STATS_FILE = "feature_stats.npz"  # in a run folder: fitted on its training split
MC_DROPOUT = 5  # passes of the head with dropout on behind the eval/ files' mc_dropout scores


def set_name(path: Path, used: set[str]) -> str:
    """A file-name-safe name for a dataset folder, unique among `used` (and never one of the
    internal sets' names, `RESERVED_SETS`, whose eval/ files it would overwrite)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).resolve().name).strip("-.") or "set"
    name, i = base, 2
    while name in used or name in RESERVED_SETS:
        name, i = f"{base}-{i}", i + 1
    used.add(name)
    return name


class InFolder:
    """A file or folder of a path class, at `parts` inside its `path` (a descriptor: read on
    an instance, `TrainingRun(run).config` is `run / "config.yaml"`)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, folder: Any, owner: type | None = None) -> Path:
        return folder.path.joinpath(*self.parts)


@dataclass(frozen=True)
class TrainingRun:
    """The files of a training run folder (`skinclf train --out`, a `skinclf run` output's run/,
    a cv's fold_<k>/), named once: what `fit` writes, what the predictor and export read. `best`
    is the checkpoint every later step reads; `last`, Lightning's checkpoint of the last
    finished epoch, which a resumed run continues; `feature_stats`, the feature scores'
    statistics fitted on the training split (the features step)."""

    path: Path
    config = InFolder("config.yaml")
    split = InFolder("split.csv")
    checkpoints = InFolder("checkpoints")
    best = InFolder("checkpoints", "best.ckpt")
    last = InFolder("checkpoints", "last.ckpt")
    metrics = InFolder("metrics.json")
    provenance = InFolder("provenance.json")
    feature_stats = InFolder(FEATURE_STATS_FILE)


@dataclass(frozen=True)
class RunOutput:
    """The files of a `skinclf run` output folder (a `skinclf cv` folder shares its run state
    and eval/), named once."""

    path: Path
    state = InFolder(STATE_FILE)
    split = InFolder("split.csv")
    check = InFolder("data_check.json")
    eval = InFolder("eval")
    policy = InFolder("eval", POLICY_FILE)
    metrics = InFolder("eval", METRICS_FILE)
    report = InFolder("eval", REPORT_FILE)

    @property
    def run(self) -> TrainingRun:
        return TrainingRun(self.path / "run")

    def predictions(self, name: str) -> Path:
        """eval/NAME.csv: one set's predictions (`SPLIT_SETS`, the internal sets, a dataset)."""
        return self.eval / f"{name}.csv"
