"""No input yields a server error: every query and path parameter of every route, and every field of
every request body, with extreme values, over real HTTP; and the paging cursor of the audit log that
used to answer 503."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse

import httpx

from sparcs.config.schema import validate_config
from sparcs.controller.auth import create_token
from tests.controller.conftest import small_fleet_data
from tests.controller.serving import serving

EXTREMES = [
    str(2**63),
    str(2**63 - 1),
    str(-(2**63) - 1),
    str(10**400),
    "-1",
    "0",
    "1e308",
    "-1e308",
    "NaN",
    "inf",
    "-inf",
    "1.5",
    "x" * 8000,
    "ünïcødé ☃ 𝄞 日本",
    "",
    " ",
    "\x00",
    "../../etc/passwd",
    "' OR 1=1 --",
    "true",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-12:00",  # past the calendar's end once in UTC
    "0001-01-01T00:00:00+14:00",
    "2026-13-45T99:99:99",
    "2026-06-21T12:00:00",
]
# Valid bodies so a route with a body gets as far as its parameters.
BODIES = {
    "/api/v1/tokens/{name}/rotate": {},
    "/api/v1/devices/{device_id}/control": {"controlled": True},
}


def operations(schema: dict) -> list[tuple[str, str, list[dict]]]:
    return [
        (method.upper(), path, op.get("parameters", []))
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    ]


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    return path


def grouped_cfg():
    """The small fleet with one group, so the group routes get past their 404."""
    data = small_fleet_data()
    data["groups"] = [{"id": "g1", "sites": [s["id"] for s in data["sites"]]}]
    return validate_config(data)


async def test_every_parameter_of_every_route_with_extreme_values_is_never_a_5xx(tmp_path):
    small_cfg = grouped_cfg()
    async with serving(small_cfg, tmp_path) as served:
        admin = create_token(served.store, "root", "admin", 0.0)
        valid = {
            "site_id": small_cfg.sites[0].id,
            "device_id": small_cfg.sites[0].devices[0].id,
            "command_id": "1",
            "name": "root",
            "group_id": "g1",
        }
        headers = {"Authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=served.base_url, headers=headers, timeout=30) as http:
            schema = (await http.get("/openapi.json")).json()
            ops = operations(schema)
            params = [(m, p, prm) for m, p, prms in ops for prm in prms]
            assert len(ops) > 25 and len(params) > 10
            assert {prm["in"] for _m, _p, prm in params} == {"path", "query"}
            sent = 0
            for method, path, param in params:
                if (method, path) == ("DELETE", "/api/v1/tokens/{name}") and param["name"] == "name":
                    continue  # would revoke the admin token this walk uses; its bounds are those of rotate
                for value in EXTREMES:
                    path_values = {k: v for k, v in valid.items() if "{" + k + "}" in path}
                    query = {}
                    if param["in"] == "path":
                        path_values[param["name"]] = value
                    else:
                        query[param["name"]] = value
                    url = fill(path, path_values)
                    r = await http.request(method, url, params=query, json=BODIES.get(path))
                    sent += 1
                    assert r.status_code < 500, (method, path, param["name"], value[:40], r.status_code, r.text)
            assert sent > 300
            # The walk was not refused before it reached the routes: the token still signs in.
            assert (await http.get("/api/v1/session")).status_code == 200


async def test_audit_cursor_of_2_63_is_422_naming_the_field(tmp_path, small_cfg):
    async with serving(small_cfg, tmp_path) as served:
        viewer = create_token(served.store, "v", "viewer", 0.0)
        async with httpx.AsyncClient(base_url=served.base_url, headers={"Authorization": f"Bearer {viewer}"}) as http:
            r = await http.get("/api/v1/audit", params={"before_id": 2**63})
            assert r.status_code == 422, r.text
            assert r.json()["fields"][0]["field"] == "before_id"
            ok = await http.get("/api/v1/audit", params={"before_id": 2**63 - 1})
            assert ok.status_code == 200


def iso_in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


BODY_EXTREMES = [
    2**63,
    -(2**63) - 1,
    10**400,
    -1,
    0,
    1e308,
    float("nan"),
    float("inf"),
    "x" * 8000,
    "ünïcødé ☃ 𝄞",
    "",
    None,
    [],
    {},
    True,
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+14:00",
    "2026-06-21T12:00:00",
]


def bodies(small_cfg) -> dict[tuple[str, str], dict]:
    quarter = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    quarter = quarter.replace(minute=quarter.minute - quarter.minute % 15).isoformat()
    return {
        ("POST", "/api/v1/commands/stage"): {
            "stage": "K4",
            "sites": [small_cfg.sites[0].id],
            "expires_at": iso_in(600),
        },
        ("POST", "/api/v1/commands/para14a"): {"expires_at": iso_in(600)},
        ("POST", "/api/v1/commands/pool-limit"): {"group": "g1", "limit_pct": 50, "expires_at": iso_in(600)},
        ("POST", "/api/v1/commands/schedule"): {"points": [{"start": quarter, "export_w": 1000}]},
        ("POST", "/api/v1/commands/pause"): {"reason": "test"},
        ("POST", "/api/v1/tokens"): {"name": "walk", "role": "viewer", "expires_in_s": 3600},
        ("POST", "/api/v1/tokens/root/rotate"): {"expires_in_s": 3600},
        ("PUT", f"/api/v1/devices/{small_cfg.sites[0].devices[0].id}/control"): {"controlled": True},
    }


def variants(body: dict):
    """``body`` with one field (top level, or of its first list item) replaced by each extreme value."""
    for key, value in body.items():
        for extreme in BODY_EXTREMES:
            yield key, {**body, key: extreme}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for sub in value[0]:
                for extreme in BODY_EXTREMES:
                    yield f"{key}[0].{sub}", {**body, key: [{**value[0], sub: extreme}]}


async def test_every_field_of_every_body_with_extreme_values_is_never_a_5xx(tmp_path):
    small_cfg = grouped_cfg()
    async with serving(small_cfg, tmp_path) as served:
        admin = create_token(served.store, "root", "admin", 0.0)
        headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=served.base_url, headers=headers, timeout=30) as http:
            schema = (await http.get("/openapi.json")).json()
            with_body = {
                (m.upper(), p) for p, ops in schema["paths"].items() for m, op in ops.items() if "requestBody" in op
            }
            cases = bodies(small_cfg)
            assert len(with_body) == len(cases), (with_body, set(cases))  # a new route with a body joins here
            sent = 0
            for (method, path), body in cases.items():
                for field, variant in variants(body):
                    text = json.dumps(variant)  # NaN and Infinity as Python's json writes them
                    r = await http.request(method, path, content=text)
                    sent += 1
                    assert r.status_code < 500, (method, path, field, text[:80], r.status_code, r.text)
                    if variant.get("name") == "walk" and r.status_code == 201:
                        await http.delete("/api/v1/tokens/walk")
            assert sent > 150
