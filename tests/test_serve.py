"""`skinclf serve` as a user meets it: a subprocess on 127.0.0.1 spoken to over HTTP.

One server for the module (the exported model of conftest, with its OOD and confidence
gates), started with small limits (1 MB, 4 files) so the limits are cheap to hit. Hostile
input must give a 4xx JSON error with one sentence and leave the server answering; 50
concurrent requests must get the probabilities of `skinclf predict` on the same images.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

MAX_MB, MAX_FILES = 1, 4
N_IMAGES, N_REQUESTS = 8, 50


# ---------------------------------------------------------------------------- the server


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def wait_ready(self, timeout: float = 180) -> None:
        """Until /health answers 200 (fails when the process exits or time runs out)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"skinclf serve exited ({self.proc.returncode}):\n{self.text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"skinclf serve did not answer /health:\n{self.text()}")
            time.sleep(0.2)

    def assert_serving(self) -> None:
        """Still running, and /health answers."""
        assert self.proc.poll() is None, self.text()
        assert httpx.get(f"{self.url}/health", timeout=10).json()["status"] == "ok"

    def text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model_dir: Path, log: Path, *options: str, wait: bool = True) -> Iterator[Server]:
    """`skinclf serve MODEL_DIR` on a free port until the block ends (ready unless `wait` is
    False: then call `wait_ready`, e.g. after starting several)."""
    port = free_port()
    cmd = [sys.executable, "-m", "skinclf", "serve", str(model_dir), "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen([*cmd, *options], stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with serving(
        exported_model, log, "--max-upload-mb", str(MAX_MB), "--max-files", str(MAX_FILES)
    ) as running:
        yield running


# ---------------------------------------------------------------------------- inputs


def png(seed: int = 0, size: int = 48) -> bytes:
    """A small generated RGB PNG."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def truncated() -> bytes:
    data = png(seed=3, size=96)
    return data[: len(data) // 2]


@pytest.fixture(scope="module")
def images(learnable_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of N_IMAGES plain image files (copies of generated sample images)."""
    folder = tmp_path_factory.mktemp("serve-images")
    files = sorted(learnable_sample.rglob("*.jpg"))[::7][:N_IMAGES]
    assert len(files) == N_IMAGES
    for f in files:
        shutil.copy2(f, folder / f.name)
    return folder


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    """A JSON error of this status and code whose message is one sentence."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert_sentence(body["message"])
    return body


def assert_sentence(message: str) -> None:
    assert isinstance(message, str) and message.endswith("."), message
    assert "\n" not in message and "Traceback" not in message and len(message) < 400, message


def post_files(server: Server, files: list[tuple[str, bytes]], **kw) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return httpx.post(f"{server.url}/predict", files=parts, timeout=60, **kw)


# ---------------------------------------------------------------------------- endpoints


def test_health_and_model_card(server: Server, exported_model: Path) -> None:
    manifest = json.loads((exported_model / "skinclf-model.json").read_text())
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["model_id"] == manifest["model_id"]
    card = httpx.get(f"{server.url}/model", timeout=10)
    assert card.status_code == 200
    on_disk = json.loads((exported_model / "model_card.json").read_text())
    shown = card.json()
    # the card, with the exporting machine's file paths shown by their names only
    assert shown["training_data"]["path"] == Path(on_disk["training_data"]["path"]).name
    assert shown["metrics"]["source"] == Path(on_disk["metrics"]["source"]).name
    assert str(exported_model.parent) not in card.text and "/tmp/" not in card.text
    from skinclf.serve.app import public_card

    assert shown == json.loads(json.dumps(public_card(on_disk)))  # everything else as on disk


def test_concurrent_requests_match_skinclf_predict(
    server: Server, exported_model: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    cmd = [sys.executable, "-m", "skinclf", "predict", str(exported_model), "--data", str(images)]
    done = subprocess.run([*cmd, "--out", str(out), "--no-progress"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    expected = pd.read_csv(out).set_index("image_id")
    files = sorted(images.iterdir())

    def ask(i: int) -> dict:
        f = files[i % len(files)]
        response = post_files(server, [(f.name, f.read_bytes())])
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(max_workers=N_REQUESTS) as pool:
        answers = list(pool.map(ask, range(N_REQUESTS)))
    manifest = json.loads((exported_model / "skinclf-model.json").read_text())
    worst = 0.0
    for i, body in enumerate(answers):
        (result,) = body["results"]
        name = files[i % len(files)].name
        assert result["image"] == name and result["model_id"] == manifest["model_id"]
        row = expected.loc[name]
        probs = [result["probabilities"][c] for c in manifest["classes"]]
        assert list(result["probabilities"]) == manifest["classes"]  # class order
        worst = max(worst, float(np.max(np.abs(np.array(probs) - row.filter(like="prob_")))))
        assert result["abstain"] == bool(row["abstain"])
        assert result["abstain_reason"] == (
            "" if pd.isna(row["abstain_reason"]) else row["abstain_reason"]
        )
        assert result["top_class"] == manifest["classes"][int(np.argmax(probs))]
        assert {"msp", "mahalanobis"} <= set(result["scores"])
        assert result["thresholds"] == body["thresholds"] and "ood" in body["thresholds"]
    assert worst <= 1e-5


def test_multi_file_request_answers_good_files_and_flags_each_bad_one(server: Server) -> None:
    files = [("a.png", png(1)), ("notes.txt", b"not an image"), ("b.png", png(2)), ("e.png", b"")]
    response = post_files(server, files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["image"] for r in results] == ["a.png", "notes.txt", "b.png", "e.png"]
    for good in (results[0], results[2]):
        assert "error" not in good and abs(sum(good["probabilities"].values()) - 1) < 1e-4
        assert good["abstain_reason"] in ("", "unfamiliar", "uncertain")
        assert bool(good["message"]) == good["abstain"]
    assert (results[1]["error"], results[3]["error"]) == ("not_an_image", "empty_file")
    for bad in (results[1], results[3]):
        assert bad["status"] == 422 and "probabilities" not in bad
        assert_sentence(bad["message"])


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [
        ("notes.txt", lambda: b"hello, this is text and not an image", "not_an_image"),
        ("cut.png", truncated, "truncated_image"),
        ("bomb.png", bomb_png, "image_too_large"),
        ("zero.png", lambda: b"", "empty_file"),
    ],
)
def test_a_bad_image_alone_is_a_422_with_one_sentence(
    server: Server, name: str, make, code: str
) -> None:
    body = assert_error(post_files(server, [(name, make())]), 422, code)
    assert body["message"].startswith(name) and body["results"][0]["error"] == code
    server.assert_serving()


def test_uploads_have_a_tighter_pixel_limit_than_local_files(server: Server) -> None:
    """7000 x 7000 px (49 MP) is within the local-file limit but not an upload's (40 MP)."""
    from skinclf.data.formats import max_image_pixels
    from skinclf.serve.app import UPLOAD_MAX_PIXELS

    assert UPLOAD_MAX_PIXELS < 7000 * 7000 <= max_image_pixels()
    body = assert_error(post_files(server, [("big.png", bomb_png(7000, 7000))]), 422,
                        "image_too_large")  # fmt: skip
    assert body["message"].startswith("big.png")
    server.assert_serving()


def test_a_request_of_only_bad_files_is_refused(server: Server) -> None:
    body = assert_error(
        post_files(server, [("x.txt", b"text"), ("bomb.png", bomb_png())]), 422, "no_usable_image"
    )
    assert [r["error"] for r in body["results"]] == ["not_an_image", "image_too_large"]


def test_malformed_requests_are_4xx(server: Server) -> None:
    url = f"{server.url}/predict"
    assert_error(httpx.post(url, json={"files": []}, timeout=30), 415, "unsupported_media_type")
    assert_error(
        httpx.post(url, files={"image": ("a.png", png())}, timeout=30), 422, "missing_field"
    )
    assert_error(
        httpx.post(url, data={"files": "hello"}, files={"other": ("o", b"x")}), 422, "not_a_file"
    )
    bare = {"content-type": "multipart/form-data"}  # no boundary
    boundary_b = {"content-type": "multipart/form-data; boundary=b"}
    assert_error(
        httpx.post(url, content=b"--x\r\n", headers=bare, timeout=30), 400, "malformed_upload"
    )
    # a part that is never closed: the body is malformed, not "no field files"
    unclosed = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
    body = assert_error(
        httpx.post(url, content=unclosed + png(), headers=boundary_b, timeout=30),
        400,
        "malformed_upload",
    )
    assert "no complete part" in body["message"]
    many = [(f"{i}.png", png(i, 16)) for i in range(MAX_FILES + 1)]
    assert_error(post_files(server, many), 413, "too_many_files")
    assert_error(httpx.get(f"{server.url}/nothing-here", timeout=30), 404, "not_found")
    assert_error(httpx.get(url, timeout=30), 405, "method_not_allowed")
    server.assert_serving()


def test_the_field_file_is_accepted_as_curl_users_type_it(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", files={"file": ("a.png", png())}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["image"] == "a.png"


def test_a_busy_port_is_one_sentence_before_anything_loads(exported_model: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "skinclf", "serve", str(exported_model), "--port", str(port)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"--port {port}" in done.stderr
    assert "another --port" in done.stderr and "Traceback" not in done.stderr
    assert "serving" not in done.stdout


def test_an_upload_over_the_limit_is_refused_while_it_streams(server: Server) -> None:
    limit = MAX_MB * 2**20
    declared = post_files(server, [("big.png", b"\x00" * (limit + 1))])  # Content-Length
    assert_error(declared, 413, "upload_too_large")
    sent = 0
    chunk, total = b"\x00" * 2**16, 64 * limit

    def body() -> Iterator[bytes]:  # chunked: no Content-Length, 64 x the limit
        nonlocal sent
        boundary = b"--b\r\nContent-Disposition: form-data; name=files; filename=a.png\r\n\r\n"
        yield boundary
        while sent < total:
            sent += len(chunk)
            yield chunk
        yield b"\r\n--b--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = httpx.post(f"{server.url}/predict", content=body(), headers=headers, timeout=60)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "upload_too_large")
    assert sent < total / 2, f"the client sent {sent} bytes: the server kept reading"
    server.assert_serving()


def test_docs_and_page_load_only_local_files(server: Server) -> None:
    for path in ("/docs", "/"):
        page = httpx.get(f"{server.url}{path}", timeout=30)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
        urls += re.findall(r"""url:\s*'([^']+)'""", page.text)  # Swagger UI's openapi.json
        scripts = [u for u in urls if u.endswith(".js")]
        assert scripts, f"{path} loads no script"
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{path} loads {url}"
            assert httpx.get(f"{server.url}{url}", timeout=30).status_code == 200, url
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert "multipart/form-data" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"/predict", "/health", "/model"} <= set(spec["paths"])


# ---------------------------------------------------------------------------- in process


def test_the_limit_stops_reading_the_body() -> None:
    """The middleware pulls no more than the limit (+ one chunk) from an endless body."""
    import anyio

    from skinclf.serve.limits import BodySizeLimit

    pulled, sent = 0, []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"\x00" * 1000, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    async def reads_everything(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass

    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}
    anyio.run(BodySizeLimit(reads_everything, max_bytes=10_000), scope, receive, send)
    assert pulled == 11
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "upload_too_large"


def test_without_the_serve_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from skinclf.errors import MissingExtraError
    from skinclf.serve import require_serve_extra

    real = importlib.util.find_spec
    for hidden in ("fastapi", "uvicorn", "multipart"):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, h=hidden: None if name == h else real(name, *a),
        )
        with pytest.raises(MissingExtraError, match=re.escape('pip install "skinclf[serve]"')):
            require_serve_extra()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    require_serve_extra()


def test_a_folder_that_is_no_model_is_one_sentence(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "skinclf", "serve", str(tmp_path), "--port", str(free_port())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "skinclf-model.json" in done.stderr and "Traceback" not in done.stderr
