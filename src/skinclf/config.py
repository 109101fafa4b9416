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

from skinclf import atomic
from skinclf.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    format: Literal["auto", "ham10000", "pad-ufes-20", "isic2018", "folder", "csv"] = Field(
        "auto", description="Dataset format (README, Data formats); auto: detected."
    )
    image_size: int = Field(192, description="Square input resolution in pixels (>= 32).")
    resize: Literal["squash", "center-crop"] = Field(
        "squash", description="How the decode cache makes images square: resize or centre crop."
    )
    val: float = Field(
        0.15, ge=0, lt=1, description="Share of images in validation (a new split only)."
    )
    test: float = Field(0.15, ge=0, lt=1, description="Share of images in test (a new split only).")
    calib: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of images in a calibration split for SGR (a new split only).",
    )
    normalize: Literal["backbone", "dataset"] = Field(
        "backbone",
        description="backbone: the mean/std the weights were trained with; dataset: the "
        "training split's own mean/std (the paper's recipe).",
    )
    color_constancy: Literal["none", "shades_of_gray"] = Field(
        "none",
        description="shades_of_gray: divide each image by its illuminant estimate (Minkowski "
        "norm p = 6, Finlayson & Trezzi 2004) before normalising; part of the model, so "
        "predict, serve and ONNX apply it alike.",
    )

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {v}")
        return v


class ModelConfig(_Strict):
    backbone: str = Field(
        "efficientnet_lite0", description="`skinclf models list`, or any timm model name."
    )
    pretrained: bool = Field(True, description="Start from ImageNet weights; false: random.")
    weights: str | None = Field(None, description="Local checkpoint file instead of downloading.")
    head: Literal["linear", "mlp"] = Field(
        "linear", description="linear, or the paper's Dense(hidden)-ReLU-Dropout-Dense."
    )
    head_hidden: int = Field(1024, gt=0, description="Hidden width of the mlp head.")
    dropout: float = Field(
        0.2, ge=0, lt=1, description="Dropout before the head's last linear layer."
    )
    drop_path_rate: float = Field(
        0.0, ge=0, lt=1, description="Stochastic depth of the backbone (timm)."
    )


class LossConfig(_Strict):
    name: Literal["ce", "weighted_ce", "focal", "logit_adjusted"] = Field(
        "ce", description="Training loss (both stages)."
    )
    class_weights: Literal["inverse", "sqrt_inverse"] = Field(
        "inverse", description="weighted_ce's class weights: inverse class frequency or its root."
    )
    focal_gamma: float = Field(2.0, ge=0, description="Focusing parameter of the focal loss.")
    tau: float = Field(1.0, ge=0, description="Logit-adjustment strength (Menon et al. 2021).")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy."
    )
    distill: str | None = Field(
        None,
        description="Knowledge distillation: a predictions file of a teacher (e.g. a cv folder's "
        "oof_predictions.csv, or `skinclf predict` of an ensemble on the training images) whose "
        "probabilities cover every training image; both stages then train on the target "
        "(1 - distill_weight) * one-hot label + distill_weight * teacher probabilities.",
    )
    distill_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the teacher's probabilities in the target.",
    )

    @model_validator(mode="after")
    def _distill_needs_a_cross_entropy(self) -> LossConfig:
        if self.distill and self.name == "focal":
            raise ValueError(
                "distill trains on soft targets, which the focal loss does not take; use "
                "loss.name ce, weighted_ce or logit_adjusted"
            )
        return self


class AugmentConfig(_Strict):
    d4: bool = Field(True, description="Random 90-degree rotations and flips (the dihedral group).")
    hflip: bool = Field(False, description="Random horizontal flips.")
    vflip: bool = Field(False, description="Random vertical flips.")
    rotate: float = Field(
        0.0, ge=0, le=180, description="Random rotation in degrees, uniform in [-r, r]."
    )
    translate: float = Field(
        0.0, ge=0, lt=1, description="Random shift as a fraction of the image size."
    )
    scale: tuple[float, float] | None = Field(
        (0.7, 1.0), description="Random-resized-crop area range; null disables."
    )
    color_jitter: float = Field(0.1, ge=0, description="Brightness/contrast/saturation strength.")
    mixup: float = Field(
        0.0, ge=0.0, description="Mixup Beta(a, a) parameter for fine-tuning batches; 0: off."
    )
    cutmix: float = Field(
        0.0,
        ge=0.0,
        description="CutMix Beta(a, a) parameter for fine-tuning batches; 0: off.",
    )
    mix_prob: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of batches mixed when mixup or cutmix is on.",
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

    epochs: int = Field(
        30, ge=0, description="Epochs of the head on frozen features; 0: no stage 1."
    )
    lr: float = Field(1e-3, gt=0, description="Stage-1 learning rate (AdamW).")
    weight_decay: float = Field(1e-4, ge=0, description="Stage-1 weight decay.")
    batch_size: int = Field(128, gt=0, description="Stage-1 batch size.")


class PlateauConfig(_Strict):
    monitor: str = Field("val_accuracy", description="Metric ReduceLROnPlateau follows.")
    factor: float = Field(
        0.1, gt=0, lt=1, description="Factor applied to the learning rates on a plateau."
    )
    patience: int = Field(10, ge=0, description="Epochs without improvement before the factor.")


class TrainConfig(_Strict):
    """Stage 2: fine-tuning (or, with transfer.epochs=0, the only stage)."""

    epochs: int = Field(8, ge=0, description="Fine-tuning epochs (stage 2); 0: no fine-tuning.")
    unfreeze: int | Literal["all"] = Field(
        "all", description="How many of the backbone's last stages to train ('all' or N)."
    )
    batch_size: int = Field(32, gt=0, description="Fine-tuning batch size.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="Fine-tuning optimiser (sgd: Nesterov momentum 0.9)."
    )
    lr: float = Field(1e-3, gt=0, description="Learning rate of the head in fine-tuning.")
    backbone_lr: float = Field(
        1e-4, gt=0, description="Learning rate of the backbone in fine-tuning."
    )
    weight_decay: float = Field(1e-4, ge=0, description="Fine-tuning weight decay.")
    schedule: Literal["cosine", "onecycle", "plateau", "constant"] = Field(
        "cosine", description="Learning-rate schedule (per step; plateau: per epoch)."
    )
    warmup_epochs: float = Field(
        0.5, ge=0, description="Linear warm-up of cosine (onecycle: its rising share), in epochs."
    )
    plateau: PlateauConfig = PlateauConfig()
    grad_clip: float | None = Field(1.0, gt=0, description="Gradient-norm clipping; null: off.")
    sampler: Literal["uniform", "class_balanced", "sqrt_balanced"] = Field(
        "uniform", description="uniform: a shuffle per epoch; else draws weighted 1/n or 1/sqrt(n)."
    )
    frozen_cache: bool = Field(
        False,
        description="With unfreeze=N: compute the frozen stages once per image view, cache "
        "them, and fine-tune only the trainable stages (much faster on a CPU).",
    )
    frozen_views: int = Field(
        8,
        gt=0,
        ge=1,
        le=64,
        description="Cached augmented views per training image (frozen_cache).",
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Exponential moving average of the weights after every step (e.g. 0.998); "
        "validation, checkpoints and predictions use the average. null: off.",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop after this many epochs without improvement of monitor; null: off.",
    )
    budget_minutes: float | None = Field(
        None, gt=0, description="Wall-clock budget for all training; stops fine-tuning when spent."
    )
    monitor: Literal["val_balanced_accuracy", "val_accuracy", "val_loss"] = Field(
        "val_balanced_accuracy", description="Validation metric that picks best.ckpt."
    )
    checkpoint: Literal["best", "last"] = Field(
        "best",
        description="best: the epoch with the best monitor on validation, in both stages; last: "
        "the last epoch (fixed epoch counts, validation only reported; cross-validation's folds, "
        "whose validation is the held-out fold).",
    )

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

    precision: Literal["32", "bf16-mixed", "16-mixed", "auto"] = Field(
        "auto", description="auto: fp32 CPU training, bf16 CPU inference where native, GPU mixed."
    )
    channels_last: bool = Field(True, description="channels_last memory format (faster on CPU).")
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu...")
    devices: int | str = Field("auto", description="Devices per node (Lightning).")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ddp_spawn...")
    num_nodes: int = Field(1, gt=0, description="Nodes for multi-node DDP.")
    threads: int | None = Field(None, gt=0, description="torch CPU threads; null: torch's default.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    logger: Literal["csv", "tensorboard", "wandb"] = Field(
        "csv", description="CSV always, plus tensorboard or wandb (extras of the same names)."
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v  # `trainer.precision=32` parses as a number


class PredictConfig(_Strict):
    tta: Literal["none", "d4"] = Field(
        "none", description="Test-time augmentation: none, or the mean of the 8 D4 views."
    )
    batch_size: int = Field(64, gt=0, description="Inference batch size (also validation).")


class RunConfig(_Strict):
    preset: str = Field("default", description="The preset the settings started from.")
    seed: int = Field(0, description="Seed of the split, initialisation, sampling, augmentation.")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    transfer: TransferConfig = TransferConfig()
    train: TrainConfig = TrainConfig()
    trainer: TrainerConfig = TrainerConfig()
    predict: PredictConfig = PredictConfig()
    notes: str = Field("", description="Free text kept in the run's config.yaml.")

    @model_validator(mode="after")
    def _trains_something(self) -> RunConfig:
        if self.transfer.epochs == 0 and self.train.epochs == 0:
            raise ValueError(
                "transfer.epochs and train.epochs are both 0, so the run would train nothing "
                "and report an untrained head; give the head (transfer.epochs) or fine-tuning "
                "(train.epochs) at least one epoch"
            )
        return self


class SearchParam(_Strict):
    """One searched setting of `skinclf tune`: a range (`low`, `high`, optional `log` scale and
    `step`) or a list of `choices`; `when` searches it only while other settings (searched
    above it, or fixed) have one of the listed values."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    when: dict[str, list[Any]] | None = None


class SearchSpaces(_Strict):
    """The `tune:` section of a preset or config file: one search space per `--stage`, each a
    mapping of dotted setting name -> SearchParam."""

    head: dict[str, SearchParam] = {}
    finetune: dict[str, SearchParam] = {}


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
        where = f"Config key '{loc}'" if loc else "The settings"
        raise ConfigError(f"{where} (from {origin}): {msg}.") from None


def load_config(
    preset: str = "default",
    config_file: Path | str | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Preset, then a config file, then `key=value` overrides, each on top of the last."""
    data = _preset_dict(preset)
    data["preset"] = preset
    data.pop(SEARCH_SECTION, None)  # skinclf tune's search spaces (load_search_space)
    return _layered(data, f"preset {preset}", config_file, overrides)


SEARCH_SECTION = "tune"


def load_search_space(
    preset: str = "default", config_file: Path | str | None = None
) -> SearchSpaces:
    """The search spaces of `skinclf tune`: the preset's `tune:` section; a stage's space in
    the config file's `tune:` section replaces the preset's whole."""
    spaces = dict(_preset_dict(preset).get(SEARCH_SECTION) or {})
    origin = f"preset {preset}"
    if config_file is not None:
        loaded = _read_config_file(Path(config_file))
        if loaded.get(SEARCH_SECTION):
            spaces.update(loaded[SEARCH_SECTION])
            origin = str(config_file)
    try:
        return SearchSpaces.model_validate(spaces)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"Search space key 'tune.{loc}' (from {origin}): {msg}.") from None


def search_space_origin(preset: str, config_file: Path | str | None, stage: str) -> str:
    """Where the search space of `stage` comes from, for messages."""
    if config_file is not None and Path(config_file).is_file():
        section = _read_config_file(Path(config_file)).get(SEARCH_SECTION) or {}
        if isinstance(section, dict) and stage in section:
            return str(config_file)
    return f"preset {preset}"


def _read_config_file(path: Path) -> dict[str, Any]:
    """A --config file's mapping (one-sentence errors)."""
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML ({exc}).") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings.")
    return loaded


def _layered(
    data: dict[str, Any],
    origin: str,
    config_file: Path | str | None,
    overrides: list[str] | None,
) -> RunConfig:
    """`data`, then a config file, then `key=value` overrides, validated."""
    if config_file is not None:
        path = Path(config_file)
        loaded = _read_config_file(path)
        loaded.pop(SEARCH_SECTION, None)  # skinclf tune's search spaces (load_search_space)
        _deep_update(data, loaded)
        origin = str(path)
    if overrides:
        _deep_update(data, parse_overrides(overrides))
        origin = "the command line"
    return _validate(data, origin)


def save_config(config: RunConfig, path: Path) -> None:
    """Write `config` to `path` as YAML, atomically (`skinclf.atomic`)."""
    atomic.write_text(path, config_yaml(config))


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


def show_value(value: Any) -> str:
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
        f"Cannot resume {run} with {key}={show_value(new[key])}{more}: the run was started "
        f"with {key}={show_value(old.get(key))}, and a resumed run keeps the settings of its "
        f"config.yaml (only {', '.join(RESUMABLE_KEYS)} may change); resuming does not extend a "
        "run or change its recipe, so start a new run (another --out) for that."
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


def config_yaml(config: RunConfig) -> str:
    """The settings as the YAML that save_config writes (and --config reads)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, FieldInfo) of every leaf setting of `model`, in definition order."""
    out: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += leaf_fields(annotation, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", info))
    return out


def setting_annotations() -> dict[str, Any]:
    """Every leaf setting's dotted key -> its type annotation (e.g. for search-space checks)."""
    return {key: info.annotation for key, info in leaf_fields(RunConfig)}
