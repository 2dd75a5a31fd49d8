"""The day-ahead prices in force: read from a CSV file, a CSV at a URL, or the ENTSO-E transparency
platform, reloaded when due; the one price source the planner and the export guard read
(docs/tariffs.md "Price sources").

Prices are EUR/MWh per quarter-hour, keyed by the quarter-hour's start (Unix s, UTC). A period no
source has a price for is NaN, never filled in: with a source configured the flat price
``market.flat_price_eur_per_mwh`` is not used at all, only when no source is configured.

ENTSO-E: the REST API (``documentType=A44``, ``in_Domain = out_Domain`` = the bidding zone,
``periodStart``/``periodEnd`` as ``yyyyMMddHHmm`` UTC, the token as ``securityToken``) answers with
a ``Publication_MarketDocument``: ``TimeSeries`` → ``Period`` (``timeInterval`` start/end,
``resolution`` PT15M or PT60M) → ``Point`` (``position`` from 1, ``price.amount`` EUR/MWh). With
``curveType`` A03 a point that repeats the one before is left out: its price holds until the next
point. No data is an ``Acknowledgement_MarketDocument`` with a ``Reason``. Parsed with the standard
library (xml.etree): one request and one small document a day need neither entsoe-py nor pandas.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import MarketConfig
from sparcs.config.tariffs import BERLIN

log = logging.getLogger("sparcs.prices")


class PriceFileError(ValueError):
    """A price file or document that cannot be read; the message names the source and the line."""


def parse_prices_csv(text: str, source: str) -> dict[float, float]:
    """CSV with columns timestamp (with offset), eur_per_mwh → {quarter-hour start (Unix s): EUR/MWh}."""
    out: dict[float, float] = {}
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            t = dt.datetime.fromisoformat(row["timestamp"])
            v = float(row["eur_per_mwh"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PriceFileError(f"{source}:{n}: needs columns timestamp,eur_per_mwh ({exc})") from None
        if t.tzinfo is None:
            raise PriceFileError(f"{source}:{n}: timestamp {row['timestamp']} needs a UTC offset")
        if not math.isfinite(v):
            raise PriceFileError(f"{source}:{n}: eur_per_mwh must be a number")
        out[t.timestamp()] = v
    return out


def read_prices_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Day-ahead prices from a CSV file → (Unix s, EUR/MWh), sorted by time."""
    return _arrays(parse_prices_csv(path.read_text(encoding="utf-8"), str(path)))


def _arrays(prices: dict[float, float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.array(sorted(prices), dtype=float)
    return t, np.array([prices[x] for x in t], dtype=float)


_RESOLUTION = re.compile(r"^PT(\d+)M$")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element, *path: str) -> str:
    node: ET.Element | None = el
    for name in path:
        node = None if node is None else _child(node, name)
    if node is None or node.text is None:
        raise PriceFileError(f"ENTSO-E document: missing {'/'.join(path)}")
    return node.text.strip()


def _utc(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_entsoe_xml(body: bytes) -> dict[float, float]:
    """{quarter-hour start (Unix s): EUR/MWh} from an ENTSO-E A44 answer; {} for "no data".

    Hourly points fill their four quarter-hours. Where TimeSeries overlap, the first one's price stays.
    """
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise PriceFileError(f"ENTSO-E answer is not XML: {exc}") from None
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        reason = root.find(".//{*}Reason/{*}text")
        log.info("ENTSO-E: no prices (%s)", "" if reason is None else reason.text)
        return {}
    if kind != "Publication_MarketDocument":
        raise PriceFileError(f"ENTSO-E answer is a {kind}, not a Publication_MarketDocument")
    out: dict[float, float] = {}
    for series in root.iter():
        if _local(series.tag) != "TimeSeries":
            continue
        curve = series.find("{*}curveType")
        fill = curve is not None and (curve.text or "").strip() == "A03"
        for period in series:
            if _local(period.tag) != "Period":
                continue
            start, end = _utc(_text(period, "timeInterval", "start")), _utc(_text(period, "timeInterval", "end"))
            m = _RESOLUTION.match(_text(period, "resolution"))
            if m is None or int(m.group(1)) % 15:
                raise PriceFileError(f"ENTSO-E resolution {_text(period, 'resolution')} is not a multiple of PT15M")
            step = int(m.group(1)) * 60
            points = sorted(
                (int(_text(p, "position")), float(_text(p, "price.amount"))) for p in period if _local(p.tag) == "Point"
            )
            slots = round((end - start) / step)
            by_pos = dict(points)
            price = math.nan
            for pos in range(1, slots + 1):
                if pos in by_pos:
                    price = by_pos[pos]
                elif not fill:
                    continue
                if math.isnan(price):
                    continue
                for q in range(step // QUARTER_S):
                    out.setdefault(start + (pos - 1) * step + q * QUARTER_S, price)
    return out


Fetch = Callable[[str, dict[str, str], float], bytes]
"""``fetch(url, params, timeout_s) -> body``: raises httpx.HTTPError (or OSError) on failure."""


def http_get(url: str, params: dict[str, str], timeout_s: float) -> bytes:
    """GET ``url`` with ``params``; raises httpx.HTTPError unless the answer is 200."""
    r = httpx.get(url, params=params, timeout=timeout_s, follow_redirects=True)
    r.raise_for_status()
    return r.content


def local_day_start_s(t_s: float, days: int = 0) -> float:
    """Unix s of the Europe/Berlin midnight starting the local day of ``t_s``, ``days`` later."""
    d = dt.datetime.fromtimestamp(t_s, BERLIN).date() + dt.timedelta(days=days)
    return dt.datetime.combine(d, dt.time(), tzinfo=BERLIN).timestamp()


def _stamp(t_s: float) -> str:
    return dt.datetime.fromtimestamp(t_s, dt.UTC).strftime("%Y%m%d%H%M")


@dataclass
class PriceAlarm:
    """One condition of the price source for the alarms: its source name, whether it holds, the text."""

    source: str
    active: bool
    message: str


class PriceSource:
    """The day-ahead prices in force and where they come from (``market``); thread-safe refresh.

    ``refresh(now_s)`` re-reads a file when its modification time changed and fetches a URL or
    ENTSO-E when ``market.refresh_interval_s`` has passed since the last attempt; a failed read keeps
    the prices known before (and says so in ``last_error``). Prices merge: a new answer adds and
    replaces quarter-hours, older ones stay (ENTSO-E is asked for today and tomorrow only).
    """

    def __init__(self, market: MarketConfig, fetch: Fetch = http_get):
        self.market = market
        self.fetch = fetch
        self._prices: dict[float, float] = {}
        self._t = np.zeros(0)
        self._v = np.zeros(0)
        self._last_price: tuple[float, np.ndarray, float | None] = (math.nan, self._v, None)
        """(instant, the price array it was looked up in, its price): a poll asks for its instant's
        price once per site; a refresh replaces the array, and with it the answer."""
        self._mtime: float | None = None
        self._last_try_s = -math.inf
        self.last_error: str | None = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """What the prices come from, for messages: the file, the URL, ``entsoe`` or ``flat``."""
        m = self.market
        if m.prices_csv is not None:
            return f"market.prices_csv ({m.prices_csv})"
        if m.prices_url is not None:
            return f"market.prices_url ({m.prices_url})"
        return "market.entsoe" if m.entsoe is not None else "market.flat_price_eur_per_mwh"

    def due(self, now_s: float) -> bool:
        """True when :meth:`refresh` would read or fetch (a file: always, its mtime is checked)."""
        m = self.market
        if m.prices_csv is not None:
            return True
        return m.has_source and now_s - self._last_try_s >= m.refresh_interval_s

    def load_file(self) -> None:
        """Read ``market.prices_csv`` now; raises PriceFileError (start-up: a broken file is an error)."""
        path = self.market.prices_csv
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceFileError(f"{path}: cannot read: {exc.strerror}") from None
        self._set(parse_prices_csv(text, str(path)), replace=True)
        self._mtime = mtime

    def refresh(self, now_s: float) -> None:
        """Read the source when due (see the class); never raises for a source that fails."""
        with self._lock:
            m = self.market
            try:
                if m.prices_csv is not None:
                    if m.prices_csv.stat().st_mtime != self._mtime:
                        self.load_file()
                    self.last_error = None
                    return
                if not self.due(now_s):
                    return
                self._last_try_s = now_s
                if m.prices_url is not None:
                    body = self.fetch(m.prices_url, {}, 20.0)
                    self._set(parse_prices_csv(body.decode("utf-8"), m.prices_url), replace=False)
                elif m.entsoe is not None:
                    e = m.entsoe
                    params = {
                        "securityToken": e.token,
                        "documentType": "A44",
                        "in_Domain": e.bidding_zone,
                        "out_Domain": e.bidding_zone,
                        "periodStart": _stamp(local_day_start_s(now_s)),
                        "periodEnd": _stamp(local_day_start_s(now_s, 2)),
                    }
                    self._set(parse_entsoe_xml(self.fetch(e.url, params, e.timeout_s)), replace=False)
                self.last_error = None
            except (OSError, UnicodeDecodeError, PriceFileError, httpx.HTTPError) as exc:
                # The token is a query parameter: never log the request's URL.
                msg = str(exc) if not isinstance(exc, httpx.HTTPStatusError) else f"HTTP {exc.response.status_code}"
                self.last_error = f"{self.source}: {msg}"
                log.warning("day-ahead prices not refreshed, those known before stay in use: %s", self.last_error)

    def _set(self, prices: dict[float, float], *, replace: bool) -> None:
        merged = dict(prices) if replace else {**self._prices, **prices}
        self._prices = merged
        self._t, self._v = _arrays(merged)

    def prices(self, t_s: np.ndarray) -> np.ndarray:
        """EUR/MWh of the quarter-hours containing the instants ``t_s``: NaN where none is known; the
        flat price everywhere when no source is configured."""
        t = np.asarray(t_s, dtype=float)
        if not self.market.has_source:
            return np.full(t.shape, float(self.market.flat_price_eur_per_mwh))
        out = np.full(t.shape, np.nan)
        if self._t.size == 0:
            return out
        idx = np.searchsorted(self._t, t, side="right") - 1
        inside = (idx >= 0) & (t < self._t[np.maximum(idx, 0)] + QUARTER_S)
        out[inside] = self._v[idx[inside]]
        return out

    def price_at(self, t_s: float) -> float | None:
        """EUR/MWh of the quarter-hour containing ``t_s``, or None when unknown."""
        at, looked_up_in, price = self._last_price
        if at == t_s and looked_up_in is self._v:
            return price
        v = float(self.prices(np.array([t_s]))[0])
        price = None if math.isnan(v) else v
        self._last_price = (t_s, self._v, price)
        return price

    def missing_quarters(self, start_s: float, end_s: float) -> int:
        """How many quarter-hours in [start_s, end_s) have no price."""
        q = np.arange(start_s, end_s, QUARTER_S)
        return int(np.isnan(self.prices(q)).sum())

    def alarms(self, now_s: float) -> list[PriceAlarm]:
        """The conditions to alarm on: no price for the current quarter-hour; tomorrow's prices not all
        known by ``market.tomorrow_expected_by`` (Europe/Berlin); the last read failed."""
        if not self.market.has_source:
            return []
        h, mi = (int(x) for x in self.market.tomorrow_expected_by.split(":"))
        local_now = dt.datetime.fromtimestamp(now_s, BERLIN)
        due = (local_now.hour, local_now.minute) >= (h, mi)
        tomorrow, after = local_day_start_s(now_s, 1), local_day_start_s(now_s, 2)
        missing = self.missing_quarters(tomorrow, after) if due else 0
        day = dt.datetime.fromtimestamp(tomorrow, BERLIN).date().isoformat()
        return [
            PriceAlarm(
                "prices:now",
                self.price_at(now_s) is None,
                f"no day-ahead price for the current quarter-hour from {self.source}: planned by the rules",
            ),
            PriceAlarm(
                "prices:tomorrow",
                missing > 0,
                f"day-ahead prices for {day} missing ({missing} quarter-hours) after "
                f"{self.market.tomorrow_expected_by} Europe/Berlin from {self.source}; plans end where prices end",
            ),
            PriceAlarm("prices:source", self.last_error is not None, f"price source failed: {self.last_error}"),
        ]
