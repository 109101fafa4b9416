"""`skinclf.load(MODEL_DIR).predict(images)`: the rows of the package API, the same
probabilities and decisions as `skinclf predict MODEL_DIR`, every kind of input, and one
sentence for each unusable image."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import skinclf
from skinclf.classes import CLASSES
from skinclf.contracts.selective import REASON_MESSAGES
from skinclf.errors import ConfigError, DataError
from skinclf.predict import predict_file

ROW_KEYS = {
    "image",
    "top_class",
    "probabilities",
    "scores",
    "abstain",
    "abstain_reason",
    "message",
    "model_id",
    "skinclf_version",
}


@pytest.fixture(scope="module")
def model(exported_model: Path):
    return skinclf.load(exported_model)


@pytest.fixture
def images(folder_sample: Path, tmp_path: Path) -> list[Path]:
    dest = tmp_path / "images"
    dest.mkdir()
    for f in sorted(folder_sample.rglob("*.jpg"))[::2]:
        shutil.copy(f, dest / f"{f.parent.name}_{f.name}")
    return sorted(dest.iterdir())


def test_model_attributes(model, exported_model: Path) -> None:
    manifest = json.loads((exported_model / "skinclf-model.json").read_text())
    assert model.classes == tuple(CLASSES)
    assert model.precision == manifest["inference"]["precision"] in ("32", "bf16-mixed")
    assert (
        model.model_id
        == json.loads((exported_model / "skinclf-model.json").read_text())["model_id"]
    )
    assert model.card == json.loads((exported_model / "model_card.json").read_text())
    assert set(model.thresholds) == {"confidence", "ood"}
    assert model.thresholds["ood"]["score"] == "mahalanobis+msp"


def test_rows_match_predict(
    model, exported_model: Path, images: list[Path], train_cache: Path, tmp_path: Path
) -> None:
    rows = model.predict(images)
    assert [r["image"] for r in rows] == [p.name for p in images]
    for row in rows:
        assert set(row) == ROW_KEYS
        probs = row["probabilities"]
        assert list(probs) == list(CLASSES) and sum(probs.values()) == pytest.approx(1.0)
        assert row["top_class"] == max(probs, key=probs.get)
        assert row["abstain"] == (row["abstain_reason"] != "")
        assert row["message"] == REASON_MESSAGES.get(row["abstain_reason"], "")
        assert {"msp", "max_logit", "margin", "neg_entropy", "doctor", "mahalanobis"} <= set(
            row["scores"]
        )
    frame = predict_file(
        [exported_model],
        tmp_path / "p.csv",
        data=images[0].parent,
        cache_dir=train_cache,
        progress=False,
    ).set_index("image_id")
    frame = frame.loc[[r["image"] for r in rows]]
    api = np.array([list(r["probabilities"].values()) for r in rows])
    assert np.abs(api - frame[[f"prob_{c}" for c in CLASSES]].to_numpy()).max() <= 1e-5
    for name in rows[0]["scores"]:
        np.testing.assert_allclose([r["scores"][name] for r in rows], frame[f"conf_{name}"])
    assert [r["abstain"] for r in rows] == frame["abstain"].tolist()
    assert [r["abstain_reason"] for r in rows] == frame["abstain_reason"].fillna("").tolist()


def test_paths_bytes_pillow_and_arrays_agree(model, images: list[Path]) -> None:
    ref = model.predict(images)
    inputs = {
        "bytes": [p.read_bytes() for p in images],
        "pillow": [Image.open(p) for p in images],
        "array": [np.asarray(Image.open(p).convert("RGB")) for p in images],
    }
    for kind, batch in inputs.items():
        rows = model.predict(batch, names=[p.name for p in images])
        for a, b in zip(ref, rows, strict=True):
            assert a["image"] == b["image"]
            diff = max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in CLASSES)
            assert diff <= 1e-6, kind
    assert model.predict(inputs["bytes"])[0]["image"] == "image-0"
    pixels = model.preprocess(images[0])
    assert pixels.shape == (model.image_size, model.image_size, 3) and pixels.dtype == np.uint8
    assert model.predict([]) == []


def test_unusable_images_are_one_sentence(
    model, images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = images[0].read_bytes()
    cases = {
        "empty.jpg": (b"", "is empty"),
        "junk.jpg": (b"not an image at all", "is not a readable image file"),
        "cut.jpg": (data[: len(data) // 2], "is truncated or corrupt|cannot be decoded"),
        "floats": (np.zeros((8, 8, 3), np.float32), "is a float32 array"),
    }
    for name, (image, reason) in cases.items():
        with pytest.raises(DataError, match=rf"^{name}: image ({reason})"):
            model.predict([image], names=[name])
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300)).save(buffer, format="PNG")
    monkeypatch.setenv("SKINCLF_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match="big.png: image declares 300 x 300 pixels"):
        model.predict([buffer.getvalue()], names=["big.png"])
    with pytest.raises(ConfigError, match="2 images but 1 names"):
        model.predict(images[:2], names=["a"])


def _copy(exported_model: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(exported_model, tmp_path / "model"))


def test_a_damaged_or_inconsistent_package_is_one_sentence(
    exported_model: Path, tmp_path: Path
) -> None:
    import torch

    from skinclf.errors import DataError

    folder = _copy(exported_model, tmp_path)
    manifest_path = folder / "skinclf-model.json"
    manifest = json.loads(manifest_path.read_text())
    for bad, match in (
        ({**manifest, "format_version": True}, "format version"),
        ({k: v for k, v in manifest.items() if k != "members"}, "missing members"),
        ({**manifest, "preprocessing": {**manifest["preprocessing"], "image_size": 99}},
         "differ from the manifest"),
    ):  # fmt: skip
        manifest_path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=match):
            skinclf.load(folder)
    manifest_path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(DataError, match="UTF-8"):
        skinclf.load(folder)
    # a member that would unpickle code is refused, not run
    manifest_path.write_text(json.dumps(manifest))
    member = folder / manifest["members"][0]
    torch.save({"state_dict": {}, "hook": _Opaque()}, member)
    with pytest.raises(DataError, match="cannot be read as a checkpoint"):
        skinclf.load(folder)


class _Opaque:
    """An object torch.load(weights_only=True) refuses to unpickle."""


def test_the_gate_statistics_are_read_once_at_load(exported_model: Path, tmp_path: Path) -> None:
    from skinclf.errors import DataError

    folder = _copy(exported_model, tmp_path)
    model = skinclf.load(folder)
    if model.gate_stats is None:
        pytest.skip("the session's exported model has no feature-score gate")
    stats = folder / model.selective.gate.stats_file
    stats.unlink()  # removed after loading: predictions still use what was loaded
    rows = model.predict([np.zeros((40, 40, 3), np.uint8)])
    assert rows[0]["abstain_reason"] in ("", "unfamiliar", "uncertain")
    with pytest.raises(DataError, match="is missing"):
        skinclf.load(folder)
