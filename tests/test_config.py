"""Presets, config files and key=value overrides."""

from __future__ import annotations

import pytest

from skinclf.config import load_config, parse_overrides, preset_names, read_config, save_config
from skinclf.errors import ConfigError


def test_presets_load_and_differ() -> None:
    assert {"default", "paper", "sample"} <= set(preset_names())
    paper = load_config("paper")
    assert paper.data.image_size == 120
    assert paper.train.optimizer == "adam" and paper.train.lr == 1e-4
    assert paper.train.weight_decay == 1e-5 and paper.train.schedule == "plateau"
    assert paper.loss.name == "ce" and paper.model.head == "mlp" and paper.model.dropout == 0.4
    assert paper.transfer.epochs == 0 and paper.data.normalize == "dataset"
    assert load_config("default").loss.name != "ce"


def test_overrides_are_dotted_yaml() -> None:
    assert parse_overrides(["train.epochs=12", "augment.scale=[0.5, 1.0]", "a.b.c=null"]) == {
        "train": {"epochs": 12},
        "augment": {"scale": [0.5, 1.0]},
        "a": {"b": {"c": None}},
    }
    cfg = load_config("default", overrides=["train.epochs=3", "loss.name=focal"])
    assert cfg.train.epochs == 3 and cfg.loss.name == "focal"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], "Unknown config key 'train.epoch'"),
        (["data.image_size=16"], "at least 32"),
        (["loss.name=hinge"], "loss.name"),
        (["epochs"], "key=value"),
    ],
)
def test_bad_overrides_are_clear(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("default", overrides=overrides)


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="default, paper, sample"):
        load_config("fancy")


def test_config_file_and_round_trip(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 4\nmodel:\n  head: mlp\n")
    cfg = load_config("default", f, ["train.epochs=5"])
    assert cfg.train.epochs == 5 and cfg.model.head == "mlp"
    save_config(cfg, tmp_path / "config.yaml")
    assert read_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("default", tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("train.epoch=3", "did you mean 'train.epochs'?"),
        ("train.plateau.patiance=2", "did you mean 'train.plateau.patience'?"),
        ("modle.backbone=resnet50", "did you mean 'model'?"),
        ("train.zzz=1", "the keys under 'train' are: epochs, unfreeze,"),
    ],
)
def test_unknown_key_suggests_the_closest_valid_keys(override: str, hint: str) -> None:
    with pytest.raises(ConfigError, match="Unknown config key") as err:
        load_config("default", overrides=[override])
    assert hint in str(err.value)


def test_settings_doc_is_generated_and_current() -> None:
    from pathlib import Path

    from skinclf.settings_docs import settings_markdown

    text = settings_markdown()
    for key in ("`train.epochs`", "`train.plateau.patience`", "`trainer.logger`", "`notes`"):
        assert f"| {key} |" in text
    # the paper preset's 50 epochs, next to the built-in 8 and the other presets
    assert "| `train.epochs` | int | `8` | `9` | `50` | `1` |" in text
    doc = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
    assert doc.read_text() == text, "docs/settings.md is stale: run `make docs`"


def test_resume_settings_start_from_the_run_not_the_preset(tmp_path) -> None:
    from skinclf.config import load_resume_config

    run = tmp_path / "run"
    run.mkdir()
    paper = load_config("paper", overrides=["train.epochs=20"])
    save_config(paper, run / "config.yaml")
    cfg = load_resume_config(run, overrides=["trainer.threads=1", "trainer.logger=tensorboard"])
    assert cfg.preset == "paper" and cfg.data.image_size == 120 and cfg.train.epochs == 20
    assert cfg.trainer.threads == 1 and cfg.trainer.logger == "tensorboard"
    with pytest.raises(ConfigError) as err:
        load_resume_config(run, overrides=["train.epochs=25"])
    message = str(err.value)
    assert "train.epochs=25" in message and "train.epochs=20" in message
    assert "start a new run" in message
    with pytest.raises(ConfigError, match="with preset=default"):
        load_resume_config(run, preset="default")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epochs=-1"], "'train.epochs' .*greater than or equal to 0"),
        (["train.lr=-0.1"], "'train.lr' .*greater than 0"),
        (["transfer.epochs=-5", "train.epochs=0"], "'transfer.epochs' .*greater than or equal"),
        (["train.batch_size=0"], "'train.batch_size' .*greater than 0"),
        (["transfer.batch_size=0"], "'transfer.batch_size' .*greater than 0"),
        (["predict.batch_size=0"], "'predict.batch_size' .*greater than 0"),
        (["data.val=1.5"], "'data.val' .*less than 1"),
        (["model.dropout=1"], "'model.dropout' .*less than 1"),
        (["train.ema_decay=1.5"], "'train.ema_decay' .*less than 1"),
        (["trainer.num_workers=-1"], "'trainer.num_workers'"),
        (["transfer.epochs=0", "train.epochs=0"], "would train nothing"),
    ],
)
def test_settings_outside_their_domain_are_refused_in_one_sentence(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config("default", overrides=overrides)
    assert str(info.value).count("\n") == 0


def test_a_head_only_run_is_a_valid_run() -> None:
    cfg = load_config("default", overrides=["train.epochs=0"])  # a trained head, no fine-tuning
    assert cfg.transfer.epochs > 0 and cfg.train.epochs == 0


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_bad_setting_is_refused_before_any_file_is_written(
    command: str, tmp_path, monkeypatch, capsys
) -> None:
    import sys

    from skinclf.cli import main

    out = tmp_path / "out"
    data = ["--sample"] if command == "run" else ["--data", str(tmp_path)]
    monkeypatch.setattr(
        sys, "argv", ["skinclf", command, *data, "--out", str(out), "train.batch_size=0"]
    )
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1 and "train.batch_size" in capsys.readouterr().err
    assert not out.exists()
