"""Where a backbone's pretrained weights come from, probed before anything is written.

Whether weights load without network (a pip package, or timm's / huggingface_hub's download
cache), and, when a download is needed, a probe of the server that fails within seconds in one
sentence (or falls back to the cache) instead of huggingface_hub's minute of retries; the short
timeouts and the offline switch that `create_backbone` wraps timm's download in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from skinclf.errors import SkinclfError

if TYPE_CHECKING:
    from skinclf.models.registry import BackboneInfo

HUB_PROBE_SECONDS = 3.0  # how long a weights server may take to accept a connection
_PROBES: dict[tuple[str, int], tuple[float, bool]] = {}  # (host, port) -> (when, answered)


def download_error(name: str, why: str) -> SkinclfError:
    """One sentence: `name`'s weights could not be downloaded, and what works offline."""
    from skinclf.models.registry import offline_backbones  # the registry imports this module

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
def hub_offline(enabled: bool) -> Iterator[None]:
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
def short_hub_timeouts(enabled: bool = True) -> Iterator[None]:
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
    raise download_error(info.name, why)


def weights_on_disk(info: BackboneInfo) -> bool:
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
