"""The published open-data values read from the store (docs/open-data.md), for the SensorThings
endpoint and the file export: :func:`~sparcs.controller.open_data.aggregate` over the store's
per-site quarter-hours, only up to what the delay allows. A UTC day that is published whole is kept
in memory once read (at most ``CACHE_DAYS``), so paging through a long series reads each day once.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from sparcs.config.schema import FleetConfig
from sparcs.controller.open_data import AreaQuarter, Areas, aggregate, areas, published_end_s
from sparcs.controller.store import Store

DAY_S = 86_400.0
CACHE_DAYS = 400


class OpenDataReader:
    """Reads the published :class:`AreaQuarter` values of ``cfg``'s areas from ``store``; ``now``: the clock."""

    def __init__(self, cfg: FleetConfig, store: Store, now: Callable[[], float]):
        self.cfg, self.store, self.now = cfg, store, now
        self.areas: Areas = areas(cfg)
        self._days: OrderedDict[float, list[AreaQuarter]] = OrderedDict()

    def published_end_s(self) -> float:
        """The end of the last quarter-hour published now (Unix s)."""
        return published_end_s(self.now(), self.cfg.open_data.delay_s)

    def first_s(self) -> float | None:
        """The start of the first quarter-hour the store has site history for, or None."""
        first = self.store.site_history_first_ts()
        return None if first is None else math.floor(first / 900.0) * 900.0

    def quarters(self, start_s: float | None = None, end_s: float | None = None) -> list[AreaQuarter]:
        """The published values with a start in [start_s, end_s) (default: all that is published),
        ordered by time and area."""
        first = self.first_s()
        end = self.published_end_s() if end_s is None else min(end_s, self.published_end_s())
        start = first if start_s is None else (start_s if first is None else max(start_s, first))
        if start is None or start >= end:
            return []
        out: list[AreaQuarter] = []
        day = math.floor(start / DAY_S) * DAY_S
        while day < end:
            out += [q for q in self._day(day, end) if start <= q.start_s < end]
            day += DAY_S
        return out

    def _day(self, day: float, published_end: float) -> list[AreaQuarter]:
        cached = self._days.get(day)
        if cached is not None:
            self._days.move_to_end(day)
            return cached
        whole = day + DAY_S <= published_end
        rows = self.store.site_quarters(day, min(day + DAY_S, published_end))
        values = aggregate(self.areas.published, rows, self.cfg.open_data.k)
        if whole:
            self._days[day] = values
            while len(self._days) > CACHE_DAYS:
                self._days.popitem(last=False)
        return values
