"""Faults: kill -9 in each long step, then the same command again; two builders of one cache at
once; a full disk while writing a cache or a run file.

A killed step is a subprocess stopped by `skinclf.faults.fault_point` (SKINCLF_FAULT); the rerun
and the uninterrupted reference run in this process, so they compare bit for bit.
"""

from __future__ import annotations

import errno
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from skinclf.config import load_config
from skinclf.errors import DataError

KILLED = -signal.SIGKILL

# The parts of a SkinClassifier the feature and activation caches use, small enough that a
# subprocess only imports torch (not timm or Lightning), and the cache calls of the tests.
CACHES = """
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skinclf.config import load_config
from skinclf.train.activations import ActivationViews, cached_activations
from skinclf.inference.batch import InferenceSettings
from skinclf.inference.feature_cache import cached_features


class TinyBackbone(nn.Module):  # EfficientNet's layout in miniature, declared as timm does

    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": "^conv_stem|bn1", "blocks": "^blocks[.]([0-9]+)"}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.cfg = load_config("sample", overrides=["data.image_size=32"])
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        self.backbone = TinyBackbone()
        self.head = nn.Linear(8, 7)

    def normalize(self, x):
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        return (x - self.mean) / self.std

    def features(self, x):
        bb = self.backbone
        return bb.blocks(bb.bn1(bb.conv_stem(self.normalize(x)))).mean((2, 3))


IMAGES = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
ROWS = np.arange(12)[::-1].copy()


def build(what, cache, model=None):
    torch.set_num_threads(1)
    model = model if model is not None else Tiny().eval()
    if what == "features":
        settings = InferenceSettings(batch_size=4)
        return cached_features(model, IMAGES, ROWS, {"t": 1}, cache, settings, progress=False)
    views = ActivationViews(1, "train", 2, batch_size=4)
    return cached_activations(model, IMAGES, ROWS, views, {"t": 1}, cache, progress=False)


if __name__ == "__main__":
    build(sys.argv[1], Path(sys.argv[2]))
"""


@pytest.fixture
def caches(tmp_path: Path) -> tuple[Path, dict]:
    """The script above as a file (to run killed) and its functions (to run here)."""
    script = tmp_path / "caches.py"
    script.write_text(CACHES)
    return script, runpy.run_path(str(script))


@pytest.fixture
def one_thread():
    """In-process runs on one torch thread like the subprocesses (trainer.threads=1)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def start(args: list[str], fault: str) -> subprocess.Popen:
    env = dict(os.environ, SKINCLF_FAULT=fault)
    return subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def killed(proc: subprocess.Popen) -> None:
    """Wait for `proc` and check that its fault point killed it (not an error, not the end)."""
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == KILLED, err[-3000:]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def finals(folder: Path, *suffixes: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in suffixes)


QUIET = {"progress": False, "log": lambda *_: None}


# A. kill -9 in each long step, then the same command again -----------------------------------


def test_killed_decode_cache_build_is_rebuilt_identically(ham_sample: Path, tmp_path: Path):
    from skinclf.data.cache import build_cache
    from skinclf.data.formats import load_dataset

    code = (
        "import sys; from skinclf.data.cache import build_cache; "
        "from skinclf.data.formats import load_dataset; "
        "build_cache(load_dataset(sys.argv[1]), 32, cache_dir=sys.argv[2], progress=False)"
    )
    cache = tmp_path / "cache"
    killed(start([sys.executable, "-c", code, str(ham_sample), str(cache)], "decode-cache:after=9"))
    folder = cache / "decoded"
    assert finals(folder, ".npy", ".json") == []  # only the temporary file, half filled
    assert len(temps(folder)) == 1

    table = load_dataset(ham_sample)
    rebuilt = build_cache(table, 32, cache_dir=cache, progress=False)  # the lock does not block
    reference = build_cache(table, 32, cache_dir=tmp_path / "ref", progress=False)
    assert rebuilt.build_seconds is not None  # built again, not trusted
    assert np.load(rebuilt.path).tobytes() == np.load(reference.path).tobytes()
    assert (
        rebuilt.path.with_suffix(".json").read_text()
        == reference.path.with_suffix(".json").read_text()
    )
    assert temps(folder) == []


@pytest.mark.parametrize(
    ("what", "fault"), [("features", "feature-cache"), ("activations", "activation-cache:after=2")]
)
def test_killed_feature_or_activation_cache_is_rebuilt_identically(
    caches, tmp_path: Path, one_thread, what: str, fault: str
):
    script, ns = caches
    cache = tmp_path / "cache"
    killed(start([sys.executable, str(script), what, str(cache)], fault))
    folder = cache / what
    assert finals(folder, ".npy") == []
    assert len(temps(folder)) == 1  # written (in part, for activations), never renamed

    rebuilt = ns["build"](what, cache)
    reference = ns["build"](what, tmp_path / "ref")
    assert np.asarray(rebuilt).tobytes() == np.asarray(reference).tobytes()
    assert temps(folder) == []  # the dead builder's temporary file is removed
    (final,) = folder.glob("*.npy")
    assert np.load(final).tobytes() == np.asarray(reference).tobytes()


FINETUNE = [
    "data.image_size=32",
    "transfer.epochs=0",
    "train.epochs=2",
    "train.batch_size=8",
    "trainer.precision=32",
    "trainer.threads=1",
]


def _weights(run: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=False)["state_dict"]


def test_fine_tuning_killed_while_saving_a_checkpoint_resumes_to_the_same_weights(
    ham_sample: Path, tmp_path: Path, one_thread
):
    """Killed at the end of epoch 2, half-way through replacing last.ckpt: epoch 1's checkpoint
    is whole, and --resume ends with the weights of an uninterrupted run."""
    from skinclf.train.training import fit

    cache, cut = tmp_path / "cache", tmp_path / "cut"
    cmd = [sys.executable, "-m", "skinclf", "train", "--data", str(ham_sample), "--out", str(cut)]
    cmd += ["--preset", "sample", "--cache-dir", str(cache), "--no-progress", *FINETUNE]
    proc = start(cmd, "write/last.ckpt:after=2")
    cfg = load_config("sample", overrides=FINETUNE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(ham_sample, tmp_path / "full", cfg, cache_dir=cache, **QUIET)  # meanwhile: reference
        # Lightning's eval-mode warning (the frozen stages) is silenced for that fit only
        left = [f for f in warnings.filters if f[1] is not None and "eval mode" in f[1].pattern]
    killed(proc)
    assert not [w for w in caught if "in eval mode" in str(w.message)] and left == []
    checkpoints = cut / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 0
    assert len(temps(checkpoints)) == 1

    fit(ham_sample, cut, cfg, cache_dir=cache, resume=True, **QUIET)
    for name in ("last.ckpt", "best.ckpt"):  # bit for bit, every tensor
        full, resumed = _weights(tmp_path / "full", name), _weights(cut, name)
        assert full.keys() == resumed.keys()
        assert [k for k in full if not torch.equal(full[k], resumed[k])] == [], name
    assert pd.read_csv(cut / "metrics.csv")["epoch"].tolist() == [0, 1]
    assert temps(cut) == []


def test_killed_tuning_trial_is_failed_and_its_parameters_run_again(
    ham_sample: Path, tmp_path: Path
):
    import optuna
    from optuna.trial import TrialState

    from skinclf.tune import TuneOptions, tune

    out, cache = tmp_path / "study", tmp_path / "cache"
    args = ["--preset", "sample", "--trials", "2", "--cache-dir", str(cache), "--no-progress"]
    args += ["--heartbeat", "1"]
    cmd = [sys.executable, "-m", "skinclf", "tune", "--data", str(ham_sample), "--out", str(out)]
    settings = ["data.image_size=32", "seed=5"]  # seed 5: both new draws are 10-epoch trials
    killed(start([*cmd, *args, *settings], "tune-trial"))
    time.sleep(3 + 2)  # its heartbeat is past the grace period of 3 beats (SQLite: 1 s steps)
    storage = f"sqlite:///{out / 'study.db'}"
    states = [t.state for t in optuna.load_study(study_name="skinclf", storage=storage).trials]
    assert states == [TrialState.RUNNING]  # as the kill left it

    cfg = load_config("sample", overrides=settings)
    study = tune(ham_sample, out, cfg, TuneOptions(trials=2, cache_dir=cache, heartbeat=1), **QUIET)
    failed, retried, new = study.trials
    assert [t.state for t in study.trials] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert retried.params == failed.params  # the killed trial's parameters, run again
    assert retried.system_attrs["failed_trial"] == 0
    assert new.params != failed.params  # the continued search does not repeat the first draw
    assert len(pd.read_csv(out / "trials.csv")) == 3 and (out / "best.yaml").is_file()


def test_killed_prediction_leaves_the_old_file_and_reruns_identically(
    trained_run: Path, ham_sample: Path, tmp_path: Path
):
    from skinclf.predict import predict_file

    cache, out = tmp_path / "cache", tmp_path / "eval" / "p.csv"
    out.parent.mkdir()
    out.write_text("an older predictions file\n")
    cmd = [sys.executable, "-m", "skinclf", "predict", str(trained_run), "--data", str(ham_sample)]
    cmd += ["--out", str(out), "--cache-dir", str(cache), "--no-progress"]
    proc = start(cmd, "write/p.csv")
    reference = tmp_path / "ref.csv"
    predict_file([trained_run], reference, data=ham_sample, cache_dir=cache, progress=False)
    killed(proc)
    assert out.read_text() == "an older predictions file\n"  # never half of the new one
    assert len(temps(out.parent)) == 1

    predict_file([trained_run], out, data=ham_sample, cache_dir=cache, progress=False)
    assert out.read_bytes() == reference.read_bytes()
    assert temps(out.parent) == []


# B. two builders of the same cache at once ----------------------------------------------------


@pytest.mark.parametrize(
    ("what", "module", "function", "calls"),
    [
        ("features", "skinclf.inference.feature_cache", "infer", 1),
        ("activations", "skinclf.train.activations", "prefix_forward", 3 * 2),  # batches x views
    ],
)
def test_parallel_builders_of_one_cache_build_it_once(
    caches, tmp_path: Path, monkeypatch, one_thread, what: str, module: str, function: str, calls
):
    _, ns = caches
    target = sys.modules[module]
    real, seen = getattr(target, function), []

    def counted(*args, **kwargs):
        seen.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(target, function, counted)
    results: list[np.ndarray] = []

    def call(model) -> None:
        results.append(np.asarray(ns["build"](what, tmp_path, model)))

    models = [ns["Tiny"]().eval() for _ in range(3)]  # one each, as in separate processes
    threads = [threading.Thread(target=call, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    assert len(seen) == calls and len(set(seen)) == 1  # one builder; the others waited and read
    assert all(r.tobytes() == results[0].tobytes() for r in results)
    assert len(list((tmp_path / what).glob("*.npy"))) == 1 and temps(tmp_path) == []


# C. a full disk ------------------------------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _one_sentence(exc: DataError, name: str) -> None:
    message = str(exc)
    assert "disk is full" in message and name in message and "MB free" in message, message
    assert "\n" not in message and message.endswith(".")


needs_fallocate = pytest.mark.skipif(
    not hasattr(os, "posix_fallocate"), reason="disk space is reserved with posix_fallocate"
)


@pytest.mark.parametrize(
    "what",
    [
        pytest.param("decode", marks=needs_fallocate),
        "features",
        pytest.param("activations", marks=needs_fallocate),
    ],
)
def test_full_disk_while_writing_a_cache(
    caches, ham_sample: Path, tmp_path: Path, monkeypatch, one_thread, what: str
):
    """One sentence; nothing left that a later run would trust; that later run builds it."""
    from skinclf.data.cache import build_cache
    from skinclf.data.formats import load_dataset

    _, ns = caches
    table = load_dataset(ham_sample)
    folder = tmp_path / ("decoded" if what == "decode" else what)

    def build():
        if what == "decode":
            return build_cache(table, 32, cache_dir=tmp_path, progress=False).path
        ns["build"](what, tmp_path)
        return next(folder.glob("*.npy"))

    def save_half(file, arr, *args, **kwargs):  # the disk fills up half-way through np.save
        file.write(b"\x93NUMPY" + b"\0" * 64)
        _no_space()

    if what == "features":
        monkeypatch.setattr(np, "save", save_half)
    else:  # memory-mapped: the space is reserved up front (else SIGBUS when the disk is full)
        monkeypatch.setattr(os, "posix_fallocate", _no_space)
    with pytest.raises(DataError) as info:
        build()
    _one_sentence(info.value, ".npy")
    assert finals(folder, ".npy", ".json") == [] and temps(folder) == []
    monkeypatch.undo()
    assert build().is_file()


@pytest.mark.parametrize("what", ["predictions", "checkpoint", "metrics"])
def test_full_disk_while_writing_a_run_file(tmp_path: Path, monkeypatch, what: str):
    """One sentence; the file being replaced keeps its old content; no temporary file left."""
    from skinclf import atomic
    from skinclf.contracts.predictions import ImageRows, write_predictions
    from skinclf.train.callbacks import AtomicCheckpointIO

    name = {"predictions": "val_predictions.csv", "checkpoint": "last.ckpt"}.get(what, "m.json")
    path = tmp_path / name
    path.write_bytes(b"old")

    def to_csv_half(self, fh, *args, **kwargs):
        fh.write("image_id,dat")
        _no_space()

    def write_half(self, data, *args, **kwargs):
        with open(self, "wb") as fh:
            fh.write(b"half")
        _no_space()

    if what == "predictions":
        monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_half)
    else:
        writer = "write_bytes" if what == "checkpoint" else "write_text"
        monkeypatch.setattr(Path, writer, write_half)
    with pytest.raises(DataError) as info:
        if what == "predictions":
            write_predictions(path, ImageRows(["a"], "ham10000", ["nv"], [False]), np.zeros((1, 7)))
        elif what == "checkpoint":
            AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)
        else:
            atomic.write_text(path, json.dumps({"a": 1}))
    _one_sentence(info.value, name)
    assert path.read_bytes() == b"old" and temps(tmp_path) == []


def test_full_disk_while_fit_writes_its_run_files(
    ham_sample: Path, tmp_path: Path, monkeypatch, capsys
):
    """A real fit whose disk fills up while writing provenance.json: one sentence, no truncated
    file and no temporary file left. Through the CLI, a full disk outside skinclf.atomic (an
    OSError with ENOSPC) is the same one sentence, exit 1, no traceback."""
    from skinclf.cli import main
    from skinclf.train import training as run_module
    from skinclf.train.training import fit

    real = Path.write_text

    def full_at_provenance(self, data, *args, **kwargs):
        if self.name.startswith("provenance.json"):
            with open(self, "w") as fh:
                fh.write(data[:10])
            _no_space()
        return real(self, data, *args, **kwargs)

    settings = ["data.image_size=32", "transfer.epochs=1", "train.epochs=0"]  # head only
    out, cache = tmp_path / "run", tmp_path / "cache"
    monkeypatch.setattr(Path, "write_text", full_at_provenance)
    with pytest.raises(DataError) as info:
        fit(ham_sample, out, load_config("sample", overrides=settings), cache_dir=cache, **QUIET)
    _one_sentence(info.value, "provenance.json")
    assert (out / "config.yaml").is_file() and (out / "split.csv").is_file()
    assert not (out / "provenance.json").exists() and temps(out) == []
    monkeypatch.undo()

    def no_space(cfg, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_module, "save_config", no_space)
    cmd = ["skinclf", "train", "--data", str(ham_sample), "--out", str(tmp_path / "cli")]
    cmd += ["--preset", "sample", "--cache-dir", str(cache), "--no-progress", *settings]
    monkeypatch.setattr(sys, "argv", cmd)
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: The disk is full: cannot write ")
    assert str(tmp_path / "cli" / "config.yaml") in err and "MB free" in err
