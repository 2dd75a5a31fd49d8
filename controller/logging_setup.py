"""The log of the long-running commands (`sparcs run`, `simulate`, `twin`): level and format.

``text``: ``time level logger: message`` and the structured fields in brackets; times are ISO 8601
in UTC with their offset. ``json``: one JSON
object per line (python-json-logger) with ``time``, ``level``, ``logger``, ``message`` and the
structured fields. The structured fields, where a record has them: ``device`` and ``site`` (passed
as ``extra={"device": ...}``) and ``request`` (the id of the API request being served, also sent
back as the ``X-Request-ID`` header). Everything goes to stderr; uvicorn's own records included.
docs/operations.md "Logs".
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
FIELDS = ("device", "site", "request")
"""The structured fields a record may carry."""

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("sparcs_request_id", default=None)
"""The id of the API request the current task serves (set by the API's middleware)."""


class ContextFields(logging.Filter):
    """Adds ``request`` from the current task's context to every record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request", None) is None:
            rid = request_id.get()
            if rid is not None:
                record.request = rid
        return True


def utc_iso(created_s: float) -> str:
    """A record's time as ISO 8601 in UTC with its offset, to the millisecond."""
    return dt.datetime.fromtimestamp(created_s, dt.UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``time level logger: message [device=… site=… request=…]``; time as :func:`utc_iso`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None]
        return f"{line} [{' '.join(fields)}]" if fields else line


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601 in UTC with offset
        )
    return TextFormatter()


def configure_logging(level: LogLevel, fmt: LogFormat) -> None:
    """One handler on the root logger, to the stderr of now, at ``level`` in ``fmt``; safe to call
    again (a reload changes level and format: the handler is replaced, never doubled)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)  # ours from an earlier call, or a default one: one handler only
    handler = logging.StreamHandler(sys.stderr)
    handler.sparcs = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFields())
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
