"""The HTTP service of a model package (FastAPI): predict uploaded images, abstaining as the
package's selective classifier says.

Endpoints: `POST /predict` (multipart, field `files`: one or several images), `GET /health`,
`GET /model` (the model card), the page at `/`, and the OpenAPI docs at `/docs` from files
shipped in the package (no CDN). The model loads once, at start-up (the lifespan); decoding
and inference run in worker threads, inference behind one lock, so the event loop keeps
answering while a batch runs. Every refusal is a 4xx JSON `{"error": code, "message": one
sentence}`; bad files in a request with good ones get an error object of their own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from skinclf import __version__
from skinclf.classes import CLASS_NAMES
from skinclf.errors import SkinclfError
from skinclf.jsonable import jsonable
from skinclf.serve.limits import BodySizeLimit

STATIC = Path(__file__).parent / "static"
FIELD = "files"  # the multipart field of the uploads
ALSO_FIELD = "file"  # accepted too: curl users type -F file=@x.jpg
DEFAULT_MAX_BYTES = 20 * 2**20
DEFAULT_MAX_FILES = 16
# where `skinclf serve --workers N` hands its settings to the worker processes
ENV_MODEL_DIR, ENV_MAX_BYTES, ENV_MAX_FILES = (
    "SKINCLF_SERVE_MODEL_DIR",
    "SKINCLF_SERVE_MAX_BYTES",
    "SKINCLF_SERVE_MAX_FILES",
)
# the page: only its own files, images the user picked (blob:), and calls to this server
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'"


class ServeError(Exception):
    """A request the service refuses: HTTP status, short code and one sentence."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass(frozen=True)
class Upload:
    """One part of the `files` field: its name and bytes (None when it is not a file)."""

    name: str
    data: bytes | None


# The largest image an upload may declare: decoding one costs about 4 bytes a pixel at once (an
# alpha PNG of 13000 x 13000 px is under 1 MB compressed but needs gigabytes), so uploads get a
# tighter limit than local files (formats.max_image_pixels, 180 MP).
UPLOAD_MAX_PIXELS = 40_000_000


class Runner:
    """The loaded model (skinclf.predictor.Predictor): decoding in any thread, inference behind one
    lock (the model's modules are not meant for concurrent forward passes)."""

    def __init__(self, model: Any, max_pixels: int | None = None) -> None:
        self.model = model
        self.max_pixels = UPLOAD_MAX_PIXELS if max_pixels is None else max_pixels
        self._lock = threading.Lock()

    def prepare(self, upload: Upload) -> np.ndarray | dict:
        """The decoded, resized image, or the file's error object."""
        if upload.data is None:
            return file_error(
                upload.name,
                "not_a_file",
                f"{upload.name}: the `{FIELD}` field holds text, "
                "not a file; send each image as a file upload.",
            )
        if not upload.data:
            return file_error(upload.name, "empty_file", f"{upload.name}: the file is empty.")
        try:
            return self.model.preprocess(upload.data, max_pixels=self.max_pixels)
        except SkinclfError as exc:  # ImageError (a DataError) or a ConfigError: one sentence
            return image_error(upload.name, exc)

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[dict]:
        pixels = np.stack(list(images))  # decoded by `prepare`, outside the lock
        with self._lock:
            return self.model.predict_pixels(pixels, list(names))


def image_error(name: str, exc: SkinclfError) -> dict:
    """The error object of an image the package's opener refused (ImageError's reason)."""
    reason = getattr(exc, "reason", None)
    if reason is None:
        return file_error(name, "unreadable_image", f"{name}: {exc}")
    low = reason.lower()
    code = "unreadable_image"
    if "pixels" in low and "limit" in low:
        code = "image_too_large"
    elif "truncated" in low:
        code = "truncated_image"
    elif "not a readable image" in low:
        code = "not_an_image"
    elif "empty" in low:
        code = "empty_file"
    return file_error(name, code, f"{name}: image {reason}.")


def file_error(name: str, code: str, message: str, status: int = 422) -> dict:
    return {"image": name, "error": code, "message": message, "status": status}


# ---------------------------------------------------------------------------- the app


def create_app(
    model_dir: str | Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    model: Any = None,
) -> FastAPI:
    """The service of the model package in `model_dir` (loaded at start-up), or of `model`
    (an already loaded skinclf.predictor.Predictor). Uploads over `max_bytes` in all, or with more
    than `max_files` files, are refused."""
    if model is None and model_dir is None:
        raise ValueError("create_app needs model_dir or model")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.runner is None:
            from skinclf.predictor import load

            app.state.runner = Runner(await anyio.to_thread.run_sync(load, model_dir))
        yield

    app = FastAPI(
        title="skinclf",
        version=__version__,
        summary="Skin-lesion classifier that abstains: a research tool, not a diagnosis.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runner = None if model is None else Runner(model)
    app.state.max_files = max_files
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    _add_error_handlers(app)
    _add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_env() -> FastAPI:
    """The app of `skinclf serve --workers N`: each worker process builds it from the env."""
    return create_app(
        os.environ[ENV_MODEL_DIR],
        max_bytes=int(os.environ.get(ENV_MAX_BYTES, DEFAULT_MAX_BYTES)),
        max_files=int(os.environ.get(ENV_MAX_FILES, DEFAULT_MAX_FILES)),
    )


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServeError)
        return _error(exc.status, exc.code, exc.message, **exc.extra)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        if status == 404:
            message = f"There is no {request.url.path}; the API is described at /docs."
        elif status == 405:
            message = f"{request.url.path} does not take {request.method}; see /docs."
        else:
            message = f"The request was refused ({exc.detail})."
        code = {404: "not_found", 405: "method_not_allowed"}
        return _error(status, code.get(status, "bad_request"), message)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        return _error(422, "invalid_request", f"The request is not valid ({exc}).")

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _error(
            500,
            "internal_error",
            f"The server failed on this request ({type(exc).__name__}); "
            "the service keeps running, please report this.",
        )

    app.add_exception_handler(ServeError, refused)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crashed)


# ---------------------------------------------------------------------------- routes

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or several images (JPEG, PNG, ...).",
                        }
                    },
                }
            }
        },
    }
}


def _add_routes(app: FastAPI) -> None:
    app.add_api_route("/predict", predict, methods=["POST"], openapi_extra=_UPLOAD_SCHEMA)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/model", model_card, methods=["GET"])
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)


async def predict(request: Request) -> JSONResponse:
    """Predict each uploaded image: top class, probabilities in class order, confidence
    scores, and whether the model abstains (`unfamiliar`: not like its training images;
    `uncertain`: refer to a dermatologist). A research tool, not a diagnosis."""
    runner: Runner = request.app.state.runner
    uploads = await read_uploads(request, request.app.state.max_files)
    prepared = [await anyio.to_thread.run_sync(runner.prepare, u) for u in uploads]
    good = [i for i, p in enumerate(prepared) if not isinstance(p, dict)]
    results: list[dict] = [p if isinstance(p, dict) else {} for p in prepared]
    if good:
        names = [uploads[i].name for i in good]
        predicted = await anyio.to_thread.run_sync(
            runner.predict, [prepared[i] for i in good], names
        )
        thresholds = jsonable(runner.model.thresholds)
        for i, row in zip(good, predicted, strict=True):
            results[i] = {**jsonable(row), "thresholds": thresholds}
    body = {**_model_fields(runner.model), "results": results}
    if good:
        return JSONResponse(body)
    raise _all_bad(results, body)


def _all_bad(results: list[dict], body: dict) -> ServeError:
    """The 4xx of a request whose every file was refused (the first error when just one)."""
    if len(results) == 1:
        return ServeError(results[0]["status"], results[0]["error"], results[0]["message"], **body)
    statuses = {r["status"] for r in results}
    return ServeError(
        statuses.pop() if len(statuses) == 1 else 422,
        "no_usable_image",
        f"None of the {len(results)} files is an image the model can read; each file's reason "
        "is in `results`.",
        **body,
    )


def _model_fields(model: Any) -> dict:
    return {
        "model_id": model.model_id,
        "skinclf_version": __version__,
        "classes": list(model.classes),
        "class_names": {c: CLASS_NAMES.get(c, c) for c in model.classes},
        "thresholds": jsonable(model.thresholds),
        "policy_note": getattr(model, "policy_note", ""),
    }


async def read_uploads(request: Request, max_files: int) -> list[Upload]:
    """The parts of the `files` field; ServeError for a body that is not such a form."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        shown = content_type.split(";")[0].strip() or "none"
        raise ServeError(
            415,
            "unsupported_media_type",
            f"Send the images as multipart/form-data in the "
            f"field `{FIELD}` (this request's content type is {shown}).",
        )
    try:
        form = await request.form(max_files=max_files, max_fields=max_files + 16)
    except HTTPException as exc:
        if "too many files" in str(exc.detail).lower():
            raise ServeError(
                413,
                "too_many_files",
                f"The request has more than {max_files} files; send "
                f"at most {max_files} per request.",
            ) from None
        raise ServeError(
            400, "malformed_upload", f"The multipart body cannot be read ({exc.detail})."
        ) from None
    try:
        parts = [*form.getlist(FIELD), *form.getlist(ALSO_FIELD)]
        if not form.keys():
            raise ServeError(
                400,
                "malformed_upload",
                "The multipart body has no complete part (a part or the closing boundary is "
                f"missing); send each image as a file in the field `{FIELD}`.",
            )
        if not parts:
            found = ", ".join(sorted(set(form.keys())))
            raise ServeError(
                422,
                "missing_field",
                f"The request has no field `{FIELD}` (found: {found}); "
                f"send each image as a file in the field `{FIELD}`.",
            )
        return [await _upload(part, i) for i, part in enumerate(parts, 1)]
    finally:
        await form.close()


async def _upload(part: UploadFile | str, number: int) -> Upload:
    if isinstance(part, str):
        return Upload(f"file {number}", None)
    return Upload(part.filename or f"file {number}", await part.read())


async def health(request: Request) -> dict:
    """The service is up and its model loaded."""
    runner: Runner = request.app.state.runner
    model = runner.model
    return {
        "status": "ok",
        "model_id": model.model_id,
        "skinclf_version": __version__,
        "policy_note": getattr(model, "policy_note", ""),
    }


async def model_card(request: Request) -> JSONResponse:
    """The model card (model_card.json of the package): data, metrics, intended use,
    licence, and the selective classifier's thresholds; file paths shown by their names."""
    return JSONResponse(jsonable(public_card(request.app.state.runner.model.card)))


PATH_KEYS = ("path", "source")  # the card's file paths (of the machine that exported it)


def public_card(card: Any, key: str = "", in_files: bool = False) -> Any:
    """The card with each file path (`path`, `source`, everything under `files`) reduced to
    its name: a server does not publish the folders of the machine that exported its model."""
    if isinstance(card, Mapping):
        return {k: public_card(v, str(k), in_files or k == "files") for k, v in card.items()}
    if isinstance(card, list):
        return [public_card(v, key, in_files) for v in card]
    if isinstance(card, str) and (key in PATH_KEYS or in_files) and "://" not in card:
        return Path(card).name
    return card


async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title="skinclf API",
        swagger_js_url="/static/docs/swagger-ui-bundle.js",
        swagger_css_url="/static/docs/swagger-ui.css",
        swagger_favicon_url="/static/docs/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
    )


async def page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})


def run_server(
    model_dir: str | Path,
    model: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> None:
    """Serve with uvicorn until interrupted. One worker serves `model` (or loads model_dir);
    several each build the app from the environment (`app_from_env`) and load their own."""
    import uvicorn

    common: dict[str, Any] = {"host": host, "port": port, "log_level": "info"}
    if workers == 1:
        uvicorn.run(create_app(model_dir, max_bytes, max_files, model=model), **common)
        return
    os.environ[ENV_MODEL_DIR] = str(Path(model_dir).resolve())
    os.environ[ENV_MAX_BYTES], os.environ[ENV_MAX_FILES] = str(max_bytes), str(max_files)
    uvicorn.run("skinclf.serve.app:app_from_env", factory=True, workers=workers, **common)
