"""What `skinclf train` settles before it writes anything: resume settings, optional logger
packages, unreachable hub weights, and --print-config (which writes nothing at all)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from skinclf.config import load_config, save_config
from skinclf.errors import ConfigError, MissingExtraError
from skinclf.train.training import FitOptions, fit

QUIET = {"progress": False, "log": lambda *_: None}


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """cli(*args) runs `skinclf ARGS` in this process (no start-up cost): exit code, stdout,
    stderr."""
    from skinclf.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["skinclf", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# --- --resume ------------------------------------------------------------------------------
def test_fit_refuses_to_resume_with_changed_settings(
    trained_run: Path, learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _files(run)
    longer = load_config("sample", overrides=["train.epochs=3"])
    with pytest.raises(ConfigError) as err:
        fit(learnable_sample, run, longer, resume=True, cache_dir=train_cache, **QUIET)
    message = str(err.value)
    assert "train.epochs=3" in message and "train.epochs=1" in message
    assert "start a new run" in message
    assert _files(run) == before  # nothing trained, config.yaml not rewritten


def test_fit_refuses_to_resume_with_another_split(
    trained_run: Path, learnable_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    split = pd.read_csv(run / "split.csv")
    split.loc[0, "split"] = "test" if split.loc[0, "split"] != "test" else "val"
    other = tmp_path / "other.csv"
    split.to_csv(other, index=False)
    with pytest.raises(ConfigError, match="differs from the run's own split.csv"):
        fit(
            learnable_sample,
            run,
            load_config("sample"),
            resume=True,
            cache_dir=train_cache,
            options=FitOptions(split_file=other),
            **QUIET,
        )


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00\x81 not text \x00", b"image_id,split\nISIC_1,train\nISIC_2,val,x\n"],
    ids=["empty", "binary", "ragged"],
)
def test_resume_with_a_malformed_split_file_is_one_sentence(
    ham_sample: Path, tmp_path: Path, cli, content: bytes
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_config(load_config("sample"), run / "config.yaml")
    (run / "split.csv").write_text("image_id,split\nISIC_1,train\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not read before the split is")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    args = ["train", "--data", ham_sample, "--out", run, "--resume", "--split", bad]
    code, _, err = cli(*args, "--cache-dir", tmp_path / "c", "--no-progress")
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: Split file {bad} is not a readable CSV")


def test_cli_resume_starts_from_the_runs_config(ham_sample: Path, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config("paper", overrides=["train.epochs=20"]), run / "config.yaml")
    saved = (run / "config.yaml").read_text()

    code, out, _ = cli("train", "--out", run, "--resume", "--print-config", "--threads", 1)
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["preset"] == "paper" and resolved["data"]["image_size"] == 120
    assert resolved["train"]["epochs"] == 20 and resolved["trainer"]["threads"] == 1

    code, out, err = cli("train", "--data", ham_sample, "--out", run, "--resume", "train.epochs=25")
    assert code == 1 and "Traceback" not in err
    assert "train.epochs=25" in err and "train.epochs=20" in err and "start a new run" in err
    assert err.count("\n") == 1  # one sentence on one line
    assert (run / "config.yaml").read_text() == saved
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


# --- --print-config ------------------------------------------------------------------------
def test_print_config_prints_yaml_and_writes_nothing(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lite2 = ("--backbone", "efficientnet_lite2")
    code, out, _ = cli("train", "--print-config", "--preset", "paper", *lite2, "train.epochs=3")
    assert code == 0
    expected = load_config(
        "paper", overrides=["model.backbone=efficientnet_lite2", "train.epochs=3"]
    )
    assert yaml.safe_load(out) == expected.model_dump(mode="json")
    assert list(tmp_path.iterdir()) == []


# --- optional logger packages --------------------------------------------------------------
@pytest.mark.parametrize(
    ("logger", "modules"), [("wandb", ["wandb"]), ("tensorboard", ["tensorboard", "tensorboardX"])]
)
def test_missing_logger_package_names_its_extra_before_writing(
    ham_sample: Path, tmp_path: Path, monkeypatch, logger: str, modules: list[str]
) -> None:
    for module in modules:  # as if not installed: importing it fails, find_spec finds nothing
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "run"
    cfg = load_config("sample", overrides=[f"trainer.logger={logger}"])
    with pytest.raises(MissingExtraError) as err:
        fit(ham_sample, out, cfg, cache_dir=tmp_path / "cache", **QUIET)
    assert f'pip install "skinclf[{logger}]"' in str(err.value)
    assert not out.exists()


def test_cli_missing_wandb_is_one_sentence(
    ham_sample: Path, tmp_path: Path, cli, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "run"
    args = ["train", "--data", ham_sample, "--out", out, "--preset", "sample", "--logger", "wandb"]
    code, _, err = cli(*args, "--cache-dir", tmp_path / "c", "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert 'pip install "skinclf[wandb]"' in err and err.count("\n") == 1  # not eaten as markup
    assert not out.exists()


# --- hub weights without network -----------------------------------------------------------
def _hub_answers() -> bool:
    from huggingface_hub import constants

    from skinclf.models.weights import _answers

    return _answers(constants.ENDPOINT)


def test_cli_hub_backbone_without_network_fails_fast_and_writes_nothing(
    ham_sample: Path, tmp_path: Path, cli, monkeypatch
) -> None:
    import huggingface_hub.constants as hf

    from skinclf.models import weights

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))  # resnet50 not downloaded yet
    monkeypatch.setattr(weights, "_PROBES", {})
    if _hub_answers():
        pytest.skip("the Hugging Face hub is reachable from here (test_models covers the probe)")
    out = tmp_path / "run"
    args = ["train", "--data", ham_sample, "--out", out, "--backbone", "resnet50"]
    args += ["--preset", "sample", "--cache-dir", tmp_path / "c", "--no-progress"]
    cli(*args, "train.frozen_cache=false")  # the first call imports torch, Lightning, timm
    monkeypatch.setattr(weights, "_PROBES", {})  # and the second probes the hub again
    started = time.perf_counter()
    code, _, err = cli(*args, "train.frozen_cache=false")
    seconds = time.perf_counter() - started
    assert code == 1 and "Traceback" not in err and "Retrying" not in err
    assert seconds < 5  # the command after its imports; huggingface_hub's retries took a minute
    line = err.strip()
    assert err.count("\n") == 1 and line.startswith("error: Could not download")
    assert line.endswith("pass --weights FILE with a local checkpoint of 'resnet50'.")
    assert "efficientnet_lite0" in line
    assert not out.exists()


def test_a_finished_head_only_run_is_refused_like_a_fine_tuned_one(
    ham_sample: Path, tmp_path: Path, cli
) -> None:
    out, cache = tmp_path / "head", tmp_path / "cache"
    settings = ["data.image_size=32", "transfer.epochs=1", "train.epochs=0"]  # head only
    fit(ham_sample, out, load_config("sample", overrides=settings), cache_dir=cache, **QUIET)
    before = _files(out)
    assert (out / "checkpoints" / "best.ckpt").is_file()
    args = ["train", "--data", ham_sample, "--out", out, "--preset", "sample", "--cache-dir"]
    code, _, err = cli(*args, cache, "--no-progress", *settings, "seed=5")
    assert code == 1 and "already holds a run; pass --resume" in err
    assert _files(out) == before  # its results were not replaced


def test_ctrl_c_in_train_says_how_to_continue(ham_sample: Path, tmp_path: Path, cli, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("skinclf.train.training.fit", interrupted)
    args = ["train", "--data", ham_sample, "--out", tmp_path / "run", "--preset", "sample"]
    code, out, _ = cli(*args, "--no-progress")
    assert code == 130 and "interrupted" in out and "--resume" in out


def test_the_progress_bar_numbers_epochs_as_the_epoch_lines_do() -> None:
    from types import SimpleNamespace

    from skinclf.train.callbacks import epoch_bar

    bar = epoch_bar()
    bar._trainer = SimpleNamespace(max_epochs=6)
    assert bar._get_train_description(1).strip() == "Epoch 2/6"  # the line says "epoch 2/6"
    assert bar._get_train_description(5).strip() == "Epoch 6/6"
