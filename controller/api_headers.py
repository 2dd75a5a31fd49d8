"""Headers on every answer of the API, and the id of each request for the log.

Every answer carries ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
``X-Frame-Options: DENY``; answers under /api/ also ``Cache-Control: no-store`` (they hold fleet
data and, once, new tokens); over HTTPS also ``Strict-Transport-Security``. A header a route set
itself (the dashboard's and the docs' Content-Security-Policy) is kept. Each request gets an id,
sent back as ``X-Request-ID`` and attached to every log record written while it is served
(:mod:`~sparcs.controller.logging_setup`). docs/security.md.
"""

from __future__ import annotations

import secrets

from sparcs.controller.api_limits import ASGIApp, Message, Receive, Scope, Send
from sparcs.controller.logging_setup import request_id

COMMON = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}
HSTS = b"max-age=31536000"


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers above to every HTTP answer and sets the request id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = secrets.token_hex(8)
        extra = dict(COMMON)
        if str(scope.get("path", "")).startswith("/api/"):
            extra[b"cache-control"] = b"no-store"
        if scope.get("scheme") == "https":
            extra[b"strict-transport-security"] = HSTS
        extra[b"x-request-id"] = rid.encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra.items() if k not in have]
                message["headers"] = headers
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id.reset(token)
