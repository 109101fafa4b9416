"""`skinclf data download`: transfers, resume, verification, layouts and failures, all against a
local HTTP server on 127.0.0.1 (never the internet) serving archives generated here in the real
layouts of each source (tiny synthetic images from `write_sample`)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import socket
import sys
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from skinclf import cli
from skinclf.cli import main
from skinclf.data.download import (
    MARKER,
    RETRIES,
    SOURCES_ENV,
    DownloadOptions,
    download_dataset,
    load_sources,
    staging_dir,
)
from skinclf.data.synthetic import write_sample
from skinclf.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
DOI = "doi:10.5072/FK2/TEST"  # a test DOI prefix


# ---------------------------------------------------------------------------- local server


class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # unquoted path (with query) -> body
        self.cut: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)

    def reset(self) -> None:
        self.files.clear()
        self.cut.clear()
        self.ignore_range.clear()
        self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        path = urllib.parse.unquote(self.path)
        rng = self.headers.get("Range")
        state.requests.append((path, rng))
        if path not in state.files:
            self.send_error(404)
            return
        data = state.files[path]
        start, status = 0, 200
        if rng and path not in state.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if path in state.cut:  # drop the connection midway, once
            self.wfile.write(body[: state.cut.pop(path)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def state(server) -> _State:
    server.state.reset()
    return server.state


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- archives


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Per dataset: archive/file name -> bytes, in the layout its source publishes."""
    base = tmp_path_factory.mktemp("archives")
    isic = write_sample(base / "isic", "isic2018", n=2, seed=0, size=16)
    pad = write_sample(base / "pad", "pad-ufes-20", n=2, seed=0, size=16)
    ham = write_sample(base / "ham", "ham10000", n=2, seed=0, size=16)
    gt = "ISIC2018_Task3_Test_GroundTruth"
    images = sorted((pad / "images").iterdir())
    thirds = [images[i::3] for i in range(3)]
    return {
        "isic2018": {
            "ISIC2018_Task3_Test_Input.zip": _zip(
                {
                    f"ISIC2018_Task3_Test_Input/{k}": v
                    for k, v in _files(isic / "ISIC2018_Task3_Test_Input").items()
                }
            ),
            f"{gt}.zip": _zip(
                {f"{gt}/{gt}.csv": (isic / f"{gt}.csv").read_bytes(), f"{gt}/LICENSE.txt": b"x"}
            ),
        },
        "pad-ufes-20": {
            "metadata.csv": (pad / "metadata.csv").read_bytes(),
            **{
                f"imgs_part_{i + 1}.zip": _zip(
                    {f"imgs_part_{i + 1}/{p.name}": p.read_bytes() for p in part}
                )
                for i, part in enumerate(thirds)
            },
        },
        "ham10000": {  # part 1 without a folder in the archive, part 2 with one
            "HAM10000_images_part_1.zip": _zip(_files(ham / "HAM10000_images_part_1")),
            "HAM10000_images_part_2.zip": _zip(
                {
                    f"HAM10000_images_part_2/{k}": v
                    for k, v in _files(ham / "HAM10000_images_part_2").items()
                }
            ),
            "HAM10000_metadata": (ham / "HAM10000_metadata.csv").read_bytes(),
        },
    }


def _packaged() -> dict:
    text = resources.files("skinclf.data").joinpath("sources.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server, archives, tmp_path: Path, **overrides) -> Path:
    """Serve every dataset's files and write a source table pointing at them; returns it.

    The table is the packaged one with only the hosts (and, for PAD-UFES-20, the checksums of
    the generated files) replaced. `overrides`: file name -> {key: value} for that file."""
    state, base = server.state, server.base
    doc = copy.deepcopy(_packaged())
    for name, files in archives.items():
        entry = doc["datasets"][name]
        for part in entry["parts"].values():
            for f in part:
                if f["name"] not in files:
                    continue
                data = files[f["name"]]
                if "url" in f:
                    f["url"] = f"{base}/{name}/{f['name']}"
                    state.files[f"/{name}/{f['name']}"] = data
                if name == "pad-ufes-20":
                    f["checksum"], f["size"] = f"sha256:{_sha256(data)}", len(data)
                f.update(overrides.get(f["name"], {}))
    # HAM10000 through a fake Dataverse API: ids, sizes and MD5 checksums come from there
    doc["datasets"]["ham10000"]["dataverse"].update(server=base, doi=DOI)
    records = []
    for i, (fname, data) in enumerate(archives["ham10000"].items(), start=11):
        md5 = hashlib.md5(data).hexdigest()
        record = {
            "id": i,
            "filename": fname,
            "filesize": len(data),
            "checksum": {"type": "MD5", "value": md5},
        }
        path = f"/api/access/datafile/{i}"
        if fname == "HAM10000_metadata":  # an ingested table: .tab, original kept
            record.update(
                filename="HAM10000_metadata.tab",
                originalFileName=fname,
                originalFileSize=len(data),
                filesize=999,
            )
            path += "?format=original"
        state.files[path] = data
        records.append({"label": record["filename"], "dataFile": record})
    records.append(
        {
            "dataFile": {
                "id": 99,
                "filename": "HAM10000_segmentations_lesion_tschandl.zip",
                "filesize": 1,
            }
        }
    )
    listing = {"status": "OK", "data": {"latestVersion": {"files": records}}}
    state.files[f"/api/datasets/:persistentId/?persistentId={DOI}"] = json.dumps(listing).encode()
    table = tmp_path / "sources.yaml"
    table.write_text(yaml.safe_dump(doc, sort_keys=False))
    return table


def _download(name: str, out: Path, table: Path, retries: int = RETRIES, **kw):
    options = DownloadOptions(progress=False, timeout=5, retries=retries, retry_wait=0.0)
    return download_dataset(name, out, sources=table, options=options, **kw)


def _leftovers(folder: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep)


# ---------------------------------------------------------------------------- the table


def test_packaged_table_cites_a_source_for_every_url_and_checksum() -> None:
    table = load_sources()
    assert set(table) == {"ham10000", "pad-ufes-20", "isic2018"}
    assert set(table["isic2018"].parts) == {"test", "validation"}
    assert table["isic2018"].default_part == "test"
    assert table["ham10000"].licence == "CC BY-NC-SA 4.0"
    assert table["isic2018"].licence == "CC BY-NC 4.0"
    assert table["pad-ufes-20"].licence == "CC BY 4.0"
    for source in table.values():
        assert not source.verified_download  # README says so; change both together
        assert "{files}" in source.manual and "{out}" in source.manual
        for files in source.parts.values():
            for f in files:
                assert f.url_source and f.checksum_source
                assert (f.url is None) != (f.dataverse_file is None)
    pad = table["pad-ufes-20"].parts["all"]
    assert all(f.checksum and f.checksum.startswith("sha256:") for f in pad)
    assert [f.size for f in pad[1:]] == [1245184680, 1126646990, 1220565093]
    assert all(f.checksum is None for f in table["isic2018"].parts["test"])  # none published
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "data/sources.yaml" in pyproject  # shipped as package data


def test_a_broken_table_is_one_clear_error(tmp_path: Path) -> None:
    doc = _packaged()
    doc["datasets"]["isic2018"]["parts"]["test"][0]["checksum"] = "sha256:1234"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="ISIC2018_Task3_Test_Input.zip: checksum"):
        load_sources(bad)


# ---------------------------------------------------------------------------- downloads


def test_full_download_extracts_the_layout_data_check_reads(
    server, state, archives, tmp_path: Path
) -> None:
    table = _serve(server, archives, tmp_path)
    out = tmp_path / "isic"
    text = io.StringIO()
    result = _download("isic2018", out, table, console=Console(file=text, width=200))
    assert not result.already and result.check.usable, result.check.problems
    assert result.check.format == "isic2018" and result.check.summary["images_found"] == 14
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        MARKER,
        "ISIC2018_Task3_Test_GroundTruth",
        "ISIC2018_Task3_Test_GroundTruth.csv",
        "ISIC2018_Task3_Test_Input",
    ]
    assert len(list((out / "ISIC2018_Task3_Test_Input").glob("*.jpg"))) == 14
    marker = json.loads((out / MARKER).read_text())
    sha = {f["name"]: f["sha256"] for f in marker["files"]}
    assert sha == {k: _sha256(v) for k, v in archives["isic2018"].items()}
    assert _leftovers(tmp_path, table) == ["isic"]  # no archives, no temporary folders
    printed = text.getvalue()
    assert printed.index("CC BY-NC 4.0") < printed.index("Verified 2 file(s)")
    assert "Codella" in printed


def test_ham10000_comes_through_the_dataverse_api_with_its_md5(
    server, state, archives, tmp_path: Path
) -> None:
    table = _serve(server, archives, tmp_path)
    out = tmp_path / "ham"
    result = _download("ham10000", out, table)
    assert result.check.usable, result.check.problems
    assert result.check.summary["images_found"] == 14 and result.check.format == "ham10000"
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == [
        "HAM10000_images_part_1",
        "HAM10000_images_part_2",
        "HAM10000_metadata",
    ]
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):  # never part_2/part_2/
        assert all(p.suffix == ".jpg" for p in (out / part).iterdir())
    files = {f["name"]: f for f in result.files}
    assert (
        files["HAM10000_metadata"]["md5"]
        == hashlib.md5(archives["ham10000"]["HAM10000_metadata"]).hexdigest()
    )
    assert "md5 and size as published" in files["HAM10000_images_part_1.zip"]["verified"]
    paths = [p for p, _ in state.requests]
    assert "/api/access/datafile/13?format=original" in paths
    assert not any("/99" in p for p in paths)  # the segmentations are not fetched


def test_pad_ufes_20_is_checked_against_its_sha256(server, state, archives, tmp_path) -> None:
    table = _serve(server, archives, tmp_path)
    out = tmp_path / "pad"
    result = _download("pad-ufes-20", out, table)
    assert result.check.usable, result.check.problems
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "imgs_part_1",
        "imgs_part_2",
        "imgs_part_3",
    ]
    assert result.check.summary["semantic_ood"] > 0  # SCC rows kept, without a class
    assert all(f["verified"].startswith("sha256 and size as published") for f in result.files)


def test_a_dropped_transfer_resumes_with_a_range_request(
    server, state, archives, tmp_path: Path
) -> None:
    table = _serve(server, archives, tmp_path)
    state.cut["/pad-ufes-20/imgs_part_2.zip"] = 100
    result = _download("pad-ufes-20", tmp_path / "pad", table, retries=2)
    ranges = [r for p, r in state.requests if p == "/pad-ufes-20/imgs_part_2.zip"]
    assert ranges == [None, "bytes=100-"]
    assert result.check.usable
    sha = {f["name"]: f["sha256"] for f in result.files}
    assert sha["imgs_part_2.zip"] == _sha256(archives["pad-ufes-20"]["imgs_part_2.zip"])


def test_an_interrupted_download_resumes_in_the_next_run(
    server, state, archives, tmp_path: Path
) -> None:
    table = _serve(server, archives, tmp_path)
    url_path = "/isic2018/ISIC2018_Task3_Test_Input.zip"
    state.cut[url_path] = 333
    out = tmp_path / "isic"
    with pytest.raises(DataError, match="run the command again to resume"):
        _download("isic2018", out, table, retries=0)
    assert not out.exists()
    partial = staging_dir(out) / "ISIC2018_Task3_Test_Input.zip.part"
    assert partial.stat().st_size == 333
    result = _download("isic2018", out, table)
    assert [r for p, r in state.requests if p == url_path] == [None, "bytes=333-"]
    assert result.check.usable
    assert not staging_dir(out).exists()


def test_a_server_that_ignores_range_restarts_the_file(
    server, state, archives, tmp_path: Path
) -> None:
    table = _serve(server, archives, tmp_path)
    url_path = "/isic2018/ISIC2018_Task3_Test_Input.zip"
    state.cut[url_path] = 500
    state.ignore_range.add(url_path)
    result = _download("isic2018", tmp_path / "isic", table, retries=1)
    assert [r for p, r in state.requests if p == url_path] == [None, "bytes=500-"]
    sha = {f["name"]: f["sha256"] for f in result.files}
    assert sha["ISIC2018_Task3_Test_Input.zip"] == _sha256(
        archives["isic2018"]["ISIC2018_Task3_Test_Input.zip"]
    )
    assert result.check.usable


def test_a_checksum_mismatch_keeps_the_file_aside(server, state, archives, tmp_path) -> None:
    wrong = {"metadata.csv": {"checksum": "sha256:" + "0" * 64}}
    table = _serve(server, archives, tmp_path, **wrong)
    out = tmp_path / "pad"
    with pytest.raises(DataError) as err:
        _download("pad-ufes-20", out, table)
    message = str(err.value)
    assert "metadata.csv from http://127.0.0.1" in message and "instead of the published" in message
    assert "metadata.csv.bad" in message
    assert (staging_dir(out) / "metadata.csv.bad").read_bytes() == archives["pad-ufes-20"][
        "metadata.csv"
    ]
    assert not out.exists()


def test_a_second_run_finds_everything_in_place_and_makes_no_request(
    server, state, archives, tmp_path: Path
) -> None:
    table = _serve(server, archives, tmp_path)
    out = tmp_path / "isic"
    _download("isic2018", out, table)
    state.requests.clear()
    again = _download("isic2018", out, table)
    assert again.already and state.requests == []
    assert {f["name"] for f in again.files} == set(archives["isic2018"])
    with pytest.raises(DataError, match="already holds isic2018 \\(test\\)"):
        _download("isic2018", out, table, part="validation")
    assert state.requests == []


def test_refusals_before_any_request(server, state, archives, tmp_path: Path) -> None:
    table = _serve(server, archives, tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not empty"):
        _download("isic2018", full, table)
    with pytest.raises(DataError, match="unknown dataset 'ham'"):
        _download("ham", tmp_path / "x", table)
    with pytest.raises(DataError, match="use --part test or validation"):
        _download("isic2018", tmp_path / "x", table, part="train")
    with pytest.raises(DataError, match="leave out --part"):
        _download("ham10000", tmp_path / "x", table, part="test")
    assert state.requests == []


def test_an_archive_with_paths_outside_its_folder_is_refused(
    server, state, archives, tmp_path: Path
) -> None:
    evil = {"ISIC2018_Task3_Test_Input.zip": {}}
    table = _serve(server, archives, tmp_path, **evil)
    state.files["/isic2018/ISIC2018_Task3_Test_Input.zip"] = _zip({"../escaped.txt": b"x"})
    with pytest.raises(DataError, match="outside its own folder"):
        _download("isic2018", tmp_path / "isic", table)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "isic").exists()


# ---------------------------------------------------------------------------- the command


def _cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["skinclf", "data", "download", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize("name", ["isic2018", "ham10000"])
def test_offline_is_one_sentence_exit_1_and_nothing_left(
    name: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    doc = _packaged()
    closed = f"http://127.0.0.1:{_closed_port()}"
    for part in doc["datasets"]["isic2018"]["parts"].values():
        for f in part:
            f["url"] = f"{closed}/2018/{f['name']}"
    doc["datasets"]["ham10000"]["dataverse"]["server"] = closed
    table = tmp_path / "offline.yaml"
    table.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv(SOURCES_ENV, str(table))
    monkeypatch.setattr(cli.console, "soft_wrap", True)  # one line whatever the terminal width
    out = tmp_path / "data" / name
    assert _cli(monkeypatch, name, "--out", str(out), "--timeout", "2") == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not reach " + closed), lines
    assert "download by hand" in lines[0] and str(out) in lines[0]
    assert "Licence:" in captured.out  # printed before trying
    assert not out.exists() and not staging_dir(out).exists()
    assert not (tmp_path / "data").exists()  # not even the parent folder it would have made


def test_cli_lists_and_downloads(server, state, archives, tmp_path, monkeypatch, capsys) -> None:
    table = _serve(server, archives, tmp_path)
    assert _cli(monkeypatch, "--list", "--sources", str(table)) == 0
    listing = capsys.readouterr().out
    for text in (
        "ham10000",
        "pad-ufes-20",
        "isic2018",
        "CC BY-NC-SA 4.0",
        "CC BY 4.0",
        "Tschandl",
        "Pacheco",
        "Not yet verified by a real download",
    ):
        assert text in listing
    out = tmp_path / "isic"
    assert _cli(monkeypatch, "isic2018", "--out", str(out), "--sources", str(table)) == 0
    printed = capsys.readouterr().out
    assert "usable" in printed and "Images per class" in printed
    assert _cli(monkeypatch, "isic2018", "--out", str(out), "--sources", str(table)) == 0
    assert "nothing to do" in capsys.readouterr().out
