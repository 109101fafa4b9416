"""Decode cache: reuse, rebuild on change, resize policies, atomic writes, modes, pickling."""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skinclf.data import cache as cache_mod
from skinclf.data.cache import DecodedImages, build_cache, cache_key, decode_image
from skinclf.errors import ConfigError, DataError

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 0), (0, 90, 160)]


def write_images(folder, colours=COLOURS, size=(24, 16)) -> pd.DataFrame:
    """Plain-coloured images of several formats; returns a dataset table over them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, colour in enumerate(colours):
        suffix = ".png" if k % 2 else ".jpg"
        path = folder / f"img{k}{suffix}"
        Image.new("RGB", size, colour).save(path)
        rows.append({"image_id": f"img{k}", "path": str(path), "label": "nv", "group": f"g{k}"})
    return pd.DataFrame(rows)


@pytest.fixture
def counting(monkeypatch):
    """Count calls to the decoder the cache uses."""
    calls = []
    real = cache_mod.decode_image

    def counted(path, size, resize="squash"):
        calls.append(str(path))
        return real(path, size, resize)

    monkeypatch.setattr(cache_mod, "decode_image", counted)
    return calls


def test_build_shapes_content_and_index(tmp_path):
    table = write_images(tmp_path / "imgs")
    decoded = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(decoded.images, np.memmap)
    assert decoded.images.shape == (5, 8, 8, 3) and decoded.images.dtype == np.uint8
    assert not decoded.images.flags.writeable
    assert decoded.path.is_file() and decoded.path.parent.parent == tmp_path / "c"
    assert len(decoded) == 5
    for k, colour in enumerate(COLOURS):
        row = decoded.rows([f"img{k}"])[0]
        # JPEG is lossy: plain colours come back within a few levels.
        assert np.abs(decoded.images[row].astype(int) - colour).max() <= 6
    with pytest.raises(DataError, match="not in the decode cache"):
        decoded.rows(["nope"])


def test_second_call_reuses_without_decoding(tmp_path, counting):
    table = write_images(tmp_path / "imgs")
    first = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    assert len(counting) == 5 and first.build_seconds is not None
    shuffled = table.sample(frac=1.0, random_state=1)  # row order does not matter
    second = build_cache(shuffled, 8, cache_dir=tmp_path / "c", progress=False)
    assert len(counting) == 5  # nothing decoded again
    assert second.build_seconds is None
    assert second.key == first.key and second.path == first.path
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    # Another size or policy is another cache.
    other = build_cache(table, 6, resize="center-crop", cache_dir=tmp_path / "c", progress=False)
    assert len(counting) == 10 and other.key != first.key


def test_changed_source_rebuilds(tmp_path, counting):
    table = write_images(tmp_path / "imgs")
    first = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    path = table.loc[0, "path"]
    Image.new("RGB", (24, 16), (255, 255, 255)).save(path, format="JPEG")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    assert len(counting) == 10
    assert second.key != first.key
    assert second.images[second.rows(["img0"])[0]].min() >= 245  # the new content


def test_the_key_follows_the_bytes_not_the_modification_time(tmp_path):
    """A dataset copied afresh (new modification times, same bytes) keeps its cache; one byte
    changed, even under the same size and time, gives a new key."""
    table = write_images(tmp_path / "imgs")
    before = cache_key(table, 8, "squash")
    path = table.loc[2, "path"]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache_key(table, 8, "squash") == before
    (tmp_path / "copy").mkdir()
    moved = table.assign(path=[shutil.copy2(p, tmp_path / "copy") for p in table["path"]])
    assert cache_key(moved, 8, "squash") == before
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache_key(table, 8, "squash") != before
    assert cache_key(table, 8, "squash") != cache_key(table, 8, "center-crop")


def striped(path) -> None:
    """40 x 20: red columns 0-9 and 30-39, a green 20 x 20 square in the middle."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    pixels[:, 10:30] = (0, 255, 0)
    Image.fromarray(pixels).save(path)


def test_center_crop_keeps_the_centred_square(tmp_path):
    striped(tmp_path / "s.png")
    out = decode_image(tmp_path / "s.png", 10, "center-crop")
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    inner = out[:, 1:-1].astype(int)  # away from the edge the filter may touch
    assert (inner[..., 1] >= 250).all() and (inner[..., 0] <= 5).all()  # all green


def test_squash_keeps_everything_resized(tmp_path):
    striped(tmp_path / "s.png")
    out = decode_image(tmp_path / "s.png", 8, "squash").astype(int)
    assert out.shape == (8, 8, 3)
    assert (out[:, 0, 0] >= 250).all() and (out[:, -1, 0] >= 250).all()  # red edges
    assert (out[:, 3:5, 1] >= 250).all() and (out[:, 3:5, 0] <= 5).all()  # green middle


def test_rgba_and_greyscale_come_out_rgb(tmp_path):
    Image.new("RGBA", (12, 12), (10, 200, 30, 255)).save(tmp_path / "a.png")
    Image.new("L", (12, 12), 100).save(tmp_path / "l.png")
    Image.new("P", (12, 12), 0).save(tmp_path / "p.png")
    rgba = decode_image(tmp_path / "a.png", 6)
    grey = decode_image(tmp_path / "l.png", 6)
    assert rgba.shape == grey.shape == (6, 6, 3)
    assert (rgba == (10, 200, 30)).all()
    assert (grey == 100).all()
    assert decode_image(tmp_path / "p.png", 6).shape == (6, 6, 3)


def test_no_partial_file_is_ever_visible(tmp_path, monkeypatch):
    table = write_images(tmp_path / "imgs")
    folder = tmp_path / "c" / "decoded"
    seen = []
    real = cache_mod.decode_image

    def watching(path, size, resize="squash"):
        seen.append(sorted(p.suffix for p in folder.iterdir() if p.suffix in (".npy", ".json")))
        return real(path, size, resize)

    monkeypatch.setattr(cache_mod, "decode_image", watching)
    decoded = build_cache(table, 8, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert seen == [[]] * 5  # while decoding: neither final file exists
    assert decoded.path.is_file() and decoded.path.with_suffix(".json").is_file()
    assert list(folder.glob("*.tmp")) == []


def test_failed_build_leaves_nothing_and_names_the_file(tmp_path):
    table = write_images(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    table = pd.concat(
        [table, pd.DataFrame([{"image_id": "broken", "path": str(bad), "label": "nv"}])]
    )
    with pytest.raises(DataError, match="broken.jpg"):
        build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    leftovers = [p.name for p in (tmp_path / "c" / "decoded").iterdir()]
    assert not [n for n in leftovers if n.endswith((".npy", ".json", ".tmp"))]


def test_parallel_callers_decode_once(tmp_path, counting):
    table = write_images(tmp_path / "imgs")
    results: list[DecodedImages] = []

    def call() -> None:
        results.append(build_cache(table, 8, cache_dir=tmp_path / "c", progress=False))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert len(counting) == 5  # one builder; the others waited on the lock and reused
    assert len({r.path for r in results}) == 1


def test_pickle_reopens_instead_of_copying(tmp_path):
    table = write_images(tmp_path / "imgs", colours=COLOURS * 8)
    table["image_id"] = [f"i{k}" for k in range(len(table))]
    decoded = build_cache(table, 32, cache_dir=tmp_path / "c", progress=False)
    blob = pickle.dumps(decoded)
    assert len(blob) < decoded.images.nbytes / 10
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(back.images), np.asarray(decoded.images))


def test_mean_std_hand_computed(tmp_path):
    table = write_images(tmp_path / "imgs", colours=[(0, 0, 0), (255, 255, 255)])
    table["path"] = [str(tmp_path / "imgs" / f"x{k}.png") for k in range(2)]
    for k, value in enumerate((0, 255)):
        Image.new("RGB", (5, 5), (value, value, value)).save(table.loc[k, "path"])
    decoded = build_cache(table, 4, cache_dir=tmp_path / "c", progress=False)
    mean, std = decoded.mean_std()
    np.testing.assert_allclose(mean, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(std, [0.5, 0.5, 0.5])
    mean0, std0 = decoded.mean_std(decoded.rows(["img0"]))
    np.testing.assert_allclose(mean0, 0.0)
    np.testing.assert_allclose(std0, 0.0)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINCLF_CACHE_DIR", str(tmp_path / "env"))
    assert cache_mod.default_cache_dir() == tmp_path / "env"
    table = write_images(tmp_path / "imgs", colours=COLOURS[:2])
    decoded = build_cache(table, 4, progress=False)
    assert decoded.path.is_relative_to(tmp_path / "env")
    monkeypatch.delenv("SKINCLF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_cache_dir() == tmp_path / "xdg" / "skinclf"


def test_bad_input_is_a_clear_error(tmp_path):
    table = write_images(tmp_path / "imgs", colours=COLOURS[:2])
    with pytest.raises(ConfigError, match="resize policy"):
        build_cache(table, 8, resize="stretch", cache_dir=tmp_path / "c", progress=False)
    missing = table.assign(path=[str(tmp_path / "gone.jpg"), table.loc[1, "path"]])
    with pytest.raises(DataError, match="gone.jpg"):
        build_cache(missing, 8, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="more than once"):
        build_cache(pd.concat([table, table]), 8, cache_dir=tmp_path / "c", progress=False)


def test_large_jpeg_goes_through_draft_decoding(tmp_path):
    striped(tmp_path / "s.png")
    Image.open(tmp_path / "s.png").resize((320, 160), Image.Resampling.NEAREST).save(
        tmp_path / "s.jpg", quality=95
    )
    out = decode_image(tmp_path / "s.jpg", 10, "center-crop").astype(int)
    assert out.shape == (10, 10, 3)
    assert (out[:, 1:-1, 1] >= 235).all() and (out[:, 1:-1, 0] <= 20).all()


def test_cli_cache_builds_then_reuses(tmp_path):
    from typer.testing import CliRunner

    from skinclf.cli import app
    from skinclf.data.synthetic import write_sample

    root = write_sample(tmp_path / "ham", format="ham10000", n=3, seed=0, size=16)
    args = ["data", "cache", str(root), "--size", "12", "--cache-dir", str(tmp_path / "c")]
    first = CliRunner().invoke(app, [*args, "--resize", "center-crop", "--workers", "2"])
    assert first.exit_code == 0, first.output
    assert "Decoded 21 images" in first.output and "images/s" in first.output
    assert len(list((tmp_path / "c" / "decoded").glob("12px-center-crop-*.npy"))) == 1
    second = CliRunner().invoke(app, [*args, "--resize", "center-crop"])
    assert second.exit_code == 0 and "Reused the cache of 21 images" in second.output


def test_skip_unreadable_records_them_and_training_still_refuses(tmp_path):
    table = write_images(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"")
    table = pd.concat(
        [table, pd.DataFrame([{"image_id": "broken", "path": str(bad), "label": "nv"}])]
    )
    decoded = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False, skip_unreadable=True)
    assert decoded.unreadable == {"broken": "is empty (0 bytes)"}
    assert not decoded.images[decoded.rows(["broken"])[0]].any()  # a black row
    assert np.abs(decoded.images[decoded.rows(["img0"])[0]].astype(int) - COLOURS[0]).max() <= 6
    reused = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False, skip_unreadable=True)
    assert reused.build_seconds is None and reused.unreadable == decoded.unreadable
    # training (the default) refuses the same cache, naming the file as a fresh build does
    with pytest.raises(DataError, match=r"broken\.jpg: the file is empty \(0 bytes\)"):
        build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(DataError, match=r"broken\.jpg: the file is empty \(0 bytes\)"):
        build_cache(table, 8, cache_dir=tmp_path / "fresh", progress=False)


@pytest.mark.parametrize(
    ("error", "name"),
    [(struct.error("unpack requires a buffer"), "struct.error"), (EOFError(), "EOFError"),
     (IndexError, "IndexError")],
)  # fmt: skip
def test_any_decoder_exception_is_one_image_error(tmp_path, monkeypatch, error, name):
    """Pillow raises more than OSError on corrupt data (EOFError, struct.error, IndexError):
    each becomes the ImageError / DataError sentence naming the file and the exception type."""
    from PIL import ImageFile

    from skinclf.data.check import verify_image
    from skinclf.data.formats import ImageError, open_rgb

    table = write_images(tmp_path / "imgs", colours=COLOURS[:2])
    path = table.loc[0, "path"]

    def corrupt(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", corrupt)
    with pytest.raises(ImageError, match=rf"img0\.jpg: image cannot be decoded \({name}"):
        open_rgb(path)
    assert verify_image(path)[2].startswith(f"cannot be decoded ({name}")
    with pytest.raises(DataError, match=r"Cannot decode image .*img0\.jpg: the file cannot"):
        build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    decoded = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False, skip_unreadable=True)
    assert name in decoded.unreadable["img0"] and name in decoded.unreadable["img1"]


def test_decode_loop_turns_any_exception_into_a_skipped_image(tmp_path, monkeypatch):
    table = write_images(tmp_path / "imgs", colours=COLOURS[:2])
    real = cache_mod.decode_image

    def resize_fails(path, size, resize="squash"):
        if str(path).endswith("img1.png"):
            raise IndexError("tile index out of range")
        return real(path, size, resize)

    monkeypatch.setattr(cache_mod, "decode_image", resize_fails)
    decoded = build_cache(table, 8, cache_dir=tmp_path / "c", progress=False, skip_unreadable=True)
    assert decoded.unreadable == {"img1": "cannot be decoded (IndexError: tile index out of range)"}
    with pytest.raises(DataError, match=r"img1\.png: the file cannot be decoded \(IndexError"):
        build_cache(table, 8, cache_dir=tmp_path / "fresh", progress=False)


def test_rebuild_removes_only_the_temporary_files_of_dead_builders(tmp_path):
    """A dead builder's temporary files go (atomic.remove_stale_temps); a live process's stay."""
    import subprocess
    import sys

    table = write_images(tmp_path / "imgs", colours=COLOURS[:2])
    folder = tmp_path / "c" / "decoded"
    folder.mkdir(parents=True)
    stem = f"8px-squash-{cache_key(table, 8, 'squash')}"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = [folder / f"{stem}.{ext}.{dead}-0000abcd.tmp" for ext in ("npy", "json")]
    live = folder / f"{stem}.npy.{os.getppid()}-0000abcd.tmp"
    for p in (*stale, live):
        p.write_bytes(b"half")
    build_cache(table, 8, cache_dir=tmp_path / "c", progress=False)
    assert not any(p.exists() for p in stale) and live.exists()


def test_image_over_the_pixel_limit_is_readable_once_the_limit_is_raised(tmp_path, monkeypatch):
    """The limit is part of the key: an image refused under a low limit is not refused (or
    skipped) for ever by the cache built then."""
    from skinclf.data.formats import MAX_PIXELS_ENV

    table = write_images(tmp_path / "imgs", colours=COLOURS[:2], size=(24, 16))
    kwargs = {"cache_dir": tmp_path / "c", "progress": False}
    monkeypatch.setenv(MAX_PIXELS_ENV, str(24 * 16 - 1))
    with pytest.raises(DataError, match=r"img0\.jpg: the file declares 24 x 16 pixels"):
        build_cache(table, 8, **kwargs)
    skipped = build_cache(table, 8, skip_unreadable=True, **kwargs)
    assert sorted(skipped.unreadable) == ["img0", "img1"]
    monkeypatch.setenv(MAX_PIXELS_ENV, str(24 * 16))
    raised = build_cache(table, 8, **kwargs)  # training accepts it now
    assert raised.unreadable == {} and raised.build_seconds is not None
    assert build_cache(table, 8, skip_unreadable=True, **kwargs).unreadable == {}


def test_unreadable_images_of_a_reused_cache_are_tried_again(tmp_path, monkeypatch):
    """A verdict that did not come from the file (here a decoder failing once) is not kept:
    the reused cache's unreadable images are decoded again, and the cache rebuilt if any
    decodes now."""
    table = write_images(tmp_path / "imgs", colours=COLOURS[:3])
    real = cache_mod.decode_image
    failing = {"img1.png"}

    def flaky(path, size, resize="squash"):
        if os.path.basename(path) in failing:
            raise OSError("Permission denied")
        return real(path, size, resize)

    monkeypatch.setattr(cache_mod, "decode_image", flaky)
    kwargs = {"cache_dir": tmp_path / "c", "progress": False, "skip_unreadable": True}
    first = build_cache(table, 8, **kwargs)
    assert list(first.unreadable) == ["img1"]
    still = build_cache(table, 8, **kwargs)  # still unreadable: reused as it is
    assert still.build_seconds is None and list(still.unreadable) == ["img1"]
    failing.clear()
    again = build_cache(table, 8, **kwargs)
    assert again.build_seconds is not None and again.unreadable == {}
    assert again.images[again.rows(["img1"])[0]].any()  # no longer a black row
    assert build_cache(table, 8, cache_dir=tmp_path / "c", progress=False).unreadable == {}
