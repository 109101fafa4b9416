"""The upload size limit, enforced while the request body streams in (an ASGI middleware).

A declared `Content-Length` over the limit is refused before any byte of the body is read.
Otherwise (a chunked upload, or a client that lies about its length) the middleware counts the
bytes the application receives and, as soon as the count passes the limit, stops: the
application's next `receive()` raises `BodyTooLarge`, the middleware answers 413 with
`Connection: close` and uvicorn closes the connection, so the rest of the body is never read.
Nothing above the limit is ever held in memory or spooled to disk.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body passed the limit while it was being read."""


def megabytes(n_bytes: int) -> str:
    """`n_bytes` in MB (2**20 bytes), as short as it reads well: 20, 0.5, 1.25."""
    return f"{n_bytes / 2**20:.3g}"


def too_large_message(max_bytes: int) -> str:
    """The one sentence of a 413 answer."""
    return (
        f"The upload is larger than the limit of {megabytes(max_bytes)} MB; send fewer or "
        "smaller images (the server's --max-upload-mb sets the limit)."
    )


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """The JSON of every error answer: {"error": code, "message": one sentence, ...}."""
    return json.dumps({"error": code, "message": message, **extra}).encode()


class BodySizeLimit:
    """ASGI middleware: answer 413 once an HTTP request body passes `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:  # an answer is under way: nothing sensible to add to it
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = error_body("upload_too_large", too_large_message(self.max_bytes))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # uvicorn closes the connection: the rest is never read
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    """The request's declared Content-Length, or None (absent, chunked or not a number)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
