"""The price source (controller/prices.py): ENTSO-E against a loopback server speaking its documented
A44 format, a URL reloaded when it changes, the missing-prices alarms, and the negative-price rule
read from the prices in force with no plan in force."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from sparcs.config.schema import validate_config
from sparcs.config.tariffs import BERLIN
from sparcs.controller.cycle import Controller, WallClock
from sparcs.controller.device_control import DeviceControl
from sparcs.controller.prices import PriceSource, parse_entsoe_xml
from sparcs.controller.state import build_state
from sparcs.controller.store import Store
from tests.controller.conftest import site_telemetry, small_fleet_data

NS = "urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3"
ZONE = "10Y1001A1001A82H"
TOKEN = "secret-token-1234"


def utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def a44(day: dt.date, prices: list[float | None], resolution: str = "PT15M") -> bytes:
    """A Publication_MarketDocument for one Europe/Berlin day; None leaves a point out (curveType A03)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=BERLIN)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=BERLIN)
    points = "".join(
        f"<Point><position>{i + 1}</position><price.amount>{p}</price.amount></Point>"
        for i, p in enumerate(prices)
        if p is not None
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Publication_MarketDocument xmlns="{NS}">
  <mRID>doc-1</mRID><revisionNumber>1</revisionNumber><type>A44</type>
  <sender_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</sender_MarketParticipant.mRID>
  <sender_MarketParticipant.marketRole.type>A32</sender_MarketParticipant.marketRole.type>
  <receiver_MarketParticipant.mRID codingScheme="A01">10X1001A1001A450</receiver_MarketParticipant.mRID>
  <receiver_MarketParticipant.marketRole.type>A33</receiver_MarketParticipant.marketRole.type>
  <createdDateTime>2026-03-17T12:00:00Z</createdDateTime>
  <period.timeInterval><start>{utc(start)}</start><end>{utc(end)}</end></period.timeInterval>
  <TimeSeries>
    <mRID>1</mRID><auction.type>A01</auction.type><businessType>A62</businessType>
    <in_Domain.mRID codingScheme="A01">{ZONE}</in_Domain.mRID>
    <out_Domain.mRID codingScheme="A01">{ZONE}</out_Domain.mRID>
    <contract_MarketAgreement.type>A01</contract_MarketAgreement.type>
    <currency_Unit.name>EUR</currency_Unit.name><price_Measure_Unit.name>MWH</price_Measure_Unit.name>
    <curveType>A03</curveType>
    <Period>
      <timeInterval><start>{utc(start)}</start><end>{utc(end)}</end></timeInterval>
      <resolution>{resolution}</resolution>
      {points}
    </Period>
  </TimeSeries>
</Publication_MarketDocument>""".encode()


NO_DATA = b"""<?xml version="1.0" encoding="utf-8"?>
<Acknowledgement_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0">
  <mRID>ack</mRID><createdDateTime>2026-03-18T12:00:00Z</createdDateTime>
  <Reason><code>999</code><text>No matching data found for Data item Day-ahead Prices</text></Reason>
</Acknowledgement_MarketDocument>"""


class FakeEntsoe:
    """A loopback HTTP server answering like the transparency platform: ``days`` maps the Europe/Berlin
    days it has prices for to their document; every request's query is kept."""

    def __init__(self) -> None:
        self.days: dict[dt.date, bytes] = {}
        self.requests: list[dict[str, str]] = []
        self.status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                fake.requests.append(q)
                if fake.status != 200 or q.get("securityToken") != TOKEN:
                    self.send_response(401 if fake.status == 200 else fake.status)
                    self.end_headers()
                    return
                docs = list(fake.days.values())
                body = NO_DATA if not docs else merge(docs)
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def merge(docs: list[bytes]) -> bytes:
    """One document holding the TimeSeries of several (the platform answers a range in one document)."""
    head, _, _ = docs[0].partition(b"<TimeSeries>")
    series = [
        b"<TimeSeries>" + d.partition(b"<TimeSeries>")[2].partition(b"</TimeSeries>")[0] + b"</TimeSeries>"
        for d in docs
    ]
    return head + b"".join(series) + b"</Publication_MarketDocument>"


@pytest.fixture
def entsoe() -> Iterator[FakeEntsoe]:
    server = FakeEntsoe()
    yield server
    server.close()


TODAY = dt.date(2026, 3, 18)
TOMORROW = TODAY + dt.timedelta(days=1)


def day_prices(base: float) -> list[float | None]:
    return [base + (q % 4) for q in range(96)]


def at(hour: int, minute: int = 0, day: dt.date = TODAY) -> float:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN).timestamp()


def fleet(entsoe_url: str | None = None, **market):
    data = small_fleet_data(2)
    data["sites"][0]["grid"]["negative_price_rule"] = True
    data["sites"][1]["grid"]["negative_price_rule"] = False
    if entsoe_url is not None:
        market["entsoe"] = {"token": TOKEN, "url": entsoe_url, "timeout_s": 5}
    data["market"] = market
    return validate_config(data)


def test_the_entsoe_adapter_asks_for_today_and_tomorrow_and_reads_the_a44_document(entsoe):
    prices = day_prices(80.0)
    prices[5] = None  # A03: left out because it repeats position 5
    prices[4] = 81.0
    entsoe.days[TODAY] = a44(TODAY, prices)
    source = PriceSource(fleet(entsoe.url).market)
    source.refresh(at(10))
    q = entsoe.requests[-1]
    assert q["documentType"] == "A44" and q["in_Domain"] == q["out_Domain"] == ZONE
    assert q["periodStart"] == "202603172300" and q["periodEnd"] == "202603192300"  # local days, in UTC
    assert source.last_error is None
    quarter = at(0) + 900 * np.arange(96)
    got = source.prices(quarter + 450)
    assert got[0] == 80.0 and got[4] == 81.0 and got[5] == 81.0 and got[6] == 82.0
    assert np.isnan(source.prices(np.array([at(0, day=TOMORROW)]))).all()  # not published: unknown


def test_hourly_points_fill_their_quarter_hours_and_no_data_is_empty():
    doc = a44(TODAY, [50.0 + h for h in range(24)], resolution="PT60M")
    prices = parse_entsoe_xml(doc)
    assert len(prices) == 96
    assert prices[at(1, 45)] == 51.0 and prices[at(2, 0)] == 52.0
    assert parse_entsoe_xml(NO_DATA) == {}


def test_a_failing_platform_keeps_the_known_prices_and_names_no_token(entsoe, caplog):
    entsoe.days[TODAY] = a44(TODAY, day_prices(70.0))
    source = PriceSource(fleet(entsoe.url, refresh_interval_s=60).market)
    source.refresh(at(10))
    entsoe.status = 503
    source.refresh(at(10, 5))
    assert source.last_error is not None and "HTTP 503" in source.last_error
    assert TOKEN not in source.last_error and TOKEN not in caplog.text
    assert source.price_at(at(11)) == 70.0
    assert next(a for a in source.alarms(at(10, 5)) if a.source == "prices:source").active


def test_tomorrows_missing_prices_are_an_alarm_after_the_configured_time_until_they_arrive(entsoe):
    entsoe.days[TODAY] = a44(TODAY, day_prices(70.0))
    source = PriceSource(fleet(entsoe.url, refresh_interval_s=60, tomorrow_expected_by="14:00").market)

    def alarm(now: float) -> bool:
        source.refresh(now)
        return next(a for a in source.alarms(now) if a.source == "prices:tomorrow").active

    assert not alarm(at(13, 59))
    assert alarm(at(14, 1))
    entsoe.days[TOMORROW] = a44(TOMORROW, day_prices(60.0))
    assert not alarm(at(14, 3))
    assert source.price_at(at(12, day=TOMORROW)) == 60.0


def test_a_price_url_is_fetched_again_when_due_and_its_new_prices_are_used(tmp_path):
    bodies = {"now": "timestamp,eur_per_mwh\n2026-03-18T10:00:00+01:00,40\n"}
    calls = []

    def fetch(url: str, params: dict[str, str], timeout_s: float) -> bytes:
        calls.append(url)
        return bodies["now"].encode()

    data = small_fleet_data(2)
    data["market"] = {"prices_url": "http://127.0.0.1:1/prices.csv", "refresh_interval_s": 600}
    source = PriceSource(validate_config(data).market, fetch=fetch)
    source.refresh(at(9))
    assert source.price_at(at(10, 5)) == 40.0
    bodies["now"] = "timestamp,eur_per_mwh\n2026-03-18T10:00:00+01:00,-3\n"
    source.refresh(at(9, 5))  # not due yet
    assert len(calls) == 1 and source.price_at(at(10, 5)) == 40.0
    source.refresh(at(9, 11))
    assert source.price_at(at(10, 5)) == -3.0


class Idle:
    """Poller and writer stand-ins: the cycle's price parts need neither."""

    async def poll_once(self):
        return {}

    def state(self, device_id):
        raise KeyError(device_id)

    async def close(self) -> None:
        pass

    async def apply(self, setpoints):
        return {}

    async def refresh_due(self):
        return {}


class IdlePlanner:
    """A planner stand-in that never plans."""

    def observe(self, state) -> None:
        pass

    def restore(self, plan) -> None:
        pass

    async def plan(self, state, commands, now_s):
        return None

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class At:
    def __init__(self, t: float):
        self.t = t

    def now(self) -> float:
        return self.t


async def test_the_negative_price_rule_holds_with_no_plan_in_force(entsoe, tmp_path):
    prices = day_prices(30.0)
    for q in range(48, 60):  # 12:00–15:00 local: negative
        prices[q] = -12.0
    entsoe.days[TODAY] = a44(TODAY, prices)
    cfg = fleet(entsoe.url)
    store = Store(data_dir=tmp_path)
    idle = Idle()
    clock = At(at(12, 30))
    ctl = Controller(
        cfg,
        store,
        clock,
        poller=idle,
        writer=idle,
        planner=IdlePlanner(),
        device_control=DeviceControl(store, cfg, clock.now),
    )
    try:
        await ctl._follow_prices(at(12, 30))
        assert ctl.plan is None
        rule_site, other = cfg.sites[0], cfg.sites[1]
        assert ctl.export_cap_w(rule_site.id, at(12, 30)) == 0.0
        assert ctl.export_cap_w(other.id, at(12, 30)) != 0.0
        assert ctl.export_cap_w(rule_site.id, at(11, 30)) != 0.0
        telemetry = site_telemetry(rule_site, pv=4000.0, bat=0.0, grid=-2500.0)
        state = build_state(cfg, telemetry, at(12, 30))
        assert ctl._guard(state) == [rule_site.id]  # the guard acts on the 0 W cap
    finally:
        await ctl.close()
        store.close()


async def test_missing_prices_raise_and_clear_their_alarms_in_the_store(entsoe, tmp_path):
    cfg = fleet(entsoe.url, refresh_interval_s=60)
    store = Store(data_dir=tmp_path)
    idle = Idle()
    clock = WallClock()
    ctl = Controller(
        cfg,
        store,
        clock,
        poller=idle,
        writer=idle,
        planner=IdlePlanner(),
        device_control=DeviceControl(store, cfg, clock.now),
    )
    try:
        await ctl._follow_prices(at(15))
        ctl.history.writer.flush()
        active = {a["source"]: a["message"] for a in store.alarms(active_only=True)}
        assert "prices:now" in active and "prices:tomorrow" in active
        assert "2026-03-19" in active["prices:tomorrow"] and "96 quarter-hours" in active["prices:tomorrow"]
        entsoe.days[TODAY] = a44(TODAY, day_prices(70.0))
        entsoe.days[TOMORROW] = a44(TOMORROW, day_prices(60.0))
        await ctl._follow_prices(at(15, 2))
        ctl.history.writer.flush()
        assert not [a for a in store.alarms(active_only=True) if a["source"].startswith("prices:")]
    finally:
        await ctl.close()
        store.close()
