"""Server-side paging, sorting and filtering of /sites, /devices, /alarms and /audit, and the plan's totals
per scope (what the dashboard reads at 1,000 sites)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sparcs.config.schema import validate_config
from sparcs.controller.api import create_app
from sparcs.controller.auth import create_token
from sparcs.controller.cycle import WallClock
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.conftest import make_plan, small_fleet_data


@pytest.fixture
def client(tmp_path):
    data = small_fleet_data(4)
    data["groups"] = [{"id": "feeder-1", "name": "Feeder 1", "kind": "feeder", "sites": [data["sites"][1]["id"]]}]
    cfg = validate_config(data)
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    viewer = {"Authorization": f"Bearer {create_token(store, 'v', 'viewer', 0.0)}"}
    with TestClient(create_app(ctl), raise_server_exceptions=False, headers=viewer) as c:
        yield c, ctl
    asyncio.run(ctl.close())
    store.close()


def test_sites_page_sort_and_filter_with_the_total_in_a_header(client):
    c, ctl = client
    ids = [s.id for s in ctl.cfg.sites]
    unpaged = c.get("/api/v1/sites")
    assert [s["id"] for s in unpaged.json()] == ids and unpaged.headers["x-total-count"] == str(len(ids))
    page = c.get("/api/v1/sites", params={"sort": "-id", "limit": 2, "offset": 1})
    assert [s["id"] for s in page.json()] == sorted(ids, reverse=True)[1:3]
    assert page.headers["x-total-count"] == str(len(ids))
    name = ctl.cfg.sites[2].name
    found = c.get("/api/v1/sites", params={"q": name.upper()})
    assert [s["id"] for s in found.json()] == [ids[2]] and found.headers["x-total-count"] == "1"
    grouped = c.get("/api/v1/sites", params={"group": "feeder-1"}).json()
    assert [s["id"] for s in grouped] == [ids[1]]
    assert len(c.get("/api/v1/sites", params={"status": "no_data"}).json()) == len(ids)  # nothing polled yet
    assert c.get("/api/v1/sites", params={"status": "stale"}).json() == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/sites", {"sort": "colour"}, "sort"),
        ("/api/v1/sites", {"status": "sleepy"}, "status"),
        ("/api/v1/sites", {"limit": 0}, "limit"),
        ("/api/v1/sites", {"offset": -1}, "offset"),
        ("/api/v1/sites", {"pagesize": 5}, "pagesize"),
        ("/api/v1/devices", {"kind": "toaster"}, "kind"),
        ("/api/v1/devices", {"sort": "-volume"}, "sort"),
        ("/api/v1/alarms", {"severity": "mild"}, "severity"),
        ("/api/v1/audit", {"sort": "who"}, "sort"),
    ],
)
def test_a_bad_list_parameter_is_422_naming_it(client, path, params, field):
    c, _ = client
    r = c.get(path, params=params)
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]], r.json()


def test_an_unknown_group_is_refused_naming_the_parameter(client):
    c, _ = client
    r = c.get("/api/v1/sites", params={"group": "nowhere"})
    assert r.status_code == 422 and r.json()["error"].startswith("group: unknown group 'nowhere'")


def test_devices_filter_by_site_and_kind_and_sort(client):
    c, ctl = client
    site = ctl.cfg.sites[0]
    r = c.get("/api/v1/devices", params={"site": site.id, "sort": "-id"})
    assert [d["id"] for d in r.json()] == sorted((d.id for d in site.devices), reverse=True)
    meters = c.get("/api/v1/devices", params={"kind": "meter", "limit": 1})
    assert len(meters.json()) == 1 and meters.json()[0]["kind"] == "meter"
    assert meters.headers["x-total-count"] == str(sum(d.kind == "meter" for _, d in ctl.cfg.devices()))
    problems = c.get("/api/v1/devices", params={"problems": True}).json()
    assert len(problems) == len(list(ctl.cfg.devices()))  # nothing polled: every device is unknown


def test_alarms_and_audit_page_and_filter_in_the_store(client):
    c, ctl = client
    for i in range(5):
        ctl.store.raise_alarm(at=100.0 + i, severity="critical" if i % 2 else "warning", source=f"s{i}", message="m")
        ctl.store.audit_event(ts=100.0 + i, who="ann" if i < 3 else "bob", action="stage", params={"i": i}, result="ok")
    crit = c.get("/api/v1/alarms", params={"severity": "critical", "limit": 1, "offset": 1})
    assert [a["source"] for a in crit.json()] == ["s1"] and crit.headers["x-total-count"] == "2"
    oldest = c.get("/api/v1/alarms", params={"sort": "raised_at", "limit": 2}).json()
    assert [a["source"] for a in oldest] == ["s0", "s1"]
    ann = c.get("/api/v1/audit", params={"who": "ann", "action": "stage", "limit": 2})
    assert [a["params"]["i"] for a in ann.json()] == [2, 1] and ann.headers["x-total-count"] == "3"
    assert [a["params"]["i"] for a in c.get("/api/v1/audit", params={"who": "bob", "sort": "ts"}).json()] == [3, 4]


def test_plan_totals_compare_gross_export_like_the_meters(client):
    """A site exporting 2 kW and one importing 1.5 kW: the plan's net fleet export is 0.5 kW, the gross
    export at the meters (what the meters' export adds up to) 2 kW; the totals serve the gross one."""
    c, ctl = client
    assert c.get("/api/v1/plan/totals").json()["plan"] is None
    a, b = (s.id for s in ctl.cfg.sites[:2])
    plan = make_plan(ctl.clock.now() - 60, [900.0, 900.0], {a: ([None, None], [0, 0]), b: ([None, None], [0, 0])})
    grid = {a: np.array([-2000.0, -1000.0]), b: np.array([1500.0, np.nan])}
    ctl.plan = dataclasses.replace(
        plan,
        export_w=np.array([500.0, 1000.0]),
        sites={sid: dataclasses.replace(sp, grid_w=grid[sid]) for sid, sp in plan.sites.items()},
    )
    fleet = c.get("/api/v1/plan/totals").json()
    assert fleet["plan"]["export_w"] == [2000.0, 1000.0]
    assert fleet["sites"] == len(ctl.cfg.sites) and fleet["export_ceiling_now_w"] > 0
    assert c.get("/api/v1/plan/totals", params={"site": b}).json()["plan"]["export_w"] == [0.0, None]
    assert c.get("/api/v1/plan/totals", params={"group": "feeder-1"}).json()["plan"]["export_w"] == [0.0, None]
    assert c.get("/api/v1/plan/totals", params={"group": "nowhere"}).status_code == 404
    assert c.get("/api/v1/plan/totals", params={"site": a, "group": "feeder-1"}).status_code == 422
