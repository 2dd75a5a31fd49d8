"""Weather forecasts behind one interface: Open-Meteo over loopback HTTP, a CSV file, and the planner's use of them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from sparcs.config.schema import validate_config
from sparcs.controller.planning import FleetPlanner
from sparcs.controller.weather import (
    CsvWeatherProvider,
    OpenMeteoProvider,
    WeatherError,
    WeatherService,
    weather_service,
)
from sparcs.optimizer.curves import PvGeometry, clearsky_irradiance_w_m2, clearsky_w_per_kwp
from sparcs.optimizer.forecast import TYPICAL_CLEARNESS
from tests.controller.conftest import small_fleet_data
from tests.ports import free_ports

T0 = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()


def open_meteo_location(lat: float, lon: float, stamps: list[int], ghi: float) -> dict:
    """One location of an Open-Meteo forecast answer as its documentation shows it (timeformat=unixtime)."""
    n = len(stamps)
    return {
        "latitude": lat,
        "longitude": lon,
        "generationtime_ms": 0.4,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 113.0,
        "minutely_15_units": {
            "time": "unixtime",
            "shortwave_radiation": "W/m²",
            "direct_normal_irradiance": "W/m²",
            "diffuse_radiation": "W/m²",
            "temperature_2m": "°C",
            "wind_speed_10m": "m/s",
        },
        "minutely_15": {
            "time": stamps,
            "shortwave_radiation": [ghi] * n,
            "direct_normal_irradiance": [ghi * 0.8] * n,
            "diffuse_radiation": [ghi * 0.2] * (n - 1) + [None],
            "temperature_2m": [21.5] * n,
            "wind_speed_10m": [2.0] * n,
        },
    }


class FakeOpenMeteo:
    """A loopback HTTP server that answers like api.open-meteo.com/v1/forecast."""

    def __init__(self, answer):
        self.answer = answer  # callable(query) -> (status, body)
        self.queries: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                outer.queries.append(query)
                status, body = outer.answer(url.path, query)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/forecast"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_open_meteo_answers_every_place_in_one_request():
    stamps = [int(T0) + 900 * (i + 1) for i in range(8)]

    def answer(path, query):
        lats = [float(v) for v in query["latitude"][0].split(",")]
        lons = [float(v) for v in query["longitude"][0].split(",")]
        return 200, [
            open_meteo_location(a, b, stamps, 500.0 + 100 * i) for i, (a, b) in enumerate(zip(lats, lons, strict=True))
        ]

    places = [(51.35, 12.35), (51.30, 12.40)]
    with FakeOpenMeteo(answer) as server:
        got = asyncio.run(OpenMeteoProvider(server.url).fetch(places, T0))
    query = server.queries[0]
    assert query["timeformat"] == ["unixtime"] and query["wind_speed_unit"] == ["ms"]
    assert set(query["minutely_15"][0].split(",")) >= {"shortwave_radiation", "temperature_2m"}
    first, second = got[places[0]], got[places[1]]
    # A radiation value is the mean of the 15 minutes before its stamp: the period starts 900 s earlier.
    assert first.start_s[0] == T0 and first.end_s == T0 + 8 * 900
    assert first.ghi_w_m2.tolist() == [500.0] * 8 and second.ghi_w_m2.tolist() == [600.0] * 8
    assert np.isnan(first.dhi_w_m2[-1]) and first.wind_m_s.tolist() == [2.0] * 8
    weather, covered = first.at(np.array([T0 + 100.0, T0 + 8 * 900 + 1.0]))
    assert covered.tolist() == [True, False] and weather.temp_air_c[0] == 21.5 and np.isnan(weather.ghi_w_m2[1])


def test_open_meteo_errors_name_the_source_and_the_reason():
    refused = FakeOpenMeteo(lambda p, q: (400, {"error": True, "reason": "Latitude must be in range of -90 to 90°."}))
    with (
        refused as s,
        pytest.raises(WeatherError, match=r"open-meteo at http://127.0.0.1:\d+/v1/forecast: HTTP 400: Lat"),
    ):
        asyncio.run(OpenMeteoProvider(s.url).fetch([(51.3, 12.4)], T0))
    empty = FakeOpenMeteo(lambda p, q: (200, {"latitude": 51.3, "longitude": 12.4}))
    with empty as s, pytest.raises(WeatherError, match=r"has no minutely_15\.time"):
        asyncio.run(OpenMeteoProvider(s.url).fetch([(51.3, 12.4)], T0))
    (port,) = free_ports(1)
    with pytest.raises(WeatherError, match="no answer"):
        asyncio.run(OpenMeteoProvider(f"http://127.0.0.1:{port}/v1/forecast", timeout_s=2).fetch([(51.3, 12.4)], T0))


def write_weather_csv(path, ghi: float, n: int = 16, start_s: float = T0, extra: str = "") -> None:
    rows = ["timestamp,ghi_w_m2,temp_air_c"]
    for i in range(n):
        stamp = dt.datetime.fromtimestamp(start_s + 900 * i, dt.UTC).isoformat()
        rows.append(f"{stamp},{ghi},18")
    path.write_text("\n".join(rows) + "\n" + extra)


def test_the_csv_provider_reads_again_when_the_file_changes_and_names_bad_lines(tmp_path):
    path = tmp_path / "weather.csv"
    write_weather_csv(path, 300.0)
    provider = CsvWeatherProvider(path)
    place = (51.35, 12.35)
    assert asyncio.run(provider.fetch([place], T0))[place].ghi_w_m2[0] == 300.0
    write_weather_csv(path, 450.0)
    os.utime(path, (1, T0 + 5))
    assert asyncio.run(provider.fetch([place], T0))[place].ghi_w_m2[0] == 450.0
    write_weather_csv(path, 450.0, extra="2026-06-21T14:00:00,sunny,18\n")
    os.utime(path, (1, T0 + 9))
    with pytest.raises(WeatherError, match=r"weather.csv:18: timestamp 2026-06-21T14:00:00 needs a UTC offset"):
        asyncio.run(provider.fetch([place], T0))
    path.write_text("timestamp,ghi\n")
    os.utime(path, (1, T0 + 12))
    with pytest.raises(WeatherError, match="needs the columns ghi_w_m2, temp_air_c"):
        asyncio.run(provider.fetch([place], T0))


def test_the_service_keeps_the_last_good_forecast_when_a_fetch_fails(tmp_path):
    path = tmp_path / "weather.csv"
    write_weather_csv(path, 300.0)
    service = WeatherService(CsvWeatherProvider(path), [(51.34, 12.37)], refresh_s=900, wait=True)
    asyncio.run(service.ensure(T0))
    assert service.status.error is None and service.status.last_ok_s == T0
    path.unlink()
    asyncio.run(service.ensure(T0 + 60))  # not due yet: no fetch
    assert service.status.error is None
    asyncio.run(service.ensure(T0 + 900))
    assert "cannot be read" in service.status.error and service.status.last_ok_s == T0
    got = service.at(51.34, 12.37, np.array([T0 + 60.0]))
    assert got is not None and got[0].ghi_w_m2[0] == 300.0


def cfg_with_weather(tmp_path, n_sites=2, **weather):
    data = small_fleet_data(n_sites)
    data["forecast"] = {"weather": weather}
    return validate_config(data)


def test_the_plan_rests_on_the_weather_forecast_where_it_has_one(tmp_path):
    path = tmp_path / "weather.csv"
    cfg = cfg_with_weather(tmp_path, provider="csv", csv=str(path))
    site = cfg.sites[0]
    geom = PvGeometry(
        site.location.lat, site.location.lon, site.location.altitude_m, site.pv.tilt_deg, site.pv.azimuth_deg
    )
    mid = T0 + 450 + 900 * np.arange(24)
    ghi, dni, dhi = clearsky_irradiance_w_m2(geom, mid)
    rows = ["timestamp,ghi_w_m2,temp_air_c,dni_w_m2,dhi_w_m2"]
    for i in range(16):  # four hours of forecast: a clear sky at half strength
        stamp = dt.datetime.fromtimestamp(T0 + 900 * i, dt.UTC).isoformat()
        rows.append(f"{stamp},{ghi[i] / 2},,{dni[i] / 2},{dhi[i] / 2}")
    path.write_text("\n".join(rows) + "\n")
    service = weather_service(cfg)
    assert service is not None and service.provider.name == "csv"
    service.wait = True
    planner = FleetPlanner(cfg, weather=service)
    try:
        asyncio.run(service.ensure(T0))
        fc = planner.pv_forecasts([site], T0, mid)[site.id]
        clear = clearsky_w_per_kwp(geom, mid) * site.pv.kwp
        assert fc[:16] == pytest.approx(clear[:16] / 2, rel=0.02)  # the forecast, no measurement to correct it
        assert fc[16:] == pytest.approx(clear[16:] * TYPICAL_CLEARNESS, rel=0.02)  # climatology after its end
    finally:
        planner.close()


def test_a_cloud_seen_by_the_neighbours_lowers_a_sites_next_hour_forecast():
    data = small_fleet_data(5)
    for i, site in enumerate(data["sites"]):  # five roofs within a few hundred metres
        site["location"]["lat"], site["location"]["lon"] = 51.340 + 0.001 * i, 12.370 + 0.001 * i
    cfg = validate_config(data)
    mid = T0 + 450 + 900 * np.arange(16)

    def forecast(neighbour_clearness: float) -> np.ndarray:
        planner = FleetPlanner(cfg)
        try:
            for site in cfg.sites:
                geom = planner.geometry[site.id]
                for k in range(60):
                    t = T0 - 3600 + 60 * k
                    clear = float(clearsky_w_per_kwp(geom, t)[0]) * site.pv.kwp
                    if site.id == cfg.sites[-1].id:  # the last site's PV is held by its limit: no clue
                        planner.measurements.samples[site.id].append(t, 0.3 * clear, 500.0, True)
                    else:
                        planner.measurements.samples[site.id].append(t, neighbour_clearness * clear, 500.0, False)
            return planner.pv_forecasts(list(cfg.sites), T0, mid)[cfg.sites[-1].id]
        finally:
            planner.close()

    cloudy, clear = forecast(0.3), forecast(TYPICAL_CLEARNESS)
    assert cloudy[:4].mean() < 0.6 * clear[:4].mean()  # the next hour
    assert cloudy[-1] / clear[-1] > cloudy[0] / clear[0]  # fading with lead time


def test_forecast_quality_reaches_the_metrics():
    from sparcs.controller.metrics import Metrics
    from sparcs.optimizer.forecast_quality import QualityRow

    metrics = Metrics()
    metrics.observe_forecast_quality(
        [
            QualityRow("pv", (0, 1), 40, 0.052, {"persistence": 0.21, "climatology": 0.6}),
            QualityRow("load", (24, 48), 0, None, {"persistence": None, "climatology": None}),
        ]
    )
    text = metrics.render().decode()
    assert 'sparcs_forecast_nmae_ratio{kind="pv",lead="0-1h"} 0.052' in text
    assert 'sparcs_forecast_skill_ratio{kind="pv",lead="0-1h",reference="persistence"} 0.21' in text
    assert 'kind="load"' not in text  # nothing measured yet: no figure rather than a made-up one
