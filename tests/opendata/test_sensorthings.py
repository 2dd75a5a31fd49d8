"""The SensorThings API v1.1 endpoint served by a real uvicorn on loopback, read by a standard
client (frost-sta-client, Fraunhofer IOSB): Things, Datastreams with units, paged Observations
whose values equal the sums of the stored site history; the query options; 400 naming a bad
option, never 5xx; public only while open_data.enabled."""

from __future__ import annotations

import asyncio
import datetime as dt

import frost_sta_client as fsc
import httpx
import pytest
import pytest_asyncio

from sparcs.controller.open_data import QUANTITIES
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.serving import serving
from tests.opendata.conftest import HOURS, START, FixedClock, demo_cfg, fill

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:furl.pathstr is deprecated:DeprecationWarning"),  # inside the client
]
NOW = START + HOURS * 3600 + 7200  # everything stored is published (delay 1 h)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory):
    cfg = demo_cfg()
    store = Store(data_dir=tmp_path_factory.mktemp("store"))
    history = fill(store, cfg)
    ctl = build_controller(cfg, store, FixedClock(NOW))
    async with serving(cfg, None, ctl=ctl) as s:
        yield s, history


def read_with_frost(url: str) -> dict:
    """What a SensorThings client sees: every Thing and Datastream, and one Datastream's
    Observations read in pages of 5 (the client follows @iot.nextLink)."""
    service = fsc.SensorThingsService(url)
    things = list(service.things().query().list())
    datastreams = list(service.datastreams().query().top(25).list())
    ds = service.datastreams().find(101)  # Thing 1, quantity 1
    obs = list(ds.get_observations().query().top(5).orderby("phenomenonTime", "asc").list())
    return {"things": things, "datastreams": datastreams, "ds": ds, "observations": obs}


async def test_a_sensorthings_client_reads_things_datastreams_and_paged_observations(served):
    s, history = served
    got = await asyncio.to_thread(read_with_frost, f"{s.base_url}/sta/v1.1")
    names = sorted(t.name for t in got["things"])
    assert len(names) == 10 and "Gohlis" in names
    assert len(got["datastreams"]) == 10 * len(QUANTITIES)  # four pages of 25, followed by the client
    ds = got["ds"]
    assert ds.unit_of_measurement.symbol == "Wh" and ds.unit_of_measurement.name == "watt hour"
    first = s.ctl.cfg.open_data.districts["connewitz"]  # Thing 1: the districts in id order
    assert ds.name == f"PV produced, {first.name}"
    obs = got["observations"]
    assert len(obs) == HOURS * 4
    sites = frozenset(x.id for x in s.ctl.cfg.sites if x.district == "connewitz")
    for o in obs:
        start = dt.datetime.fromisoformat(o.phenomenon_time.split("/")[0]).timestamp()
        want = history.expected(sites, start)
        assert o.result == pytest.approx(want["pv_energy_wh"], rel=1e-12)
    starts = [o.phenomenon_time for o in obs]
    assert starts == sorted(starts)


async def test_query_options_expand_filter_count_and_next_link(served):
    s, _ = served
    base = f"{s.base_url}/sta/v1.1"
    async with httpx.AsyncClient() as http:
        root = (await http.get(base)).json()
        assert {v["name"] for v in root["value"]} >= {"Things", "Datastreams", "Observations", "Locations"}
        things = (await http.get(f"{base}/Things", params={"$expand": "Datastreams,Locations", "$top": "2"})).json()
        assert len(things["value"]) == 2 and "@iot.nextLink" in things
        first = things["value"][0]
        assert len(first["Datastreams"]) == len(QUANTITIES)
        assert first["Locations"][0]["location"]["type"] == "Point"
        assert first["@iot.selfLink"] == f"{base}/Things(1)"
        assert first["Datastreams@iot.navigationLink"] == f"{base}/Things(1)/Datastreams"
        t0 = dt.datetime.fromtimestamp(START + 3600, dt.UTC).isoformat()
        t1 = dt.datetime.fromtimestamp(START + 7200, dt.UTC).isoformat().replace("+00:00", "Z")
        q = {
            "$filter": f"phenomenonTime ge {t0} and phenomenonTime lt {t1}",
            "$count": "true",
            "$orderby": "phenomenonTime desc",
            "$top": "3",
        }
        page = (await http.get(f"{base}/Datastreams(102)/Observations", params=q)).json()
        assert page["@iot.count"] == 4 and len(page["value"]) == 3
        assert page["value"][0]["phenomenonTime"].startswith(
            dt.datetime.fromtimestamp(START + 6300, dt.UTC).isoformat().replace("+00:00", "Z")
        )
        rest = (await http.get(page["@iot.nextLink"])).json()
        assert len(rest["value"]) == 1 and "@iot.nextLink" not in rest
        nested = (
            await http.get(f"{base}/Things(2)", params={"$expand": "Datastreams($top=2;$expand=Observations($top=1))"})
        ).json()
        assert len(nested["Datastreams"]) == 2 and len(nested["Datastreams"][0]["Observations"]) == 1
        assert "Datastreams@iot.nextLink" in nested
        obs = nested["Datastreams"][0]["Observations"][0]
        one = (await http.get(f"{base}/Observations({obs['@iot.id']})", params={"$expand": "Datastream/Thing"})).json()
        assert one["result"] == obs["result"] and one["Datastream"]["Thing"]["@iot.id"] == 2
        assert (await http.get(f"{base}/Observations({obs['@iot.id']})/Datastream/Thing")).json()["name"] == one[
            "Datastream"
        ]["Thing"]["name"]
        all_obs = (await http.get(f"{base}/Observations", params={"$count": "true", "$top": "1"})).json()
        # 10 districts × quarter-hours × 9 quantities, less Schleussig's withheld quarter-hour
        assert all_obs["@iot.count"] == (10 * HOURS * 4 - 1) * len(QUANTITIES)


@pytest.mark.parametrize(
    ("path", "params", "option"),
    [
        ("Observations", {"$top": "-1"}, "$top"),
        ("Observations", {"$top": "100000"}, "$top"),
        ("Observations", {"$skip": "x"}, "$skip"),
        ("Observations", {"$filter": "result gt 3"}, "$filter"),
        ("Observations", {"$filter": "phenomenonTime ge 2026-06-21T10:00:00"}, "$filter"),
        ("Observations", {"$filter": "phenomenonTime ge yesterday"}, "$filter"),
        ("Observations", {"$orderby": "colour asc"}, "$orderby"),
        ("Observations", {"$orderby": "phenomenonTime sideways"}, "$orderby"),
        ("Things", {"$filter": "phenomenonTime ge 2026-06-21T10:00:00Z"}, "$filter"),
        ("Things", {"$expand": "Observations"}, "$expand"),
        ("Things", {"$expand": "Datastreams($top)"}, "$expand"),
        ("Things", {"$expand": "Datastreams($top=x)"}, "$top"),
        ("Things", {"$select": "name"}, "$select"),
        ("Things", {"$count": "maybe"}, "$count"),
        ("Things", {"$orderby": "result"}, "$orderby"),
    ],
)
async def test_a_bad_query_option_is_a_400_that_names_it(served, path, params, option):
    s, _ = served
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{s.base_url}/sta/v1.1/{path}", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(option)


ODD = [
    "$top=0&$count=true",
    "$skip=999999999999",
    "$expand=Datastreams(",
    "$expand=Datastreams/",
    "$expand=Datastreams($expand=Observations($filter=phenomenonTime ge 9999-12-31T23:59:59-12:00))",
    "$filter=phenomenonTime ge 0001-01-01T00:00:00+14:00",
    "$filter=(phenomenonTime gt 2026-06-21T10:00:00Z) and (resultTime le 2026-06-21T11:00:00+02:00)",
    "$filter=phenomenonTime eq 2026-06-21T10:00:00Z or phenomenonTime eq 2026-06-21T10:15:00Z",
    "$orderby=result desc,id",
    "$orderby=",
    "$expand=" + "Datastreams/" * 50 + "Thing",
    "$top=%00",
]


@pytest.mark.parametrize("query", ODD)
@pytest.mark.parametrize("path", ["Things", "Datastreams(101)/Observations", "Observations"])
async def test_odd_queries_never_get_a_5xx(served, path, query):
    s, _ = served
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{s.base_url}/sta/v1.1/{path}?{query}")
    assert r.status_code in (200, 400), (r.status_code, r.text)
    if query.startswith("$top=0"):
        assert r.json()["value"] == [] and r.json()["@iot.count"] > 0 and "@iot.nextLink" not in r.json()


@pytest.mark.parametrize(
    "path",
    [
        "Nothing",
        "Things(999)",
        "Things('a')",
        "Things(1)/Sensor",
        "Things/Datastreams",
        "Datastreams(199)",
        "Observations(5)",
    ],
)
async def test_an_unknown_resource_is_a_404(served, path):
    s, _ = served
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{s.base_url}/sta/v1.1/{path}")
    assert r.status_code == 404, r.text


async def test_the_endpoint_is_off_unless_enabled(tmp_path):
    cfg = demo_cfg(enabled=False)
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, FixedClock(NOW))
    async with serving(cfg, None, ctl=ctl) as s, httpx.AsyncClient() as http:
        r = await http.get(f"{s.base_url}/sta/v1.1/Things")
    assert r.status_code == 404 and "open_data.enabled" in r.json()["error"]
