"""Weather forecasts behind one provider interface: Open-Meteo over HTTP, a CSV file, or any object with ``fetch``.

A provider returns, for each requested place, a :class:`WeatherSeries`: quarter-hour periods (start
Unix s, UTC) with GHI and, where known, DNI/DHI (W/m², the period's mean), air temperature (°C)
and wind (m/s). The :class:`WeatherService` keeps the newest series per place, fetches again every
``refresh_s`` and keeps the last good series when a fetch fails (the planner then uses its
remaining periods, and the clear-sky baseline after them; see docs/forecasts.md).

Places are sites' coordinates rounded to a grid of ``cell_deg`` degrees, so that a city of a
thousand roofs asks for a few dozen points.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np

from sparcs.config.grid_rules import QUARTER_S
from sparcs.config.schema import FleetConfig
from sparcs.optimizer.pv_power import Irradiance

log = logging.getLogger("sparcs.weather")

Place = tuple[float, float]
"""(latitude, longitude) in degrees, rounded to the service's grid."""


class WeatherError(RuntimeError):
    """A forecast could not be fetched or read; the message names the source and what to check."""


@dataclass(frozen=True)
class WeatherSeries:
    """One place's forecast: quarter-hour periods starting at ``start_s`` (Unix s, sorted)."""

    issued_s: float
    start_s: np.ndarray
    ghi_w_m2: np.ndarray
    temp_air_c: np.ndarray
    dni_w_m2: np.ndarray | None = None
    dhi_w_m2: np.ndarray | None = None
    wind_m_s: np.ndarray | None = None

    @property
    def end_s(self) -> float:
        """End of the last period (Unix s); the forecast says nothing after it."""
        return float(self.start_s[-1] + QUARTER_S) if self.start_s.size else -math.inf

    def at(self, t_s: np.ndarray) -> tuple[Irradiance, np.ndarray]:
        """The values of the periods containing ``t_s`` and a mask of the times the forecast covers.

        Uncovered times carry NaN irradiance; the caller decides what stands in for them.
        """
        t = np.asarray(t_s, dtype=float)
        idx = np.searchsorted(self.start_s, t, side="right") - 1
        covered = (idx >= 0) & (t < self.start_s[np.maximum(idx, 0)] + QUARTER_S)
        i = np.maximum(idx, 0)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.where(covered, a[i], np.nan)

        ghi = pick(self.ghi_w_m2)
        temp = pick(self.temp_air_c)
        assert ghi is not None and temp is not None
        return Irradiance(t, ghi, temp, pick(self.dni_w_m2), pick(self.dhi_w_m2), pick(self.wind_m_s)), covered


class WeatherProvider(Protocol):
    """Anything that can forecast the weather at places; raises :class:`WeatherError` when it cannot."""

    name: str

    async def fetch(self, places: list[Place], now_s: float) -> dict[Place, WeatherSeries]: ...


class OpenMeteoProvider:
    """Open-Meteo's forecast API: ``minutely_15`` irradiance (means over the preceding 15 minutes) and weather.

    One GET for all places (Open-Meteo takes comma-separated coordinate lists and answers a list).
    """

    name = "open-meteo"
    VARIABLES = (
        "shortwave_radiation",
        "direct_normal_irradiance",
        "diffuse_radiation",
        "temperature_2m",
        "wind_speed_10m",
    )

    def __init__(
        self, url: str, timeout_s: float = 10.0, forecast_days: int = 3, client: httpx.AsyncClient | None = None
    ):
        self.url = url
        self.timeout_s = timeout_s
        self.forecast_days = forecast_days
        self.client = client

    def params(self, places: list[Place]) -> dict[str, str]:
        return {
            "latitude": ",".join(f"{lat:.4f}" for lat, _ in places),
            "longitude": ",".join(f"{lon:.4f}" for _, lon in places),
            "minutely_15": ",".join(self.VARIABLES),
            "wind_speed_unit": "ms",
            "timeformat": "unixtime",
            "timezone": "GMT",
            "forecast_days": str(self.forecast_days),
            "past_minutely_15": "8",
        }

    async def fetch(self, places: list[Place], now_s: float) -> dict[Place, WeatherSeries]:
        if not places:
            return {}
        try:
            if self.client is not None:
                response = await self.client.get(self.url, params=self.params(places), timeout=self.timeout_s)
            else:
                async with httpx.AsyncClient() as client:
                    response = await client.get(self.url, params=self.params(places), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise WeatherError(f"open-meteo at {self.url}: no answer ({exc.__class__.__name__}: {exc})") from None
        try:
            body = response.json()
        except ValueError:
            raise WeatherError(f"open-meteo at {self.url}: HTTP {response.status_code}, not JSON") from None
        if response.status_code != 200 or (isinstance(body, dict) and body.get("error")):
            reason = body.get("reason") if isinstance(body, dict) else None
            raise WeatherError(f"open-meteo at {self.url}: HTTP {response.status_code}: {reason or 'error'}")
        items = body if isinstance(body, list) else [body]
        if len(items) != len(places):
            raise WeatherError(f"open-meteo at {self.url}: {len(items)} locations answered for {len(places)} asked")
        return {place: parse_open_meteo(item, now_s, self.url) for place, item in zip(places, items, strict=True)}


def parse_open_meteo(item: Mapping[str, object], issued_s: float, source: str) -> WeatherSeries:
    """One location of an Open-Meteo answer (``timeformat=unixtime``) as a series of period starts.

    Open-Meteo stamps a radiation value at the *end* of the 15 minutes it averages: the period
    starts 900 s before its stamp. Temperature and wind are instants, taken as the period's value.
    """
    block = item.get("minutely_15")
    if not isinstance(block, dict) or "time" not in block:
        raise WeatherError(f"open-meteo at {source}: the answer has no minutely_15.time")

    def column(name: str, required: bool) -> np.ndarray | None:
        values = block.get(name)
        if values is None:
            if required:
                raise WeatherError(f"open-meteo at {source}: the answer has no minutely_15.{name}")
            return None
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)

    stamps = np.asarray(block["time"], dtype=float)
    ghi = column("shortwave_radiation", True)
    temp = column("temperature_2m", True)
    assert ghi is not None and temp is not None
    series = WeatherSeries(
        issued_s=issued_s,
        start_s=stamps - QUARTER_S,
        ghi_w_m2=ghi,
        temp_air_c=temp,
        dni_w_m2=column("direct_normal_irradiance", False),
        dhi_w_m2=column("diffuse_radiation", False),
        wind_m_s=column("wind_speed_10m", False),
    )
    if any(a is not None and a.shape != stamps.shape for a in (series.ghi_w_m2, series.temp_air_c, series.dni_w_m2)):
        raise WeatherError(f"open-meteo at {source}: minutely_15 columns differ in length")
    return series


class CsvWeatherProvider:
    """A utility's own weather service as a CSV file, read again when it changes.

    Columns: ``timestamp`` (period start, ISO 8601 with UTC offset), ``ghi_w_m2``, ``temp_air_c``;
    optional ``dni_w_m2`` and ``dhi_w_m2`` (together), ``wind_m_s``; optional ``lat`` and ``lon``
    for one series per place (the nearest place answers for a site), else one series for the city.
    """

    name = "csv"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mtime: float | None = None
        self._by_place: dict[Place, WeatherSeries] = {}

    def _read(self) -> dict[Place, WeatherSeries]:
        rows: dict[Place, list[dict[str, str]]] = {}
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"timestamp", "ghi_w_m2", "temp_air_c"} - set(reader.fieldnames or [])
            if missing:
                raise WeatherError(f"{self.path}: needs the columns {', '.join(sorted(missing))}")
            for n, row in enumerate(reader, start=2):
                try:
                    place = (float(row["lat"]), float(row["lon"])) if row.get("lat") else (math.nan, math.nan)
                except ValueError:
                    raise WeatherError(f"{self.path}:{n}: lat/lon must be numbers") from None
                row["_line"] = str(n)
                rows.setdefault(place, []).append(row)
        issued = self.path.stat().st_mtime
        return {place: self._series(place_rows, issued) for place, place_rows in rows.items()}

    def _series(self, rows: list[dict[str, str]], issued_s: float) -> WeatherSeries:
        def num(row: dict[str, str], key: str) -> float:
            text = row.get(key)
            if text in (None, ""):
                return math.nan
            try:
                return float(text)
            except ValueError:
                raise WeatherError(f"{self.path}:{row['_line']}: {key} '{text}' is not a number") from None

        starts = []
        for row in rows:
            try:
                t = dt.datetime.fromisoformat(row["timestamp"])
            except ValueError:
                raise WeatherError(
                    f"{self.path}:{row['_line']}: timestamp '{row['timestamp']}' is not ISO 8601"
                ) from None
            if t.tzinfo is None:
                raise WeatherError(f"{self.path}:{row['_line']}: timestamp {row['timestamp']} needs a UTC offset")
            starts.append(t.timestamp())
        order = np.argsort(starts)
        rows = [rows[i] for i in order]
        has_split = "dni_w_m2" in rows[0] and "dhi_w_m2" in rows[0]
        has_wind = "wind_m_s" in rows[0]

        def col(key: str) -> np.ndarray:
            return np.array([num(r, key) for r in rows])

        return WeatherSeries(
            issued_s=issued_s,
            start_s=np.asarray(starts, dtype=float)[order],
            ghi_w_m2=col("ghi_w_m2"),
            temp_air_c=col("temp_air_c"),
            dni_w_m2=col("dni_w_m2") if has_split else None,
            dhi_w_m2=col("dhi_w_m2") if has_split else None,
            wind_m_s=col("wind_m_s") if has_wind else None,
        )

    async def fetch(self, places: list[Place], now_s: float) -> dict[Place, WeatherSeries]:
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                self._by_place, self._mtime = self._read(), mtime
        except OSError as exc:
            raise WeatherError(f"{self.path}: cannot be read ({exc.strerror})") from None
        if not self._by_place:
            raise WeatherError(f"{self.path}: holds no rows")
        return {place: self._nearest(place) for place in places}

    def _nearest(self, place: Place) -> WeatherSeries:
        if len(self._by_place) == 1:
            return next(iter(self._by_place.values()))
        return min(self._by_place.items(), key=lambda kv: (kv[0][0] - place[0]) ** 2 + (kv[0][1] - place[1]) ** 2)[1]


@dataclass
class WeatherStatus:
    """What the operator sees: the provider, when it last answered, and the last error (None if fine)."""

    provider: str
    last_ok_s: float | None = None
    issued_s: float | None = None
    error: str | None = None


class WeatherService:
    """The newest forecast per place, refreshed every ``refresh_s``; never blocks the planner on the network.

    ``ensure(now_s)`` starts a fetch when one is due. In production it runs in the background and a
    plan uses what has arrived; the twin builds the service with ``wait=True`` so that its stepped
    clock stays reproducible.
    """

    def __init__(
        self,
        provider: WeatherProvider,
        places: Iterable[Place],
        refresh_s: float = 900.0,
        cell_deg: float = 0.05,
        *,
        wait: bool = False,
    ):
        self.provider = provider
        self.wait = wait
        self.cell_deg = cell_deg
        self.places = sorted({self.cell(lat, lon) for lat, lon in places})
        self.refresh_s = refresh_s
        self.series: dict[Place, WeatherSeries] = {}
        self.status = WeatherStatus(provider.name)
        self._attempt_s: float | None = None
        self._task: asyncio.Task[None] | None = None

    def cell(self, lat: float, lon: float) -> Place:
        step = self.cell_deg
        return (round(round(lat / step) * step, 4), round(round(lon / step) * step, 4))

    def due(self, now_s: float) -> bool:
        return self._attempt_s is None or now_s - self._attempt_s >= self.refresh_s

    async def _fetch(self, now_s: float) -> None:
        try:
            got = await self.provider.fetch(self.places, now_s)
        except WeatherError as exc:
            self.status.error = str(exc)
            log.warning("weather forecast not refreshed, the last one stays in use: %s", exc)
            return
        self.series.update(got)
        self.status.last_ok_s = now_s
        self.status.issued_s = max((s.issued_s for s in got.values()), default=None)
        self.status.error = None

    async def ensure(self, now_s: float) -> None:
        if self._task is not None and not self._task.done():
            if self.wait:
                await self._task
            return
        if not self.due(now_s):
            return
        self._attempt_s = now_s
        if self.wait:
            await self._fetch(now_s)
        else:
            self._task = asyncio.create_task(self._fetch(now_s))

    def at(self, lat: float, lon: float, t_s: np.ndarray) -> tuple[Irradiance, np.ndarray] | None:
        """The forecast at a site for times ``t_s`` and the mask of covered times; None without any forecast."""
        series = self.series.get(self.cell(lat, lon))
        return None if series is None else series.at(t_s)


def weather_service(cfg: FleetConfig) -> WeatherService | None:
    """The weather service that ``cfg.forecast.weather`` names; None for provider ``none``."""
    w = cfg.forecast.weather
    provider: WeatherProvider
    if w.provider == "open-meteo":
        provider = OpenMeteoProvider(w.url, w.timeout_s)
    elif w.provider == "csv" and w.csv is not None:
        provider = CsvWeatherProvider(w.csv)
    else:
        return None
    return WeatherService(provider, [(s.location.lat, s.location.lon) for s in cfg.sites], w.refresh_s, w.cell_deg)
