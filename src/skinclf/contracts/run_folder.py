"""The names in a `skinclf run` (or `skinclf cv`) output folder: its run state, and in its
eval/: the split sets, the internal sets, and the name each dataset folder given with
--ood/--test gets (OUT/eval/NAME.csv)."""

from __future__ import annotations

import re
from pathlib import Path

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
