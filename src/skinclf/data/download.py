"""`skinclf data download`: fetch a public dataset from where its authors publish it.

The source table (`sources.yaml`, shipped with the package; replace it with `sources=FILE` /
`--sources FILE` or $SKINCLF_DOWNLOAD_SOURCES) says per dataset where each file is, its size
and checksum where the source publishes them (and which page says so), the licence, the
citation and the manual steps. `download_dataset` then

1. prints the licence and citation, before any transfer;
2. streams each file to `DIR.download/NAME.part` with a progress bar, resuming an interrupted
   transfer with an HTTP Range request (a server that ignores Range restarts it), retrying a
   dropped connection a few times;
3. checks the size and the published checksum (sha256 or md5, whichever the source gives; a
   file that fails is renamed `NAME.bad` and kept for inspection);
4. extracts the archives into a temporary folder beside DIR, in exactly the layout the loaders
   read, and renames it to DIR: DIR is complete or absent, never half-extracted;
5. writes `DIR/.skinclf-download.json` with what was verified, and runs the `data check`
   summary. A second call finds that record and does nothing (no request is made).

Without network it stops with one sentence naming the URL it could not reach and the manual
steps. Only the standard library talks to the network (urllib), with a short connect timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from skinclf import __version__
from skinclf.errors import ConfigError, DataError

SOURCES_ENV = "SKINCLF_DOWNLOAD_SOURCES"
MARKER = ".skinclf-download.json"
CONNECT_TIMEOUT = 10.0  # seconds to connect (and to wait for the response headers)
READ_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as dropped
RETRIES = 3  # reconnections (with Range) after a dropped transfer, per file
RETRY_WAIT = 2.0  # seconds before the first reconnection (doubles each time)
CHUNK = 1 << 20
ALGORITHMS = {"sha256": 64, "md5": 32, "sha1": 40, "sha512": 128}
_DATAVERSE_ALGORITHMS = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as its source publishes it (see sources.yaml for the keys)."""

    name: str
    url: str | None
    dataverse_file: str | None
    size: int | None
    checksum: str | None  # "sha256:HEX" / "md5:HEX"
    url_source: str
    checksum_source: str
    into: str | None = None
    hoist: tuple[str, ...] = ()
    save_as: str | None = None


@dataclass(frozen=True)
class Source:
    """One dataset of the source table."""

    name: str
    title: str
    format: str
    source: str
    page: str
    size: str
    licence: str
    licence_url: str
    licence_terms: str
    citation: str
    manual: str
    parts: dict[str, tuple[RemoteFile, ...]]
    default_part: str
    verified_download: bool = False
    licence_note: str = ""
    dataverse: dict[str, str] | None = None

    def manual_steps(self, part: str, out: Path | str) -> str:
        """The manual steps for `part`, with the file names and the target folder filled in."""
        names = [f.name for f in self.parts[part]]
        files = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        return self.manual.format(files=files, out=out)


def _text(entry: dict, key: str, where: str, required: bool = True) -> str:
    value = entry.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: `{key}` must be a non-empty string.")
    return " ".join(value.split())


def _parse_checksum(value: Any, where: str) -> str | None:
    if value is None:
        return None
    algo, _, digest = str(value).partition(":")
    if algo not in ALGORITHMS or not re.fullmatch(f"[0-9a-fA-F]{{{ALGORITHMS[algo]}}}", digest):
        raise ConfigError(
            f"{where}: checksum {value!r} is not ALGO:HEX with ALGO one of "
            f"{', '.join(ALGORITHMS)} (or null when the source publishes none)."
        )
    return f"{algo}:{digest.lower()}"


def _safe_relative(value: str, where: str, key: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ConfigError(f"{where}: `{key}` must be a relative path inside the dataset folder.")
    return str(path)


def _parse_file(entry: Any, where: str, has_dataverse: bool) -> RemoteFile:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: each file must be a mapping with name, url, ... keys.")
    name = _text(entry, "name", where)
    where = f"{where} {name}"
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"{where}: `name` must be a plain file name.")
    url, dv_file = entry.get("url"), entry.get("dataverse_file")
    if (url is None) == (dv_file is None):
        raise ConfigError(f"{where}: give exactly one of `url` and `dataverse_file`.")
    if dv_file is not None and not has_dataverse:
        raise ConfigError(f"{where}: `dataverse_file` needs a `dataverse` record for the dataset.")
    if url is not None and urllib.parse.urlsplit(str(url)).scheme not in ("http", "https"):
        raise ConfigError(f"{where}: url {url!r} is not an http(s) URL.")
    size = entry.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ConfigError(f"{where}: `size` must be a number of bytes or null.")
    into = entry.get("into")
    hoist = entry.get("hoist") or []
    if not isinstance(hoist, list) or not all(isinstance(h, str) and "/" not in h for h in hoist):
        raise ConfigError(f"{where}: `hoist` must be a list of file names.")
    if hoist and into is None:
        raise ConfigError(f"{where}: `hoist` only applies to an archive extracted `into` a folder.")
    save_as = entry.get("save_as")
    return RemoteFile(
        name=name,
        url=str(url) if url is not None else None,
        dataverse_file=str(dv_file) if dv_file is not None else None,
        size=size,
        checksum=_parse_checksum(entry.get("checksum"), where),
        url_source=_text(entry, "url_source", where),
        checksum_source=_text(entry, "checksum_source", where),
        into=_safe_relative(str(into), where, "into") if into is not None else None,
        hoist=tuple(hoist),
        save_as=_safe_relative(str(save_as), where, "save_as") if save_as is not None else None,
    )


def _parse_source(name: str, entry: Any, where: str) -> Source:
    where = f"{where}: dataset {name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping.")
    dataverse = entry.get("dataverse")
    if dataverse is not None and not (
        isinstance(dataverse, dict) and {"server", "doi"} <= set(dataverse)
    ):
        raise ConfigError(f"{where}: `dataverse` needs `server` and `doi`.")
    raw_parts = entry.get("parts")
    if not isinstance(raw_parts, dict) or not raw_parts:
        raise ConfigError(f"{where}: `parts` must map part names to lists of files.")
    parts = {}
    for part, files in raw_parts.items():
        if not isinstance(files, list) or not files:
            raise ConfigError(f"{where} part {part}: list at least one file.")
        parts[str(part)] = tuple(
            _parse_file(f, f"{where} part {part}", dataverse is not None) for f in files
        )
    default_part = str(entry.get("default_part", next(iter(parts))))
    if default_part not in parts:
        raise ConfigError(f"{where}: default_part {default_part!r} is not one of its parts.")
    manual = _text(entry, "manual", where)
    try:
        manual.format(files="F", out="O")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{where}: `manual` may only use the fields {{files}} and {{out}}."
        ) from None
    from skinclf.data.formats import FORMATS

    fmt = _text(entry, "format", where)
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}.")
    return Source(
        name=name,
        title=_text(entry, "title", where),
        format=fmt,
        source=_text(entry, "source", where),
        page=_text(entry, "page", where),
        size=_text(entry, "size", where),
        licence=_text(entry, "licence", where),
        licence_url=_text(entry, "licence_url", where),
        licence_terms=_text(entry, "licence_terms", where),
        licence_note=_text(entry, "licence_note", where, required=False),
        citation=_text(entry, "citation", where),
        manual=manual,
        parts=parts,
        default_part=default_part,
        verified_download=bool(entry.get("verified_download", False)),
        dataverse={k: str(v) for k, v in dataverse.items()} if dataverse else None,
    )


def load_sources(path: Path | str | None = None) -> dict[str, Source]:
    """The source table: `path`, else $SKINCLF_DOWNLOAD_SOURCES, else the packaged table."""
    if path is None and os.environ.get(SOURCES_ENV, "").strip():
        path = os.environ[SOURCES_ENV].strip()
    if path is None:
        where = "skinclf/data/sources.yaml"
        text = resources.files("skinclf.data").joinpath("sources.yaml").read_text("utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the source table {path} ({exc.strerror}).") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({str(exc).splitlines()[0]}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), dict):
        raise ConfigError(f"{where}: expected a mapping with a `datasets` mapping.")
    return {str(k): _parse_source(str(k), v, where) for k, v in doc["datasets"].items()}


# ---------------------------------------------------------------------------- HTTP


class _Unreachable(Exception):
    """The URL could not be reached at all (no byte of the body arrived)."""

    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url, self.reason = url, reason


class _Dropped(Exception):
    """A transfer that stopped before its end (resumable)."""

    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url, self.reason = url, reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.rstrip(".").lower()


def _open(url: str, headers: dict[str, str], timeout: float):
    """urlopen with a short timeout for connecting and the headers, a longer one for the body."""
    request = urllib.request.Request(
        url, headers={"User-Agent": f"skinclf/{__version__} (dataset download)", **headers}
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise _Unreachable(url, _reason(exc)) from None
    with contextlib.suppress(AttributeError, OSError):  # CPython: response.fp.raw._sock
        response.fp.raw._sock.settimeout(max(timeout, READ_TIMEOUT))
    return response


def _get_json(url: str, timeout: float) -> Any:
    try:
        with _open(url, {"Accept": "application/json"}, timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise _Unreachable(url, _reason(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Unreachable(url, _reason(exc)) from None
    try:
        return json.loads(body)
    except ValueError:
        raise _Unreachable(url, "the answer is not JSON") from None


def _fetch_once(url: str, part: Path, size: int | None, timeout: float, bar, task) -> None:
    """One request for the rest of `part`; _Dropped if it stops early, _Unreachable if it
    cannot start. A server that ignores Range (200) or answers another range restarts it."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size > 0:
        return  # complete already (the previous call stopped before renaming it)
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, headers, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and (size is None or have == size):
            return  # the partial file already holds everything
        if exc.code == 416 and have:
            part.unlink()
            raise _Dropped(url, "the server cannot serve the rest; starting again") from None
        raise _Unreachable(url, _reason(exc)) from None
    with response:
        mode = "ab"
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise _Dropped(url, "the server answered another byte range; starting again")
        elif have:  # 200: the server ignored Range and sends the whole file
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = have + length if length is not None else size
        bar.update(task, total=total, completed=have, visible=True)
        got = 0
        with part.open(mode) as f:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    bar.advance(task, len(chunk))
            except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets
                raise _Dropped(url, _reason(exc)) from None
    done = have + got
    if length is not None and got < length:
        raise _Dropped(url, f"the connection closed after {done:,} of {have + length:,} bytes")
    if size is not None and done < size:
        raise _Dropped(url, f"the transfer ended after {done:,} of {size:,} bytes")


def _fetch(url, part, size, bar, task, options: DownloadOptions) -> None:
    """Download `url` to `part`, resuming after drops up to `options.retries` times."""
    retries, attempt = options.retries, 0
    while True:
        try:
            _fetch_once(url, part, size, options.timeout, bar, task)
            return
        except (_Dropped, _Unreachable) as exc:
            if isinstance(exc, _Unreachable) and attempt == 0:
                raise
            attempt += 1
            if attempt > retries:
                raise _Dropped(exc.url, exc.reason) from None
            wait = options.retry_wait * 2 ** (attempt - 1)
            bar.console.print(
                f"[yellow]{escape(part.name[: -len('.part')])}: {escape(exc.reason)}; resuming "
                f"in {wait:.0f} s "
                f"(try {attempt} of {retries})[/]",
                soft_wrap=True,
            )
            time.sleep(wait)


# ---------------------------------------------------------------------------- resolving


@dataclass
class _Planned:
    """A file to get: where from, what it must be, and what to call it."""

    file: RemoteFile
    url: str
    size: int | None
    checksum: str | None
    checksum_source: str
    save_as: str


def _dataverse_files(source: Source, timeout: float) -> tuple[str, list[dict]]:
    dv = source.dataverse or {}
    server = dv["server"].rstrip("/")
    url = f"{server}/api/datasets/:persistentId/?persistentId={dv['doi']}"
    doc = _get_json(url, timeout)
    try:
        files = [f["dataFile"] for f in doc["data"]["latestVersion"]["files"]]
    except (KeyError, TypeError):
        raise _Unreachable(url, "the answer lists no files of the latest version") from None
    return url, files


def _match_dataverse(wanted: str, files: list[dict]) -> dict | None:
    def names(f: dict) -> list[str]:
        return [n for n in (f.get("originalFileName"), f.get("filename")) if n]

    for f in files:  # exact name first, then the same name without its extension
        if wanted in names(f):
            return f
    for f in files:
        if wanted in [os.path.splitext(n)[0] for n in names(f)]:
            return f
    return None


def _plan(source: Source, part: str, timeout: float) -> list[_Planned]:
    plans, dv_files, dv_url = [], None, ""
    for f in source.parts[part]:
        if f.url is not None:
            plans.append(
                _Planned(f, f.url, f.size, f.checksum, f.checksum_source, f.save_as or f.name)
            )
            continue
        if dv_files is None:
            dv_url, dv_files = _dataverse_files(source, timeout)
        record = _match_dataverse(f.dataverse_file or f.name, dv_files)
        if record is None or "id" not in record:
            raise DataError(
                f"the Dataverse record {dv_url} has no file {f.dataverse_file!r}; the dataset "
                f"may have changed: {source.manual_steps(part, '<folder>')}."
            )
        server = (source.dataverse or {})["server"].rstrip("/")
        original = bool(record.get("originalFileName"))
        url = f"{server}/api/access/datafile/{record['id']}" + ("?format=original" * original)
        checksum = f.checksum
        published = record.get("checksum") or {}
        algo = _DATAVERSE_ALGORITHMS.get(str(published.get("type", "")).upper())
        if checksum is None and algo and published.get("value"):
            checksum = f"{algo}:{str(published['value']).lower()}"
        elif checksum is None and record.get("md5"):
            checksum = f"md5:{str(record['md5']).lower()}"
        size = f.size
        if size is None:
            size = record.get("originalFileSize" if original else "filesize")
            size = size if isinstance(size, int) else None
        name = record.get("originalFileName") if original else record.get("filename")
        plans.append(
            _Planned(
                f,
                url,
                size,
                checksum,
                f.checksum_source if f.checksum else f"Dataverse API, {dv_url}",
                f.save_as or os.path.basename(str(name or f.name)),
            )
        )
    return plans


# ---------------------------------------------------------------------------- verifying


def _digests(path: Path, algorithms: set[str]) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in sorted(algorithms)}
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _verify(path: Path, plan: _Planned) -> dict[str, Any]:
    """Size and checksum of a complete download; DataError (file kept as .bad) if wrong."""
    size = path.stat().st_size
    algo, _, expected = (plan.checksum or "").partition(":")
    digests = _digests(path, {"sha256", algo} - {""})
    problem = None
    if plan.size is not None and size != plan.size:
        problem = f"has {size:,} bytes instead of the published {plan.size:,}"
    elif algo and digests[algo] != expected:
        problem = f"has {algo} {digests[algo]} instead of the published {expected}"
    if problem:
        bad = path.with_name(plan.file.name + ".bad")
        os.replace(path, bad)
        raise DataError(
            f"{plan.file.name} from {plan.url} {problem} ({plan.checksum_source}); kept it as "
            f"{bad} and stopped: run the command again to download it afresh, and report it if "
            "it happens twice."
        )
    record = {"name": plan.file.name, "url": plan.url, "size": size, "sha256": digests["sha256"]}
    if algo and algo != "sha256":
        record[algo] = digests[algo]
    record["verified"] = (
        f"{algo} and size as published ({plan.checksum_source})"
        if algo
        else "size as published; no checksum is published"
        if plan.size is not None
        else "complete transfer only; no size or checksum is published"
    )
    return record


# ---------------------------------------------------------------------------- extracting


def _members_ok(names: list[str], archive: Path) -> None:
    for name in names:
        p = PurePosixPath(name.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise DataError(
                f"{archive} holds a file outside its own folder ({name!r}); not extracting it."
            )


def _unpack(archive: Path, work: Path) -> None:
    """Extract a zip or tar(.gz) archive into `work` (refusing paths outside it)."""
    name = archive.name.lower()
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")) or (
            not zipfile.is_zipfile(archive) and tarfile.is_tarfile(archive)
        ):
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if not m.name.startswith("__MACOSX")]
                _members_ok([m.name for m in members], archive)
                members = [m for m in members if m.isfile() or m.isdir()]
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(work, members=members, filter="data")
                else:  # pragma: no cover (Python < 3.10.12 / 3.11.4)
                    tar.extractall(work, members=members)  # names checked above
            return
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.startswith("__MACOSX")]
            _members_ok(names, archive)
            zf.extractall(work, members=names)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        bad = archive.with_name(archive.name + ".bad")
        os.replace(archive, bad)
        raise DataError(
            f"{archive.name} is not a readable archive ({_reason(exc)}); kept it as {bad}: run "
            "the command again to download it afresh."
        ) from None


def _move_into(src: Path, dest: Path) -> None:
    """Move folder `src` to `dest`, merging into `dest` if it exists."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return
    for child in src.iterdir():
        target = dest / child.name
        if target.exists() and child.is_dir() and target.is_dir():
            _move_into(child, target)
        elif target.exists():
            raise DataError(f"two archives both hold {target.name} for {dest}; not overwriting.")
        else:
            os.replace(child, target)


def _extract(archive: Path, plan: _Planned, root: Path) -> None:
    into = root / (plan.file.into or "")
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        _unpack(archive, work)
        entries = [p for p in work.iterdir() if p.name != "__MACOSX"]
        single = len(entries) == 1 and entries[0].is_dir() and entries[0].name == into.name
        _move_into(entries[0] if single else work, into)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in plan.file.hoist:
        found = sorted(into.rglob(name))
        if not found:
            raise DataError(f"{archive.name} holds no {name}; the archive may have changed.")
        os.replace(found[0], root / name)


# ---------------------------------------------------------------------------- the command


@dataclass
class DownloadResult:
    """What `download_dataset` did: the dataset folder, its files and the check result."""

    root: Path
    source: Source
    part: str
    already: bool
    files: list[dict[str, Any]] = field(default_factory=list)
    check: Any = None  # skinclf.data.check.CheckResult, or None when not checked


def staging_dir(out: Path) -> Path:
    """Where downloads wait (and resume) until they are verified: beside `out`."""
    return out.with_name(out.name + ".download")


def _marker(out: Path) -> dict | None:
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _in_place(out: Path, source: Source, part: str) -> dict | None:
    """The marker of a finished download of (source, part) at `out`, None if out is empty or
    new, DataError if `out` holds something else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"{out} is a file; give a new (or empty) folder for --out.")
    marker = _marker(out)
    if marker is None:
        if any(out.iterdir()):
            raise DataError(
                f"{out} exists and is not empty; give a new (or empty) folder for --out."
            )
        return None
    if (marker.get("dataset"), marker.get("part")) != (source.name, part):
        raise DataError(
            f"{out} already holds {marker.get('dataset')} ({marker.get('part')}); give another "
            "folder for --out."
        )
    missing = [p for p in marker.get("layout", []) if not (out / p).exists()]
    if missing:
        raise DataError(
            f"{out} was downloaded before but {missing[0]} is missing from it; delete {out} and "
            "run the command again."
        )
    return marker


def describe(source: Source, console: Console) -> None:
    """Print what is about to be downloaded, its licence and how to cite it."""
    s = {k: escape(str(v)) for k, v in vars(source).items() if isinstance(v, str)}
    console.print(f"[bold]{s['title']}[/]", soft_wrap=True)
    console.print(f"from {s['source']} ({s['page']}), {s['size']}", soft_wrap=True)
    console.print(
        f"[bold]Licence:[/] {s['licence']} ({s['licence_url']}): {s['licence_terms']}.",
        soft_wrap=True,
    )
    if source.licence_note:
        console.print(f"[dim]{s['licence_note']}[/]", soft_wrap=True)
    console.print(f"[bold]Cite:[/] {s['citation']}.", soft_wrap=True)


def _progress(console: Console, enabled: bool):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, disable=not enabled)


def _layout(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != MARKER)


def _source_part(
    name: str, part: str | None, sources: Path | str | dict[str, Source] | None
) -> tuple[Source, str]:
    """Dataset `name`'s source and the part to download (its default when None); DataError in
    one sentence for an unknown dataset or part."""
    table = sources if isinstance(sources, dict) else load_sources(sources)
    if name not in table:
        raise DataError(
            f"unknown dataset {name!r}; `skinclf data download --list` shows {', '.join(table)}."
        )
    source = table[name]
    part = source.default_part if part is None else part
    if part not in source.parts:
        if len(source.parts) == 1:
            raise DataError(f"{name} has no parts to choose from; leave out --part.")
        raise DataError(f"{name} has no part {part!r}; use --part {' or '.join(source.parts)}.")
    return source, part


@dataclass(frozen=True)
class DownloadOptions:
    """How to download: progress bars, `data check` afterwards, keeping the archives, and how
    patiently (connection timeout, retries after a dropped transfer, seconds between them)."""

    progress: bool = True
    check: bool = True
    keep_archives: bool = False
    timeout: float = CONNECT_TIMEOUT
    retries: int = RETRIES
    retry_wait: float = RETRY_WAIT


def download_dataset(
    name: str,
    out: Path | str,
    part: str | None = None,
    sources: Path | str | dict[str, Source] | None = None,
    console: Console | None = None,
    options: DownloadOptions = DownloadOptions(),
) -> DownloadResult:
    """Download dataset `name` (part `part`) into the folder `out`; see the module docstring.

    `sources`: a source table (path or loaded); default `load_sources()`. Raises DataError
    (one sentence) when a file cannot be fetched, verified or extracted; the partial download
    stays in `staging_dir(out)` so the next call resumes it.
    """
    source, part = _source_part(name, part, sources)
    out = Path(os.path.abspath(out))
    console = console or Console(quiet=True)
    describe(source, console)
    marker = _in_place(out, source, part)
    if marker is not None:
        console.print(
            f"{out} already holds {name} ({part}), verified on {marker.get('downloaded', '?')}; "
            "nothing to do.",
            soft_wrap=True,
        )
        return DownloadResult(out, source, part, True, list(marker.get("files", [])))

    staging = staging_dir(out)
    created = [p for p in (out.parent, staging) if not p.exists()]  # removed again if empty
    try:
        records = _download_all(source, part, out, staging, console, options)
    except _Unreachable as exc:
        _drop_if_empty(created)
        raise DataError(
            f"could not reach {exc.url} ({exc.reason}); check the network and run the command "
            f"again, or download by hand: {source.manual_steps(part, out)}."
        ) from None
    except _Dropped as exc:
        raise DataError(
            f"the download from {exc.url} stopped ({exc.reason}); run the command again to "
            f"resume it (the partial file waits in {staging}), or download by hand: "
            f"{source.manual_steps(part, out)}."
        ) from None
    except BaseException:
        _drop_if_empty(created)
        raise
    if not options.keep_archives:
        shutil.rmtree(staging, ignore_errors=True)
    result = DownloadResult(out, source, part, False, records)
    if options.check:
        from skinclf.data.check import check_dataset

        result.check = check_dataset(out, format=source.format, progress=options.progress)
    return result


def _drop_if_empty(created: list[Path]) -> None:
    """Remove the folders this call created (staging, a new parent) if nothing worth keeping
    arrived in them: a failed first attempt leaves no trace."""
    for folder in reversed(created):
        if folder.is_dir() and not any(p.is_file() and p.stat().st_size for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)


def _download_all(source, part, out, staging, console, options: DownloadOptions):
    plans = _plan(source, part, options.timeout)
    staging.mkdir(parents=True, exist_ok=True)
    records = []
    with _progress(console, options.progress) as bar:
        for plan in plans:
            final = staging / plan.file.name
            task = bar.add_task(plan.file.name, total=plan.size, visible=final.exists())
            if not final.exists():
                partial = staging / (plan.file.name + ".part")
                _fetch(plan.url, partial, plan.size, bar, task, options)
                os.replace(partial, final)
            size = final.stat().st_size
            bar.update(task, completed=size, total=size, description=f"{plan.file.name} (check)")
            records.append(_verify(final, plan))
            bar.update(task, description=plan.file.name)
    _assemble(source, part, plans, records, staging, out)
    console.print(f"Verified {len(records)} file(s); {source.name} is in {out}.", soft_wrap=True)
    return records


def _assemble(source, part, plans, records, staging: Path, out: Path) -> None:
    """Extract / place every file in a temporary folder beside `out`, then rename it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.extract-", dir=out.parent))
    try:
        for plan in plans:
            path = staging / plan.file.name
            if plan.file.into is not None:
                _extract(path, plan, tmp)
            else:
                target = tmp / plan.save_as
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        marker = {
            "dataset": source.name,
            "part": part,
            "title": source.title,
            "source": source.source,
            "licence": source.licence,
            "citation": source.citation,
            "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "skinclf": __version__,
            "files": records,
            "layout": _layout(tmp),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
        if out.exists():
            out.rmdir()  # empty (checked before the transfer)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def iter_rows(table: dict[str, Source]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Per dataset, its name and (field, value) rows for `--list`: source, size, licence, cite."""
    for name, s in table.items():
        parts = f"  (--part {' or '.join(s.parts)})" if len(s.parts) > 1 else ""
        yield (
            name + parts,
            [
                ("dataset", s.title),
                ("source", f"{s.source}, {s.page}"),
                ("size", s.size),
                ("licence", f"{s.licence}: {s.licence_terms}"),
                ("citation", s.citation),
            ],
        )
