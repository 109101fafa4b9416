"""The search space of `skinclf tune` comes from the preset YAML (`tune:`); a bad one is one
sentence before any trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skinclf.config import SearchParam, load_config, load_search_space
from skinclf.errors import ConfigError
from skinclf.tune import TuneOptions, tune
from skinclf.tune.space import baseline_point, check_space, distributions, suggest


def _check(space: dict, overrides: list[str] | None = None) -> None:
    cfg = load_config("sample", overrides=overrides)
    check_space({k: SearchParam(**v) for k, v in space.items()}, cfg, "head", "test.yaml")


def test_every_preset_declares_a_valid_space_for_each_stage() -> None:
    for preset in ("default", "paper", "sample"):
        spaces = load_search_space(preset)
        for stage in ("head", "finetune"):
            space = getattr(spaces, stage)
            assert space, (preset, stage)
            check_space(space, load_config(preset), stage, f"preset {preset}")
    dist = distributions(load_search_space("sample").head)
    assert type(dist["transfer.epochs"]).__name__ == "IntDistribution"  # an int setting
    assert dist["transfer.lr"].log and type(dist["transfer.lr"]).__name__ == "FloatDistribution"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"loss.nme": {"choices": ["ce"]}},
            "Unknown setting 'loss.nme' in the head search space (from test.yaml); "
            "did you mean 'loss.name'?",
        ),
        (
            {"model.dropout": {"low": 0.5, "high": 0.1}},
            "the range of model.dropout is empty: low 0.5 > high 0.1",
        ),
        ({"loss.name": {"choices": []}}, "loss.name has an empty list of choices"),
        (
            {"train.ema_decay": {"low": 0.9, "high": 1.5}},
            "train.ema_decay reaches 1.5, which is not a valid value",
        ),
        (
            {"loss.name": {"choices": ["ce", "hinge"]}},
            "loss.name reaches hinge, which is not a valid value",
        ),
        (
            {"data.image_size": {"low": 16, "high": 64}},
            "data.image_size reaches 16, which is not a valid value",
        ),
        ({"transfer.epochs": {"low": 5, "high": 20.5}}, "transfer.epochs is an integer setting"),
        ({"transfer.lr": {"low": 0.0, "high": 0.1, "log": True}}, "so low must be above 0"),
        ({"transfer.lr": {"low": 0.1}}, "transfer.lr needs either choices or both low and high"),
        ({"model.head": {"low": 0, "high": 1}}, "model.head is not a number: give it choices"),
        (
            {
                "loss.tau": {"low": 0.5, "high": 1.0, "when": {"loss.name": ["logit_adjusted"]}},
                "loss.name": {"choices": ["ce"]},
            },
            "loss.tau depends on loss.name, which must be listed above it",
        ),
    ],
)
def test_a_bad_search_space_is_one_sentence(space: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _check(space)
    text = str(err.value)
    assert message in text and text.count(". ") == 0 and text.endswith((".", "?"))


def test_a_bad_space_in_a_config_file_stops_tune_before_any_trial(
    ham_sample: Path, tmp_path: Path
) -> None:
    config = tmp_path / "space.yaml"
    config.write_text(
        yaml.safe_dump({"tune": {"head": {"model.dropout": {"low": 0.6, "high": 0.2}}}})
    )
    out = tmp_path / "study"
    cfg = load_config("sample", config)
    space = load_search_space("sample", config)
    assert list(space.head) == ["model.dropout"]  # the file's head space replaces the preset's
    assert space.finetune == load_search_space("sample").finetune  # the other stage is kept
    with pytest.raises(ConfigError, match=f"search space \\(from {config}\\)"):
        options = TuneOptions(trials=1, space=space, space_origin=str(config))
        tune(ham_sample, out, cfg, options, progress=False)
    assert not out.exists()  # no study, no split: nothing ran


def test_a_malformed_tune_section_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "space.yaml"
    config.write_text("tune:\n  head:\n    model.dropout: {low: 0.1, hihg: 0.3}\n")
    with pytest.raises(ConfigError, match=r"'tune.head.model.dropout.hihg' \(from .*space.yaml\)"):
        load_search_space("sample", config)
    assert load_config("sample", config).model.dropout == 0.1  # not a run setting


def test_a_conditional_setting_is_searched_only_when_its_condition_holds() -> None:
    import optuna

    space = load_search_space("sample").head
    cfg = load_config("sample")
    fixed = {"loss.name": "ce", "loss.label_smoothing": 0.1, "train.sampler": "uniform"}
    fixed |= {"model.head": "mlp", "model.dropout": 0.2, "transfer.lr": 1e-3}
    fixed |= {"transfer.weight_decay": 1e-4, "transfer.epochs": 20}
    overrides = suggest(optuna.trial.FixedTrial(fixed), space, cfg)
    assert "transfer.epochs=20" in overrides and "model.head=mlp" in overrides
    assert not [o for o in overrides if o.startswith(("loss.tau=", "loss.class_weights="))]
    tau = fixed | {"loss.name": "logit_adjusted", "loss.tau": 0.5}
    assert "loss.tau=0.5" in suggest(optuna.trial.FixedTrial(tau), space, cfg)
    ft = load_search_space(
        "sample"
    ).finetune  # loss.tau: only when the fixed loss is logit_adjusted
    assert "loss.tau" not in str(suggest(optuna.trial.FixedTrial(_ft_point()), ft, cfg))
    adjusted = load_config("sample", overrides=["loss.name=logit_adjusted"])
    point = _ft_point() | {"loss.tau": 1.2}
    overrides = suggest(optuna.trial.FixedTrial(point), ft, adjusted)
    assert "loss.tau=1.2" in overrides and "train.ema_decay=null" in overrides


def _ft_point() -> dict:
    return {
        "train.lr": 1e-3, "train.backbone_lr": 1e-4, "train.weight_decay": 0.01,
        "train.ema_decay": None, "model.dropout": 0.1, "model.drop_path_rate": 0.0,
        "loss.label_smoothing": 0.0, "augment.mixup": 0.2, "augment.cutmix": 0.0,
    }  # fmt: skip


def test_a_study_searched_over_other_choices_is_not_continued(
    ham_sample: Path, train_cache: Path, tmp_path: Path
) -> None:
    """Changing a categorical setting's choices in the YAML, then continuing the study that
    searched the old ones, is one sentence (Optuna cannot mix them)."""
    import optuna

    out = tmp_path / "study"
    out.mkdir()
    old = optuna.create_study(study_name="skinclf", storage=f"sqlite:///{out / 'study.db'}")
    old.add_trial(
        optuna.trial.create_trial(
            params={"model.head": "linear"},
            distributions={"model.head": optuna.distributions.CategoricalDistribution(["linear"])},
            value=0.5,
        )
    )
    with pytest.raises(ConfigError, match="Study 'skinclf' .* searched model.head over"):
        options = TuneOptions(trials=2, cache_dir=train_cache)
        tune(ham_sample, out, load_config("sample"), options, progress=False)
    assert len(old.trials) == 1


def test_settings_fixed_on_the_command_line_are_not_searched() -> None:
    from skinclf.tune.space import without_fixed

    spaces, fixed = without_fixed(load_search_space("sample"), ["transfer.epochs=3", "seed=1"])
    assert fixed == ["transfer.epochs"] and "transfer.epochs" not in spaces.head
    assert "transfer.lr" in spaces.head and spaces.finetune == load_search_space("sample").finetune


def test_the_baseline_point_is_the_presets_own_values_inside_the_space() -> None:
    cfg = load_config("default")
    point, outside = baseline_point(load_search_space("default").finetune, cfg)
    assert outside == []
    assert point["train.lr"] == cfg.train.lr and point["train.ema_decay"] == cfg.train.ema_decay
    assert point["loss.tau"] == cfg.loss.tau  # its condition (loss.name logit_adjusted) holds
    ce = load_config("default", overrides=["loss.name=ce"])
    assert "loss.tau" not in baseline_point(load_search_space("default").finetune, ce)[0]
    no_ema = load_config("default", overrides=["train.ema_decay=null"])
    assert (
        baseline_point(load_search_space("default").finetune, no_ema)[0]["train.ema_decay"] is None
    )
    # a value outside its range or choices is named, and the study gets no baseline trial
    low = load_config("default", overrides=["train.lr=1e-5", "augment.mixup=0.3"])
    assert baseline_point(load_search_space("default").finetune, low)[1] == [
        "train.lr=1e-05",
        "augment.mixup=0.3",
    ]


def test_a_new_study_starts_with_the_baseline_unless_it_lies_outside(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import optuna

    from skinclf.tune.study import enqueue_baseline

    space = load_search_space("default")
    job = SimpleNamespace(space=space, stage="finetune", cfg=load_config("default"))
    study = optuna.create_study(direction="maximize")
    assert enqueue_baseline(study, job) == []
    trial = study.ask()
    assert trial.user_attrs == {"baseline": True}
    assert trial.suggest_float("train.lr", 3e-4, 3e-3, log=True) == 1e-3
    outside = SimpleNamespace(
        space=space, stage="finetune", cfg=load_config("default", overrides=["train.lr=1e-5"])
    )
    other = optuna.create_study(direction="maximize")
    assert enqueue_baseline(other, outside) == ["train.lr=1e-05"]
    assert other.get_trials() == []
