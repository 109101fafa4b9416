"""A run's settings: pydantic models, presets in skinclf/configs/*.yaml, `key=value` overrides.

Every field can be set by a dotted `key=value` override on the command line (the value parsed as
YAML) or by a whole `--config FILE`; unknown keys are an error that names the key.
"""

from __future__ import annotations

import difflib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skinclf.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    format: Literal["auto", "ham10000", "pad-ufes-20", "isic2018", "folder", "csv"] = "auto"
    image_size: int = Field(192, description="Square input resolution in pixels (>= 32).")
    resize: Literal["squash", "center-crop"] = "squash"
    val: float = 0.15
    test: float = 0.15
    calib: float = 0.0
    normalize: Literal["backbone", "dataset"] = Field(
        "backbone",
        description="backbone: the mean/std the weights were trained with; dataset: the "
        "training split's own mean/std (the paper's recipe).",
    )

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {v}")
        return v


class ModelConfig(_Strict):
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = Field(None, description="Local checkpoint file instead of downloading.")
    head: Literal["linear", "mlp"] = Field(
        "linear", description="linear, or the paper's Dense(hidden)-ReLU-Dropout-Dense."
    )
    head_hidden: int = 1024
    dropout: float = 0.2
    drop_path_rate: float = 0.0


class LossConfig(_Strict):
    name: Literal["ce", "weighted_ce", "focal", "logit_adjusted"] = "ce"
    class_weights: Literal["inverse", "sqrt_inverse"] = "inverse"
    focal_gamma: float = 2.0
    tau: float = Field(1.0, description="Logit-adjustment strength (Menon et al. 2021).")
    label_smoothing: float = 0.0


class AugmentConfig(_Strict):
    d4: bool = Field(True, description="Random 90-degree rotations and flips (the dihedral group).")
    hflip: bool = False
    vflip: bool = False
    rotate: float = Field(0.0, description="Random rotation in degrees, uniform in [-r, r].")
    translate: float = Field(0.0, description="Random shift as a fraction of the image size.")
    scale: tuple[float, float] | None = Field(
        (0.7, 1.0), description="Random-resized-crop area range; null disables."
    )
    color_jitter: float = Field(0.1, description="Brightness/contrast/saturation strength.")
    mixup: float = Field(
        0.0, ge=0.0, description="Mixup Beta(a, a) parameter for fine-tuning batches; 0: off."
    )
    cutmix: float = Field(
        0.0, ge=0.0, description="CutMix Beta(a, a) parameter for fine-tuning batches; 0: off."
    )
    mix_prob: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of batches mixed when mixup or cutmix is on."
    )

    @property
    def enabled(self) -> bool:
        return bool(
            self.d4
            or self.hflip
            or self.vflip
            or self.rotate
            or self.translate
            or self.scale
            or self.color_jitter
        )


class TransferConfig(_Strict):
    """Stage 1: the head alone on the frozen backbone, from cached pooled features."""

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128


class PlateauConfig(_Strict):
    monitor: str = "val_accuracy"
    factor: float = 0.1
    patience: int = 10


class TrainConfig(_Strict):
    """Stage 2: fine-tuning (or, with transfer.epochs=0, the only stage)."""

    epochs: int = 8
    unfreeze: int | Literal["all"] = Field(
        "all", description="How many of the backbone's last stages to train ('all' or N)."
    )
    batch_size: int = 32
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "onecycle", "plateau", "constant"] = "cosine"
    warmup_epochs: float = 0.5
    plateau: PlateauConfig = PlateauConfig()
    grad_clip: float | None = 1.0
    sampler: Literal["uniform", "class_balanced", "sqrt_balanced"] = "uniform"
    frozen_cache: bool = Field(
        False,
        description="With unfreeze=N: compute the frozen stages once per image view, cache "
        "them, and fine-tune only the trainable stages (much faster on a CPU).",
    )
    frozen_views: int = Field(
        8, ge=1, le=64, description="Cached augmented views per training image (frozen_cache)."
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Exponential moving average of the weights after every step (e.g. 0.998); "
        "validation, checkpoints and predictions use the average. null: off.",
    )
    early_stopping_patience: int | None = None
    budget_minutes: float | None = Field(
        None, description="Wall-clock budget for all training; stops fine-tuning when spent."
    )
    monitor: Literal["val_balanced_accuracy", "val_accuracy", "val_loss"] = "val_balanced_accuracy"

    @model_validator(mode="after")
    def _frozen_cache_needs_frozen_stages(self) -> TrainConfig:
        if self.frozen_cache and self.unfreeze == "all":
            raise ValueError(
                "frozen_cache needs frozen stages to cache, but unfreeze is 'all'; "
                "set train.unfreeze to a number of stages (e.g. 5)"
            )
        return self


class TrainerConfig(_Strict):
    """Hardware and loop settings passed through to Lightning's Trainer."""

    precision: Literal["32", "bf16-mixed", "16-mixed", "auto"] = "auto"
    channels_last: bool = True
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    threads: int | None = None
    num_workers: int = 0
    logger: Literal["csv", "tensorboard", "wandb"] = "csv"

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v  # `trainer.precision=32` parses as a number


class PredictConfig(_Strict):
    tta: Literal["none", "d4"] = "none"
    batch_size: int = 64


class RunConfig(_Strict):
    preset: str = "default"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    transfer: TransferConfig = TransferConfig()
    train: TrainConfig = TrainConfig()
    trainer: TrainerConfig = TrainerConfig()
    predict: PredictConfig = PredictConfig()
    notes: str = ""


def preset_names() -> list[str]:
    files = resources.files("skinclf.configs").iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in files if p.name.endswith(".yaml"))


def _preset_dict(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"Unknown preset '{name}'; choose one of: {', '.join(preset_names())}.")
    text = resources.files("skinclf.configs").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `a.b=value` strings into a nested dict, values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"Override '{item}' is not of the form key=value (e.g. train.epochs=12)."
            )
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"Override '{item}': the value is not valid YAML ({exc}).") from exc
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _section(path: tuple[str, ...]) -> type[BaseModel] | None:
    """The settings model at dotted `path` (() is RunConfig), or None if there is none."""
    model: type[BaseModel] = RunConfig
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_key_hint(loc: tuple[str, ...]) -> str:
    """'; did you mean ...?' for the closest valid keys at that level, else the valid keys."""
    section = _section(loc[:-1])
    if section is None:
        return "."
    prefix = "".join(f"{p}." for p in loc[:-1])
    valid = list(section.model_fields)
    close = difflib.get_close_matches(loc[-1], valid, n=3, cutoff=0.6)
    if close:
        names = [f"'{prefix}{c}'" for c in close]
        either = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        return f"; did you mean {either}?"
    where = f"under '{prefix[:-1]}'" if prefix else "at the top level"
    return f"; the keys {where} are: {', '.join(valid)}."


def _validate(data: dict[str, Any], origin: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            hint = _unknown_key_hint(tuple(str(p) for p in err["loc"]))
            raise ConfigError(f"Unknown config key '{loc}' (from {origin}){hint}") from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"Config key '{loc}' (from {origin}): {msg}.") from None


def load_config(
    preset: str = "default",
    config_file: Path | str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Preset, then a config file, then `key=value` overrides, each on top of the last."""
    data = _preset_dict(preset)
    data["preset"] = preset
    return _layered(data, f"preset {preset}", config_file, overrides)


def _layered(
    data: dict[str, Any],
    origin: str,
    config_file: Path | str | None,
    overrides: list[str] | None,
) -> RunConfig:
    """`data`, then a config file, then `key=value` overrides, validated."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML ({exc}).") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of settings.")
        _deep_update(data, loaded)
        origin = str(path)
    if overrides:
        _deep_update(data, parse_overrides(overrides))
        origin = "the command line"
    return _validate(data, origin)


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def read_config(path: Path) -> RunConfig:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: is this a run folder written by skinclf train?")
    return _validate(yaml.safe_load(path.read_text()) or {}, str(path))


# Settings a resumed run may change: they decide how fast it runs and where it logs, not what it
# computes. Every other change would make the run something its config.yaml does not describe.
RESUMABLE_KEYS = ("trainer.threads", "trainer.num_workers", "trainer.logger")


def flat_settings(config: RunConfig) -> dict[str, Any]:
    """Every setting as dotted key -> value (JSON types), in definition order."""

    def flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flatten(config.model_dump(mode="json"), "")


def _show(value: Any) -> str:
    """A setting's value as it would be written on the command line."""
    return value if isinstance(value, str) and value else json.dumps(value)


def check_resume(saved: RunConfig, config: RunConfig, run: Path | str) -> None:
    """Refuse to resume run `run` (started with `saved`) under settings that change its results;
    only RESUMABLE_KEYS may differ."""
    old, new = flat_settings(saved), flat_settings(config)
    changed = [k for k in new if k not in RESUMABLE_KEYS and old.get(k) != new[k]]
    if not changed:
        return
    key = changed[0]
    more = f" (and {', '.join(changed[1:])})" if changed[1:] else ""
    raise ConfigError(
        f"Cannot resume {run} with {key}={_show(new[key])}{more}: the run was started with "
        f"{key}={_show(old.get(key))}, and a resumed run keeps the settings of its config.yaml "
        f"(only {', '.join(RESUMABLE_KEYS)} may change); resuming does not extend a run or change "
        "its recipe, so start a new run (another --out) for that."
    )


def load_resume_config(
    run: Path | str,
    preset: str | None = None,
    config_file: Path | str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """The settings to resume run folder `run` with: its own config.yaml, then a config file,
    then `key=value` overrides; refused (ConfigError) if they change the run's results."""
    path = Path(run) / "config.yaml"
    saved = read_config(path)
    data = saved.model_dump(mode="json")
    if preset is not None:
        data["preset"] = preset
    config = _layered(data, str(path), config_file, overrides)
    check_resume(saved, config, run)
    return config

