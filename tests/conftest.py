"""Shared fixtures: small generated datasets in each real format (never real data).

The session-scoped samples are shared by many tests: treat them as read-only (copy with
`shutil.copytree` before changing anything), or use `make_sample` for a private one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from skinclf.data.synthetic import write_broken, write_sample

SAMPLE_N = 4  # images per class
SAMPLE_SIZE = 32  # pixels


def _sample(factory: pytest.TempPathFactory, format: str) -> Path:
    return write_sample(factory.mktemp(format), format=format, n=SAMPLE_N, seed=0, size=SAMPLE_SIZE)


@pytest.fixture(scope="session")
def ham_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HAM10000 layout: HAM10000_metadata.csv + HAM10000_images_part_{1,2}/ (read-only)."""
    return _sample(tmp_path_factory, "ham10000")


@pytest.fixture(scope="session")
def pad_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PAD-UFES-20 layout: metadata.csv + images/*.png, with a few SCC rows (read-only)."""
    return _sample(tmp_path_factory, "pad-ufes-20")


@pytest.fixture(scope="session")
def isic_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ISIC 2018 Task 3 test layout: one-hot ground-truth CSV + input folder (read-only)."""
    return _sample(tmp_path_factory, "isic2018")


@pytest.fixture(scope="session")
def folder_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per class (read-only)."""
    return _sample(tmp_path_factory, "folder")


@pytest.fixture(scope="session")
def csv_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels.csv with path,label,group + images/ (read-only)."""
    return _sample(tmp_path_factory, "csv")


@pytest.fixture
def make_sample(tmp_path: Path) -> Callable[..., Path]:
    """make_sample(format, n=4, seed=0, size=32) -> a private sample this test may change."""

    def make(format: str = "ham10000", n: int = SAMPLE_N, seed: int = 0, size: int = 32) -> Path:
        return write_sample(tmp_path / f"{format}-{n}-{seed}", format, n=n, seed=seed, size=size)

    return make


@pytest.fixture
def make_broken(tmp_path: Path) -> Callable[..., Path]:
    """make_broken(kind, format="ham10000") -> path of a dataset with that one defect."""

    def make(kind: str, format: str = "ham10000") -> Path:
        return write_broken(tmp_path / f"{format}-{kind}", kind, format=format)

    return make


@pytest.fixture(scope="session")
def learnable_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 generated images per class at 64 px: enough to show that training learns."""
    return write_sample(tmp_path_factory.mktemp("learn"), "ham10000", n=30, seed=1, size=64)


@pytest.fixture(scope="session")
def train_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decode/feature cache folder shared by the tests that train (never ~/.cache)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def trained_run(
    learnable_sample: Path, train_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A run folder trained with the `sample` preset on `learnable_sample` (read-only)."""
    from skinclf.config import load_config
    from skinclf.train.training import fit

    out = tmp_path_factory.mktemp("runs") / "sample"
    fit(
        learnable_sample,
        out,
        load_config("sample"),
        cache_dir=train_cache,
        progress=False,
        log=lambda *_: None,
    )
    return out


@pytest.fixture(scope="session")
def exported_model(
    trained_run: Path, train_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """MODEL_DIR of `skinclf export` from an evaluated copy of `trained_run` (read-only): its
    val/test predictions carry msp and mahalanobis, `skinclf evaluate` fitted an OOD gate
    (mahalanobis+msp, keeping 90 % of val) and the confidence gate in RUN/eval/, so the model
    has a gated selective.json and feature_stats.npz; and model.onnx when onnx is installed.
    The evaluated run is the manifest's provenance["source"]."""
    import importlib.util
    import shutil

    from tests.evaluate_kw import evaluate_kw

    from skinclf.predict import PredictOptions, fit_feature_statistics, predict_file
    from skinclf.predictor.export import export_model

    root = tmp_path_factory.mktemp("export")
    run = Path(shutil.copytree(trained_run, root / "run", ignore=shutil.ignore_patterns("last*")))
    fit_feature_statistics(run, train_cache, progress=False)  # the calibrate step's first part
    files = {}
    for split in ("val", "test"):
        files[split] = run / "eval" / f"{split}.csv"
        predict_file(
            [run],
            files[split],
            split=split,
            cache_dir=train_cache,
            progress=False,
            options=PredictOptions(scores=["msp", "mahalanobis"]),
        )
    evaluate_kw(
        test=files["test"],
        out_dir=run / "eval",
        val=files["val"],
        ood_gate="mahalanobis+msp",
        id_keep=0.9,
        gate_stats=run / "feature_stats.npz",
        target_risk=0.5,
        n_bootstrap=20,
    )
    out = root / "model"
    export_model(run, out, onnx=importlib.util.find_spec("onnx") is not None)
    return out
