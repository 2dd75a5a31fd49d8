"""The operator API: the auth matrix over every route, bad input for every command, a real-server smoke test."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.config.schema import validate_config
from sparcs.controller.api import create_app
from sparcs.controller.auth import create_token
from sparcs.controller.cycle import WallClock
from sparcs.controller.read_model import bucket
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from tests.controller.conftest import make_plan, small_fleet_data
from tests.ports import free_ports

ROLES = ("viewer", "operator", "admin")
RANK = {None: -1, "viewer": 0, "operator": 1, "admin": 2}
# Which role each route needs. A route that matches no rule fails the matrix: new endpoints can't escape it.
RULES: list[tuple[str, str, str | None]] = [
    ("GET", r"^/(healthz|readyz)$", None),
    ("GET", r"^/(docs|redoc|openapi\.json|docs/oauth2-redirect)$", None),
    ("GET", r"^/metrics$", "viewer"),  # TestClient is not a loopback client
    ("GET", r"^/sta/v1\.1", None),  # open data: public (404 while open_data.enabled is false)
    ("POST|DELETE", r"^/api/v1/commands", "operator"),
    ("PUT", r"^/api/v1/devices/[^/]+/control$", "operator"),
    ("GET|POST|DELETE", r"^/api/v1/tokens", "admin"),
    ("POST", r"^/api/v1/admin/", "admin"),
    ("GET", r"^/api/v1/", "viewer"),
]


def needed_role(method: str, path: str) -> str | None:
    for methods, pattern, role in RULES:
        if method in methods.split("|") and re.search(pattern, path):
            return role
    raise AssertionError(f"{method} {path} matches no rule of the auth matrix; add one")


def iso_in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def quarter_now() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0).isoformat()


@pytest.fixture
def api(tmp_path, small_cfg):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(small_cfg, store, WallClock())
    tokens = {role: create_token(store, role, role, 0.0) for role in ROLES}
    with TestClient(create_app(ctl), raise_server_exceptions=False) as client:
        yield client, ctl, tokens
    asyncio.run(ctl_close(ctl))
    store.close()


async def ctl_close(ctl):
    await ctl.close()


def body_for(path: str, n: int) -> dict | None:
    return {
        "/api/v1/commands/stage": {"stage": "K4", "expires_at": iso_in(600)},
        "/api/v1/commands/para14a": {"expires_at": iso_in(600)},
        "/api/v1/commands/schedule": {"points": [{"start": quarter_now(), "export_w": 1000}]},
        "/api/v1/commands/pause": {},
        "/api/v1/commands/pool-limit": {"limit_pct": 50, "expires_at": iso_in(600)},
        "/api/v1/tokens": {"name": f"new-{n}", "role": "viewer"},
        "/api/v1/tokens/{name}/rotate": {},
        "/api/v1/devices/{device_id}/control": {"controlled": True},
    }.get(path)


def concrete(path: str, ctl) -> str:
    return (
        path.replace("{site_id}", ctl.cfg.sites[0].id)
        .replace("{device_id}", ctl.cfg.sites[0].devices[0].id)
        .replace("{command_id}", "999999")
        .replace("{name}", "nobody")
    )


def test_auth_matrix_over_every_route(api):
    client, ctl, tokens = api
    # Every documented operation (the OpenAPI schema lists them all), plus the docs themselves.
    paths = client.app.openapi()["paths"]
    routes = [(m.upper(), p) for p, ops in paths.items() for m in ops]
    routes += [("GET", "/docs"), ("GET", "/openapi.json")]
    assert len(routes) > 20
    n = 0
    for method, path in routes:
        need = needed_role(method, path)
        url = concrete(path, ctl)
        for role in (None, *ROLES):
            n += 1
            headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
            r = client.request(method, url, headers=headers, json=body_for(path, n))
            not_ready = path == "/readyz" and r.status_code == 503  # no poll yet: that is its answer
            assert r.status_code < 500 or not_ready, (method, path, role, r.text)
            if need is not None and role is None:
                assert r.status_code == 401, (method, path, r.text)
            elif RANK[role] < RANK[need]:
                assert r.status_code == 403, (method, path, role, r.text)
                assert need in r.json()["error"]
            else:
                assert r.status_code not in (401, 403), (method, path, role, r.text)


def test_wrong_token_is_401_and_revoked_token_stops_working(api):
    client, ctl, tokens = api
    r = client.get("/api/v1/fleet", headers={"Authorization": "Bearer sparcs_not-a-token"})
    assert r.status_code == 401
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    made = client.post("/api/v1/tokens", json={"name": "temp", "role": "viewer"}, headers=admin).json()
    temp = {"Authorization": f"Bearer {made['token']}"}
    assert client.get("/api/v1/fleet", headers=temp).status_code == 200
    assert client.delete("/api/v1/tokens/temp", headers=admin).status_code == 200
    assert client.get("/api/v1/fleet", headers=temp).status_code == 401
    assert [a["action"] for a in ctl.store.audit_log()[:2]] == ["token-revoke", "token-add"]


# Parameters are built at collection time: expiries a day ahead stay valid however long the suite runs.
BAD = [
    # (path, body, field named in the answer)
    ("stage", {"stage": "K5", "expires_at": iso_in(86400)}, "stage"),
    ("stage", {"stage": 3, "expires_at": iso_in(86400)}, "stage"),
    ("stage", {"stage": "K1"}, "expires_at"),
    ("stage", {"stage": "K1", "expires_at": iso_in(-60)}, "expires_at"),
    ("stage", {"stage": "K1", "expires_at": "2026-06-21T12:00:00"}, "expires_at"),  # no offset
    ("stage", {"stage": "K1", "expires_at": "tomorrow"}, "expires_at"),
    ("stage", {"stage": "K1", "expires_at": iso_in(40 * 86400)}, "expires_at"),
    ("stage", {"stage": "K1", "expires_at": iso_in(86400), "sites": ["atlantis"]}, "sites[0]"),
    ("stage", {"stage": "K1", "expires_at": iso_in(86400), "sites": []}, "sites"),
    ("stage", {"stage": "K1", "expires_at": iso_in(86400), "sites": "lej-001"}, "sites"),
    ("stage", {"stage": "K1", "expires_at": iso_in(86400), "colour": "red"}, "colour"),
    ("para14a", {"expires_at": iso_in(-5)}, "expires_at"),
    ("para14a", {"expires_at": iso_in(86400), "sites": ["atlantis"]}, "sites[0]"),
    ("para14a", {"expires_at": iso_in(86400), "start": iso_in(90000)}, "expires_at"),  # starts after expiry
    ("schedule", {"points": []}, "points"),
    ("schedule", {"points": [{"start": quarter_now(), "export_w": -5}]}, "points[0].export_w"),
    ("schedule", {"points": [{"start": quarter_now(), "export_w": "lots"}]}, "points[0].export_w"),
    ("schedule", {"points": [{"start": iso_in(60), "export_w": 5}]}, "points[0].start"),
    ("schedule", {"points": [{"start": "2026-06-21T12:00:00", "export_w": 5}]}, "points[0].start"),
    ("schedule", {"points": [{"start": iso_in(-86400)[:11] + "00:00:00+00:00", "export_w": 5}]}, "points"),
    ("schedule", {"points": [{"start": iso_in(60 * 86400)[:11] + "00:00:00+00:00", "export_w": 5}]}, "points[0].start"),
    ("pause", {"reason": 12}, "reason"),
    ("pause", {"reason": "x" * 600}, "reason"),
    ("pause", [], "body"),
]


@pytest.mark.parametrize(("kind", "body", "field"), BAD)
def test_bad_input_is_422_naming_the_field_and_changes_nothing(api, kind, body, field):
    client, ctl, tokens = api
    op = {"Authorization": f"Bearer {tokens['operator']}"}
    before_audit = ctl.store.audit_log()
    r = client.post(f"/api/v1/commands/{kind}", json=body, headers=op)
    assert r.status_code == 422, r.text
    named = [f["field"] for f in r.json()["fields"]]
    assert field in named, r.json()
    assert field in r.json()["error"]
    assert client.get("/api/v1/commands", headers=op).json() == []
    assert ctl.store.audit_log() == before_audit and ctl.store.active_commands(0) == []


def test_bad_json_and_bad_queries_are_4xx(api):
    client, _ctl, tokens = api
    op = {"Authorization": f"Bearer {tokens['operator']}", "Content-Type": "application/json"}
    start = quarter_now()
    r = client.post(
        "/api/v1/commands/schedule", content=f'{{"points":[{{"start":"{start}","export_w":NaN}}]}}', headers=op
    )
    assert r.status_code == 422 and r.json()["fields"][0] == {
        "field": "points[0].export_w",
        "message": "Input should be a finite number",
    }
    r = client.post("/api/v1/commands/stage", content=b"{not json", headers=op)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body"
    assert client.delete("/api/v1/commands/abc", headers=op).status_code == 422
    assert client.delete("/api/v1/commands/424242", headers=op).status_code == 404
    r = client.get("/api/v1/history", params={"start": "2026-06-21T10:00:00"}, headers=op)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "start"
    r = client.get("/api/v1/history", params={"resolution_s": 0}, headers=op)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "resolution_s"
    r = client.get("/api/v1/history", params={"site": "atlantis"}, headers=op)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "site"
    r = client.get("/api/v1/history", params={"bogus": 1}, headers=op)
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "bogus"
    assert client.get("/api/v1/sites/atlantis", headers=op).status_code == 404
    assert client.get("/api/v1/devices/atlantis", headers=op).status_code == 404


def test_commands_are_audited_and_counted(api):
    client, ctl, tokens = api
    op = {"Authorization": f"Bearer {tokens['operator']}"}
    sid = ctl.cfg.sites[0].id
    r = client.post(
        "/api/v1/commands/stage", json={"stage": "K2", "sites": [sid], "expires_at": iso_in(600)}, headers=op
    )
    assert r.status_code == 201
    cid = r.json()["command"]["id"]
    assert client.get("/api/v1/caps", headers=op).json()["sites"][0]["stage"] == "K2"
    assert client.post("/api/v1/commands/pause", json={"reason": "test"}, headers=op).status_code == 201
    fleet = client.get("/api/v1/fleet", headers=op).json()
    assert fleet["paused"] is True and fleet["data_stale"] is True and fleet["data_age_s"] is None  # no poll yet
    assert client.post("/api/v1/commands/dispatch-now", headers=op).json() == {"requested": False, "paused": True}
    assert client.post("/api/v1/commands/resume", headers=op).json()["resumed"] is True
    assert client.delete(f"/api/v1/commands/{cid}", headers=op).json() == {"cancelled": [cid]}
    audit = client.get("/api/v1/audit", headers=op).json()
    assert [a["action"] for a in audit] == ["cancel", "resume", "dispatch-now", "pause", "stage"]
    assert {a["who"] for a in audit} == {"operator"}
    assert all(a["ts"].endswith("+00:00") for a in audit)
    client.post("/api/v1/commands/stage", json={"stage": "K9", "expires_at": iso_in(60)}, headers=op)
    text = ctl.metrics.render().decode()
    assert 'sparcs_commands_total{result="accepted",type="stage"} 1.0' in text
    assert 'sparcs_commands_total{result="rejected",type="stage"} 1.0' in text


async def test_real_server_serves_probes_metrics_and_reads(tmp_path, small_cfg):
    store = Store(data_dir=tmp_path)
    ctl = build_controller(small_cfg, store, WallClock())
    token = create_token(store, "v", "viewer", 0.0)
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(create_app(ctl), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and "no poll yet" in ready.json()["problems"]
            metrics = await http.get("/metrics")  # loopback: open
            assert metrics.status_code == 200 and "sparcs_poll_cycle_duration_seconds" in metrics.text
            r = await http.get("/api/v1/sites", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and [s["id"] for s in r.json()] == [s.id for s in small_cfg.sites]
            assert (await http.get("/api/v1/sites")).status_code == 401
    finally:
        server.should_exit = True
        await task
        await ctl.close()
        store.close()


def price_in_force(ctl, tmp_path, eur_per_mwh: float) -> None:
    """The controller's price source holds ``eur_per_mwh`` for the current quarter-hour."""
    from sparcs.config.schema import MarketConfig
    from sparcs.controller.prices import PriceSource

    now = ctl.clock.now()
    csv = tmp_path / "prices.csv"
    quarter = dt.datetime.fromtimestamp(now - now % 900, dt.UTC).isoformat()
    csv.write_text(f"timestamp,eur_per_mwh\n{quarter},{eur_per_mwh}\n")
    ctl.prices = PriceSource(MarketConfig(prices_csv=csv))
    ctl.prices.load_file()


def test_caps_show_zero_export_in_a_negative_price_quarter_hour(api, tmp_path):
    """The price comes from the prices in force (the price source), not from the plan."""
    client, ctl, tokens = api
    now = ctl.clock.now()
    price_in_force(ctl, tmp_path, -12.5)
    ctl.plan = make_plan(now - 60, [900.0], prices=[80.0])  # the plan's own price does not count
    body = client.get("/api/v1/caps", headers={"Authorization": f"Bearer {tokens['viewer']}"}).json()
    assert body["price_eur_per_mwh"] == -12.5
    for row in body["sites"]:
        site = ctl.cfg.site(row["site"])
        expected = 0.0 if site.grid.negative_price_rule else feed_in_cap_w(site)
        assert row["export_cap_now_w"] == expected
    assert any(ctl.cfg.site(r["site"]).grid.negative_price_rule for r in body["sites"])


def test_the_api_serves_each_sites_export_ceiling_now_and_per_planned_quarter_hour(tmp_path):
    """0 W in a negative-price quarter-hour for a site under that rule, else min(feed-in cap, connection
    limit); the connection limit for a site without a cap. The dashboard draws these values as they come."""
    data = small_fleet_data(3)
    data["sites"][1]["grid"]["connection_limit_w"] = 4000  # below its 60 % cap (11.7 kW): the connection binds
    data["sites"][2]["grid"]["feed_in_cap_pct"] = None  # no cap: the connection limit is the ceiling
    cfg = validate_config(data)
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    viewer = {"Authorization": f"Bearer {create_token(store, 'v', 'viewer', 0.0)}"}
    ids = [s.id for s in cfg.sites]
    try:
        with TestClient(create_app(ctl), raise_server_exceptions=False) as client:
            assert [r["export_ceiling_now_w"] for r in client.get("/api/v1/caps", headers=viewer).json()["sites"]] == [
                3360.0,
                4000.0,
                30000.0,
            ]  # no plan, no price: the caps and connection limits
            assert client.get("/api/v1/forecast", headers=viewer).json() == {"forecast": None}
            now = ctl.clock.now()
            ctl.plan = make_plan(now - 60, [900.0, 900.0, 900.0], prices=[-12.5, 40.0, 0.0])
            price_in_force(ctl, tmp_path, -12.5)
            caps = client.get("/api/v1/caps", headers=viewer).json()
            assert caps["price_eur_per_mwh"] == -12.5
            by_site = {r["site"]: r for r in caps["sites"]}
            assert {sid: by_site[sid]["export_ceiling_now_w"] for sid in ids} == {
                ids[0]: 0.0,  # under the rule, negative price
                ids[1]: 0.0,
                ids[2]: 30000.0,  # not under the rule
            }
            forecast = client.get("/api/v1/forecast", headers=viewer).json()
            assert forecast["export_ceiling_w"] == {
                ids[0]: [0.0, 3360.0, 3360.0],
                ids[1]: [0.0, 4000.0, 4000.0],
                ids[2]: [30000.0, 30000.0, 30000.0],
            }
    finally:
        asyncio.run(ctl_close(ctl))
        store.close()


def test_history_buckets_average_known_values():
    rows = [{"ts": 0.0, "pv_w": 100.0}, {"ts": 30.0, "pv_w": 300.0}, {"ts": 61.0, "pv_w": None}]
    assert bucket(rows, 60, ["pv_w"]) == [
        {"ts": "1970-01-01T00:00:00+00:00", "pv_w": 200.0},
        {"ts": "1970-01-01T00:01:00+00:00", "pv_w": None},
    ]


async def test_a_body_is_refused_before_it_is_read_when_unauthorised_too_large_or_too_slow(tmp_path):
    cfg = validate_config(small_fleet_data(1) | {"api": {"body_timeout_s": 0.5}})
    store = Store(data_dir=tmp_path)
    ctl = build_controller(cfg, store, WallClock())
    token = create_token(store, "op", "operator", 0.0)
    (port,) = free_ports(1)
    server = uvicorn.Server(uvicorn.Config(create_app(ctl), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def exchange(head: str, body: bytes = b"") -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5.0)  # the server answers without waiting for the rest
        writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])

    post = "POST /api/v1/commands/stage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        status, body = await exchange(post + "Content-Length: 10000000\r\n")  # no token, 10 MB promised
        assert status == 401 and "bearer token" in body["error"]
        auth = f"Authorization: Bearer {token}\r\n"
        status, body = await exchange(post + auth + "Content-Length: 10000000\r\n")
        assert status == 413 and "65536 bytes" in body["error"]
        status, body = await exchange(post + auth + "Content-Length: 100\r\n", b'{"stage": ')  # and no more
        assert status == 408 and "0.5 s" in body["error"]
        status, body = await exchange(post + auth + "Content-Length: 12\r\n", b'{"stage": 1}')
        assert status == 422  # a whole body within the limits reaches the route as before
    finally:
        server.should_exit = True
        await task
        await ctl.close()
        store.close()
