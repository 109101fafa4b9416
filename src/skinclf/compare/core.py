"""`skinclf compare A B`: what A and B are (predictions files, run folders or cross-validation
folders) and which of their predictions files are compared."""

from __future__ import annotations

from pathlib import Path

from skinclf.compare.cv import compare_cvs, external_file
from skinclf.compare.summary import compare_files
from skinclf.contracts.cv_folder import is_cv_folder
from skinclf.errors import ConfigError, DataError

KINDS = ("predictions file", "cross-validation folder", "run folder")


def kind_of(path: Path) -> str:
    """Which of KINDS `path` is; DataError for anything else."""
    if path.is_file():
        return KINDS[0]
    if is_cv_folder(path):
        return KINDS[1]
    if (path / "run").is_dir() or (path / "checkpoints").is_dir() or (path / "eval").is_dir():
        return KINDS[2]
    what = "does not exist" if not path.exists() else "is no predictions file, run or cv folder"
    raise DataError(
        f"{path} {what}: give two predictions CSV files, two `skinclf run`/`skinclf train` "
        "folders or two `skinclf cv` folders."
    )


def run_predictions(run: Path, split: str) -> Path:
    """A run's predictions of `split`: OUT/eval/SPLIT.csv of a `skinclf run` output folder,
    else RUN/SPLIT_predictions.csv of a `skinclf train` run; DataError if it has neither."""
    for file in (run / "eval" / f"{split}.csv", run / f"{split}_predictions.csv"):
        if file.is_file():
            return file
    raise DataError(
        f"{run} has no predictions of {split!r} (neither eval/{split}.csv nor "
        f"{split}_predictions.csv): finish it with `skinclf run`, or predict it with "
        "`skinclf predict`."
    )


def compare(
    a: Path,
    b: Path,
    split: str = "test",
    external: str | None = None,
    offsets: bool = False,
    ood: tuple[Path, Path] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """A against B, paired on the same images (pass the candidate as A: P(A > B) is P(A
    better)). Two predictions files: those (`ood`: each model's predictions of an OOD set);
    two runs: their `split` predictions, and with `external` their eval/NAME.csv; two cvs:
    out of fold (`offsets`: cross-fitted logit offsets), and with `external` their
    ensembles' eval/NAME.csv."""
    kind, other = kind_of(a), kind_of(b)
    if other != kind:
        raise ConfigError(f"{a} is a {kind} and {b} a {other}: compare like with like.")
    if offsets and kind != KINDS[1]:
        raise ConfigError("--offsets (cross-fitted logit offsets) needs two cv folders.")
    if ood is not None and kind != KINDS[0]:
        raise ConfigError("--ood needs two predictions files (give the OOD files as A_OOD B_OOD).")
    if kind == KINDS[1]:
        return compare_cvs(a, b, offsets, external, resamples, seed)
    if kind == KINDS[0]:
        if external is not None:
            raise ConfigError("--external needs two run or cv folders.")
        return compare_files(a, b, resamples, seed, ood)
    result = compare_files(run_predictions(a, split), run_predictions(b, split), resamples, seed)
    if external is None:
        return result
    ext = compare_files(external_file(a, external), external_file(b, external), resamples, seed)
    return {split: result, external: ext}
