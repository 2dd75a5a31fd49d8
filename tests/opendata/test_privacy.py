"""No personal data in any published item, on the demo fleet: every SensorThings entity (every set,
every page, expanded) and every exported file is searched for site ids, device ids, site names,
coordinates other than a district's configured centroid, and aggregates or quarter-hours of fewer
than k sites."""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import pytest

from sparcs.controller.open_data_export import export_day
from sparcs.controller.open_data_reader import OpenDataReader
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.serving import serving
from tests.opendata.conftest import HOURS, START, FixedClock, demo_cfg, fill

pytestmark = pytest.mark.asyncio
NOW = START + HOURS * 3600 + 7200
SETS = ("Things", "Locations", "Datastreams", "Sensors", "ObservedProperties", "Observations")
EXPAND = {"Things": "Datastreams,Locations", "Datastreams": "Thing,Sensor,ObservedProperty", "Locations": "Things"}


async def crawl(base: str) -> list[dict]:
    """Every published SensorThings item, page after page."""
    items: list[dict] = []
    async with httpx.AsyncClient(timeout=60) as http:
        items.append((await http.get(base)).json())
        for name in SETS:
            params = {"$top": "1000"} | ({"$expand": EXPAND[name]} if name in EXPAND else {})
            url: str | None = f"{base}/{name}?{httpx.QueryParams(params)}"
            while url is not None:
                page = (await http.get(url)).json()
                items.extend(page["value"])
                url = page.get("@iot.nextLink")
    return items


def numbers(doc) -> list[float]:
    if isinstance(doc, dict):
        return [n for v in doc.values() for n in numbers(v)]
    if isinstance(doc, list):
        return [n for v in doc for n in numbers(v)]
    return [float(doc)] if isinstance(doc, int | float) and not isinstance(doc, bool) else []


def points(doc) -> list[list[float]]:
    """Every GeoJSON point's coordinates in ``doc``."""
    if isinstance(doc, dict):
        own = [doc["coordinates"]] if doc.get("type") == "Point" else []
        return own + [p for v in doc.values() for p in points(v)]
    if isinstance(doc, list):
        return [p for v in doc for p in points(v)]
    return []


async def test_no_published_item_holds_personal_data(tmp_path):
    cfg = demo_cfg()
    k = cfg.open_data.k
    store = Store(data_dir=tmp_path / "data")
    fill(store, cfg)
    ctl = build_controller(cfg, store, FixedClock(NOW))
    async with serving(cfg, None, ctl=ctl) as s:
        items = await crawl(f"{s.base_url}/sta/v1.1")
    reader = OpenDataReader(cfg, Store(data_dir=tmp_path / "data"), FixedClock(NOW).now)
    done = export_day(cfg, reader, dt.date(2026, 6, 21), tmp_path / "out")
    reader.store.close()
    files = [p.read_text() for p in done.files]
    published = [json.dumps(i, ensure_ascii=False) for i in items] + files
    text = "\n".join(published)
    assert len(items) > 1000  # the whole catalogue and every observation were looked at

    words = set(re.findall(r"[\w.-]+", text))
    for ident in [s.id for s in cfg.sites] + [d.id for s in cfg.sites for d in s.devices]:
        assert ident not in words and f"{ident}-" not in text, ident
    for name in [s.name for s in cfg.sites if s.name]:
        assert name not in text, name

    centroids = {(d.lon, d.lat) for d in cfg.open_data.districts.values()}
    docs = items + [json.loads(f) for f in files[1:]]  # the JSON file and the metadata
    for p in points(docs):
        assert tuple(p) in centroids, p
    site_coords = {round(c, 4) for s in cfg.sites for c in (s.location.lat, s.location.lon)}
    assert not [n for n in numbers(docs) if round(n, 4) in site_coords]
    assert not [c for c in site_coords if f"{c}" in words]  # nor in the CSV

    # aggregates: every Thing sums at least k sites, every observation at least k sites
    things = [
        i for i in items if "Datastreams@iot.navigationLink" in i and "properties" in i and "kind" in i["properties"]
    ]
    assert things and all(t["properties"]["sites"] >= k for t in things)
    observations = [i for i in items if "phenomenonTime" in i]
    assert observations and all(o["parameters"]["sites"] >= k for o in observations)
    csv_rows = files[0].splitlines()[1:]
    assert csv_rows and all(int(r.split(",")[5]) >= k for r in csv_rows)
