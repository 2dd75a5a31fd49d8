"""Server-side paging, sorting and filtering of the API's list routes (/sites, /devices; /alarms and
/audit page in the store): pure functions over the rows the read model renders.

A sort key names a field; ``-key`` sorts descending. Rows without a value for the key (null) come
last in either direction. Without ``limit`` every matching row is returned (the unpaged answer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
"""One row as the read model renders it (JSON-safe)."""


@dataclass(frozen=True)
class PageRequest:
    """Which slice of the matching rows to return: ``offset`` rows skipped, at most ``limit`` (None:
    all), ordered by ``sort`` (a key of the route's sort keys, ``-`` prefix descending; None: the
    route's own order)."""

    offset: int = 0
    limit: int | None = None
    sort: str | None = None


@dataclass(frozen=True)
class RowPage:
    """The rows of one page and how many rows matched the filters in all (``total``)."""

    rows: list[Row]
    total: int


def page_rows(
    rows: Sequence[Row],
    keep: Callable[[Row], bool],
    request: PageRequest,
    sort_keys: dict[str, Callable[[Row], Any]],
) -> RowPage:
    """The rows that ``keep`` accepts, sorted by ``request.sort`` with ``sort_keys`` (stable, nulls
    last), then sliced to the requested page."""
    kept = [r for r in rows if keep(r)]
    if request.sort:
        name = request.sort.removeprefix("-")
        key = sort_keys[name]
        present = [r for r in kept if key(r) is not None]
        absent = [r for r in kept if key(r) is None]
        present.sort(key=key, reverse=request.sort.startswith("-"))
        kept = present + absent
    end = None if request.limit is None else request.offset + request.limit
    return RowPage(rows=kept[request.offset : end], total=len(kept))


def sort_choices(keys: Sequence[str]) -> list[str]:
    """Every accepted value of a ``sort`` parameter: each key, ascending and descending."""
    return [*keys, *(f"-{k}" for k in keys)]


def _now(key: str) -> Callable[[Row], Any]:
    """The sort key of a site's measurement now (None without one)."""
    return lambda row: (row.get("now") or {}).get(key)


SITE_SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "id": lambda r: r["id"],
    "name": lambda r: r["name"].casefold(),
    "feed_in_cap_w": lambda r: r["feed_in_cap_w"],
    **{k: _now(k) for k in ("pv_w", "load_w", "battery_w", "export_w", "soc")},
}
"""The sort keys of GET /api/v1/sites: id, name, the feed-in cap and the measurements now (W, SoC 0..1)."""

SITE_STATUSES = ("online", "stale", "no_data", "curtailed", "para14a")
"""``status`` of GET /api/v1/sites: every device online, a device stale, no measurement yet,
curtailed (docs/definitions.md "Grid rules"), under §14a dimming."""


@dataclass(frozen=True)
class SiteFilter:
    """Which sites GET /api/v1/sites returns: ``q`` in the id or name (any case), the sites of a group
    (``sites``: their ids, None for every site), and a ``status`` of :data:`SITE_STATUSES`."""

    q: str | None = None
    sites: frozenset[str] | None = None
    status: str | None = None

    def keep(self, row: Row) -> bool:
        if self.sites is not None and row["id"] not in self.sites:
            return False
        if self.q and self.q.casefold() not in f"{row['id']} {row['name']}".casefold():
            return False
        return self.status is None or site_status(row, self.status)


def site_status(row: Row, status: str) -> bool:
    """Whether a site row is in ``status`` (:data:`SITE_STATUSES`)."""
    now = row.get("now")
    if status == "no_data":
        return now is None
    if status == "curtailed":
        return bool(row["curtailed"])
    if status == "para14a":
        return bool(row["para14a"])
    if now is None:
        return False
    if status == "stale":
        return bool(now["devices_stale"])
    return bool(now["devices_online"] == now["devices_total"])


DEVICE_SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "id": lambda r: r["id"],
    "site": lambda r: (r["site"], r["id"]),
    "kind": lambda r: (r["kind"], r["id"]),
    "status": lambda r: (r["status"], r["id"]),
    "last_seen": lambda r: r["last_seen"],
}
"""The sort keys of GET /api/v1/devices."""


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices GET /api/v1/devices returns: ``q`` in the id (any case), of one ``site``, of one
    ``kind``, in one ``status``; ``problems``: only those not online or with a value not good."""

    q: str | None = None
    site: str | None = None
    kind: str | None = None
    status: str | None = None
    problems: bool = False

    def keep(self, row: Row) -> bool:
        if self.site is not None and row["site"] != self.site:
            return False
        if self.kind is not None and row["kind"] != self.kind:
            return False
        if self.status is not None and row["status"] != self.status:
            return False
        if self.q and self.q.casefold() not in row["id"].casefold():
            return False
        bad = row["status"] != "online" or any(v["quality"] != "good" for v in row["values"].values())
        return bad or not self.problems
