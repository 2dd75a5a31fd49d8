"""Limits every request meets before the API reads its body: a size cap, a time cap for the body to
arrive, and a bearer token on every write to /api/v1 (so nobody without one makes the API read and
parse a large body). Answers are JSON ``{"error": ...}`` like every other API error.

A pure ASGI middleware: it buffers the body (at most ``api.max_body_kib``, default 64 KiB: the
largest command, a 400-point schedule, is ~40 KB) and hands it on whole; ``api.body_timeout_s``
bounds the time a request has to send it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READS = frozenset({"GET", "HEAD", "OPTIONS"})
MISSING_TOKEN = "missing bearer token: send 'Authorization: Bearer <token>' (create one with sparcs token add)"


class RequestLimits:
    """Refuses a write to /api/v1 without a bearer token (401), a body over ``max_body_bytes`` (413)
    and a body that does not arrive within ``body_timeout_s`` (408), before the app reads it."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float):
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"].startswith("/api/") and b"authorization" not in headers:
            await _answer(send, 401, MISSING_TOKEN, {"www-authenticate": "Bearer"})
            return
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            await _answer(send, 400, "Content-Length must be a number of bytes")
            return
        if int(length) > self.max_body_bytes:
            await _answer(send, 413, f"request body over {self.max_body_bytes} bytes; send a smaller one")
            return
        body = bytearray()
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await _answer(send, 408, f"the request body did not arrive within {self.body_timeout_s:g} s")
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _answer(send, 413, f"request body over {self.max_body_bytes} bytes; send a smaller one")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, error: str, extra: dict[str, str] | None = None) -> None:
    payload = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
