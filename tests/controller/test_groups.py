"""Groups of sites: commands addressed to a group (the most restrictive still wins per site), pool
limits and relay states as commands with one audit entry each, the group routes of the API, the
group gauges, and the config's checks of groups, pool and relay inputs."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from fastapi.testclient import TestClient

from sparcs.config.grid_rules import pool_share_w
from sparcs.config.schema import ConfigError, validate_config
from sparcs.controller.api import create_app
from sparcs.controller.auth import create_token
from sparcs.controller.commands import (
    CommandBook,
    CommandError,
    Para14aRequest,
    PoolLimitRequest,
    RelayRequest,
    StageRequest,
)
from sparcs.controller.cycle import WallClock
from sparcs.controller.relay_inputs import RelayState, relay_state
from sparcs.controller.state import build_state, site_flexibility
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.conftest import site_telemetry, small_fleet_data

T0 = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()


def at(seconds: float, base: float = T0) -> str:
    return dt.datetime.fromtimestamp(base + seconds, dt.UTC).isoformat()


def grouped_data() -> dict:
    data = small_fleet_data(3)
    ids = [s["id"] for s in data["sites"]]
    data["groups"] = [
        {"id": "feeder-a", "kind": "feeder", "sites": ids[:2]},
        {"id": "portfolio", "kind": "portfolio", "sites": ids[1:], "pool_unit": 2},
    ]
    return data


@pytest.fixture
def cfg():
    return validate_config(grouped_data())


@pytest.fixture
def book(tmp_path, cfg):
    store = Store(data_dir=tmp_path)
    yield CommandBook(store, cfg)
    store.close()


def test_a_group_stage_covers_its_sites_and_the_most_restrictive_wins_per_site(book, cfg):
    a, b, c = (s.id for s in cfg.sites)
    book.submit_stage(StageRequest(stage="K3", group="feeder-a", expires_at=at(3600)), "op", T0)
    book.submit_stage(StageRequest(stage="K2", group="portfolio", expires_at=at(600)), "op", T0)
    book.submit_stage(StageRequest(stage="K4", expires_at=at(3600)), "op", T0)  # fleet-wide
    assert [book.stage(s, T0 + 1) for s in (a, b, c)] == ["K3", "K2", "K2"]  # b is in both groups
    assert [book.stage(s, T0 + 601) for s in (a, b, c)] == ["K3", "K3", "K4"]  # K2 expired
    cmd = book.active(T0)[0]
    assert cmd.params == {"stage": "K3", "sites": [a, b], "group": "feeder-a"}


def test_a_group_command_names_what_is_wrong(book, cfg):
    with pytest.raises(CommandError) as err:
        book.submit_stage(StageRequest(stage="K1", group="nowhere", expires_at=at(60)), "op", T0)
    assert err.value.field == "group" and "GET /api/v1/groups" in err.value.message
    with pytest.raises(CommandError) as err:
        book.submit_para14a(Para14aRequest(group="feeder-a", sites=[cfg.sites[0].id], expires_at=at(60)), "op", T0)
    assert err.value.field == "group" and "not both" in err.value.message
    assert book.active(T0) == []


def test_a_pool_limit_is_each_sites_share_and_a_newer_one_replaces_it_in_one_audit_entry(book, cfg):
    a, b, c = (s.id for s in cfg.sites)
    first = book.submit(PoolLimitRequest(group="feeder-a", limit_pct=50, expires_at=at(120)), "pool", T0)
    assert book.export_limit_w(a, T0) == pytest.approx(0.5 * cfg.site(a).pv.rating_w)
    assert book.export_limit_w(c, T0) is None
    second = book.submit(PoolLimitRequest(group="feeder-a", limit_pct=70, expires_at=at(120)), "pool", T0 + 5)
    assert book.export_limit_w(a, T0 + 6) == pytest.approx(pool_share_w(70, cfg.site(a).pv.rating_w))
    book.submit(PoolLimitRequest(group="portfolio", limit_pct=20, expires_at=at(60)), "pool", T0 + 5)
    assert book.export_limit_w(b, T0 + 6) == pytest.approx(0.2 * cfg.site(b).pv.rating_w)  # most restrictive
    audit = [e for e in book.store.audit_log() if e["action"] == "pool_limit"]
    assert len(audit) == 3 and audit[1]["params"]["supersedes"] == [first.id]
    assert [c.id for c in book.active(T0 + 6) if c.params.get("group") == "feeder-a"] == [second.id]
    again = CommandBook(book.store, cfg)
    again.load(T0 + 6)  # the replaced limit stays ended after a restart
    assert again.pool_limit("feeder-a", T0 + 6).id == second.id
    assert book.export_limit_w(a, T0 + 121) is None  # the revert timer ran out
    assert [c.id for c in book.lapsed_pool_limits(T0 + 121)] == [second.id, second.id + 1]


def test_relay_states_replace_each_other_and_count_as_stage_and_dimming(book, cfg):
    a, _, c = (s.id for s in cfg.sites)
    book.submit(RelayRequest(source="box", group="feeder-a", stage="K3"), "relay:box", T0)
    book.submit(RelayRequest(source="box", group="feeder-a", stage=None, para14a=True), "relay:box", T0 + 10)
    assert book.stage(a, T0 + 11) is None and book.para14a(a, T0 + 11) and not book.para14a(c, T0 + 11)
    assert len([x for x in book.active(T0 + 11) if x.kind == "relay"]) == 1
    again = CommandBook(book.store, cfg)
    again.load(T0 + 20)  # after a restart, before the module is read again: the last state holds
    assert again.para14a(a, T0 + 20) and again.relay_state("box") is not None
    assert relay_state([False, True, True, False], ["K1", "K2", "K3", "K4"]) == RelayState("K2", False)
    assert relay_state([True, False, True], ["none", "para14a", "K4"]) == RelayState("K4", False)
    assert relay_state([False, True], ["K1", "para14a"]) == RelayState(None, True)
    assert relay_state([False] * 4, ["K1", "K2", "K3", "K4"]) == RelayState(None, False)


def test_the_config_names_bad_group_pool_and_relay_references():
    data = grouped_data()
    data["groups"].append({"id": "feeder-a", "sites": ["nowhere"], "pool_unit": 2})
    data["pool"] = {"fleet_unit": 1}
    data["relay_inputs"] = [{"id": "box", "port": 1502, "group": "no-group"}]
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    text = "\n".join(err.value.errors)
    assert "group id 'feeder-a' is used twice" in text
    assert "groups[feeder-a].sites: unknown site 'nowhere'" in text
    assert "relay_inputs[box].group: unknown group 'no-group'" in text
    assert "pool: a unit id is used twice" in text


@pytest.fixture
def api(tmp_path, cfg):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    op = {"Authorization": f"Bearer {create_token(store, 'op', 'operator', 0.0)}"}
    with TestClient(create_app(ctl), raise_server_exceptions=False) as client:
        yield client, ctl, op
    asyncio.run(ctl.close())
    store.close()


def iso_in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_group_commands_and_reads_in_the_api(api):
    client, ctl, op = api
    a, b, c = (s.id for s in ctl.cfg.sites)
    r = client.post(
        "/api/v1/commands/stage", json={"stage": "K2", "group": "feeder-a", "expires_at": iso_in(600)}, headers=op
    )
    assert r.status_code == 201 and r.json()["command"]["params"]["sites"] == [a, b]
    r = client.post(
        "/api/v1/commands/stage", json={"stage": "K2", "group": "nope", "expires_at": iso_in(600)}, headers=op
    )
    assert r.status_code == 422 and "group" in r.text and "nope" in r.text
    r = client.post(
        "/api/v1/commands/pool-limit",
        json={"group": "portfolio", "limit_pct": 40, "expires_at": iso_in(300)},
        headers=op,
    )
    assert r.status_code == 201
    r = client.post("/api/v1/commands/pool-limit", json={"limit_pct": 140, "expires_at": iso_in(300)}, headers=op)
    assert r.status_code == 422 and "limit_pct" in r.text
    groups = client.get("/api/v1/groups", headers=op).json()
    assert [g["id"] for g in groups] == ["feeder-a", "portfolio"]
    feeder = client.get("/api/v1/groups/feeder-a", headers=op).json()
    assert feeder["stages"] == {a: "K2", b: "K2"} and feeder["pool_limit_pct"] is None
    assert feeder["rating_w"] == pytest.approx(ctl.cfg.site(a).pv.rating_w + ctl.cfg.site(b).pv.rating_w)
    portfolio = client.get("/api/v1/groups/portfolio", headers=op).json()
    assert portfolio["pool_limit_pct"] == 40 and portfolio["pool_unit"] == 2
    caps = {s["site"]: s for s in client.get("/api/v1/caps", headers=op).json()["sites"]}
    assert caps[c]["pool_limit_w"] == pytest.approx(0.4 * ctl.cfg.site(c).pv.rating_w)
    assert caps[c]["export_cap_now_w"] <= caps[c]["pool_limit_w"]
    assert caps[a]["pool_limit_w"] is None
    r = client.get("/api/v1/groups/nope", headers=op)
    assert r.status_code == 404 and "GET /api/v1/groups" in r.text
    assert [e["action"] for e in client.get("/api/v1/audit", headers=op).json()] == ["pool_limit", "stage"]


def test_a_groups_history_sums_its_sites_per_bucket(api):
    client, ctl, op = api
    a, b, c = ctl.cfg.sites
    now = ctl.clock.now()
    tel = {
        k: v
        for i, site in enumerate((a, b, c))
        for k, v in site_telemetry(site, pv=1000.0 * (i + 1), grid=-500.0).items()
    }
    state = build_state(ctl.cfg, tel, now - 120)
    ctl.history.record(state, tel, state.summary())
    ctl.history.writer.flush()  # the history writer thread stores it
    r = client.get("/api/v1/groups/feeder-a/history", params={"resolution_s": 3600}, headers=op)
    assert r.status_code == 200, r.text
    (point,) = r.json()["points"]
    assert point["sites"] == 2 and point["pv_w"] == pytest.approx(3000.0) and point["export_w"] == pytest.approx(1000.0)
    assert client.get("/api/v1/groups/nope/history", headers=op).status_code == 404
    r = client.get("/api/v1/groups/feeder-a/history", params={"start": "2026-01-02T00:00:00"}, headers=op)
    assert r.status_code == 422 and "start" in r.text


def test_the_group_gauges_sum_the_groups_sites(api):
    client, ctl, op = api
    a, b, _ = ctl.cfg.sites
    tel = {**site_telemetry(a, grid=-1500.0, pv=3000.0), **site_telemetry(b, grid=500.0, pv=1000.0)}
    ctl.state = build_state(ctl.cfg, tel, 100.0)
    client.post(
        "/api/v1/commands/pool-limit",
        json={"group": "feeder-a", "limit_pct": 25, "expires_at": iso_in(300)},
        headers=op,
    )
    asyncio.run(ctl._write())
    text = ctl.metrics.render().decode()
    assert 'sparcs_group_power_watts{group="feeder-a",quantity="export"} 1500.0' in text
    assert 'sparcs_group_power_watts{group="feeder-a",quantity="net_export"} 1000.0' in text
    assert 'sparcs_group_pool_limit_ratio{group="feeder-a"} 0.25' in text
    assert 'sparcs_group_pool_limit_ratio{group="portfolio"} 1.0' in text


def test_a_pool_limit_bounds_a_sites_up_flexibility_at_its_share():
    cfg = validate_config(grouped_data())
    site = cfg.sites[0]
    kw = dict(pv_w=0.0, battery_w=0.0, grid_w=500.0, soc=site.battery.soc_max)
    free, _ = site_flexibility(site, battery_controllable=True, pv_controllable=True, **kw)
    share = pool_share_w(10, site.pv.rating_w)
    limited, _ = site_flexibility(site, battery_controllable=True, pv_controllable=True, pool_limit_w=share, **kw)
    assert limited == pytest.approx(min(free, 500.0 + share)) and limited < free
