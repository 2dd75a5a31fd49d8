"""Reload of the fleet file through POST /api/v1/admin/reload over real HTTP: live fields applied,
restart-only fields reported and not applied, a bad file refused with every error and its path."""

from __future__ import annotations

import copy

import httpx
import yaml

from sparcs.config.schema import load_config
from sparcs.controller.auth import create_token
from sparcs.controller.reload import LIVE_FIELDS, differences
from tests.controller.conftest import small_fleet_data
from tests.controller.serving import serving


def write(path, data) -> None:
    path.write_text(yaml.safe_dump(data))


async def test_reload_applies_live_fields_reports_restart_fields_and_refuses_a_bad_file(tmp_path):
    data = small_fleet_data(2)
    path = tmp_path / "fleet.yaml"
    write(path, data)
    cfg = load_config(path)
    async with serving(cfg, tmp_path / "d", reloader_path=path) as served:
        ctl = served.ctl
        admin = create_token(served.store, "root", "admin", 0.0)
        op = create_token(served.store, "op", "operator", 0.0)
        async with httpx.AsyncClient(base_url=served.base_url, headers={"Authorization": f"Bearer {admin}"}) as http:
            assert (
                await http.post("/api/v1/admin/reload", headers={"Authorization": f"Bearer {op}"})
            ).status_code == 403
            same = await http.post("/api/v1/admin/reload")
            assert same.status_code == 200 and same.json()["applied"] == [] and same.json()["restart_needed"] == []

            bat = data["sites"][0]["devices"][1]
            assert bat["kind"] == "battery"
            changed = copy.deepcopy(data)
            changed["sites"][0]["devices"][1]["control"] = False
            changed["sites"][0]["battery"]["soc_min"] = 0.2  # moves with soc_initial below: both at once
            changed["sites"][0]["battery"]["soc_initial"] = 0.6
            changed["dispatch"]["curtailment_penalty_eur_per_kwh"] = 0.005
            changed["grid"] = {"para14a_limit_w": 3000.0}
            changed["sites"][1]["devices"][0]["port"] = bat["port"] + 1000  # an endpoint: needs a restart
            changed["api"] = {"port": 9999}
            write(path, changed)
            running_dispatch = ctl.cfg.dispatch
            r = await http.post("/api/v1/admin/reload")
            assert r.status_code == 200, r.text
            got = r.json()
            sid0, sid1 = data["sites"][0]["id"], data["sites"][1]["id"]
            assert set(got["applied"]) == {
                f"sites[0:{sid0}].battery.soc_min",
                f"sites[0:{sid0}].battery.soc_initial",
                f"sites[0:{sid0}].devices[1:{bat['id']}].control",
                "dispatch.curtailment_penalty_eur_per_kwh",
                "grid.para14a_limit_w",
            }
            dev1 = data["sites"][1]["devices"][0]["id"]
            assert any(line.startswith(f"sites[1:{sid1}].devices[0:{dev1}].port:") for line in got["restart_needed"])
            assert any(line.startswith("api.port: 8080 → 9999") for line in got["restart_needed"])
            assert all(line.endswith("takes effect after a restart") for line in got["restart_needed"])
            # Applied on the running objects every part of the controller holds; the rest untouched.
            assert ctl.cfg.dispatch is running_dispatch and running_dispatch.curtailment_penalty_eur_per_kwh == 0.005
            assert ctl.cfg.grid.para14a_limit_w == 3000.0
            assert ctl.cfg.sites[0].devices[1].control is False
            assert ctl.cfg.sites[0].battery.soc_min == 0.2
            assert ctl.device_control.releasing == {bat["id"]}  # taken out of control: released first
            assert ctl.cfg.sites[1].devices[0].port == data["sites"][1]["devices"][0]["port"]
            assert ctl.cfg.api.port == 8080
            assert ctl.dispatch_requested  # re-planned with the new parameters

            broken = copy.deepcopy(changed)
            broken["sites"][0]["pv"]["kwp"] = -1
            broken["dispatch"]["horizon_h"] = 500
            broken["dispatch"]["curtailment_penalty_eur_per_kwh"] = 0.5
            write(path, broken)
            bad = await http.post("/api/v1/admin/reload")
            assert bad.status_code == 422
            errors = bad.json()["errors"]
            assert len(errors) == 2
            assert any(f"sites[0:{sid0}].pv.kwp:" in e for e in errors)
            assert any("dispatch.horizon_h:" in e for e in errors)
            assert all(e.startswith(str(path)) for e in errors)
            assert ctl.cfg.dispatch.curtailment_penalty_eur_per_kwh == 0.005  # nothing changed

            audit = [a for a in (await http.get("/api/v1/audit")).json() if a["action"] == "config-reload"]
            assert [a["result"].split(":")[0] for a in audit] == ["refused", "ok", "ok"]
            assert all(a["who"] == "root" for a in audit)
            assert audit[1]["params"]["restart_needed"] and audit[0]["params"]["errors"] == errors


async def test_reload_without_a_file_is_409(tmp_path, small_cfg):
    async with serving(small_cfg, tmp_path) as served:
        admin = create_token(served.store, "root", "admin", 0.0)
        async with httpx.AsyncClient(base_url=served.base_url, headers={"Authorization": f"Bearer {admin}"}) as http:
            r = await http.post("/api/v1/admin/reload")
            assert r.status_code == 409 and "not started from a fleet file" in r.json()["error"]


def test_sites_added_or_a_battery_section_removed_need_a_restart(small_cfg):
    more = small_cfg.model_copy(deep=True)
    more.sites.append(more.sites[0].model_copy(update={"id": "new-site"}))
    (change,) = differences(small_cfg, more)
    assert change.path == "sites" and not change.live
    less = small_cfg.model_copy(deep=True)
    less.sites[0].__dict__["battery"] = None
    (change,) = differences(small_cfg, less)
    assert change.path.endswith(".battery") and not change.live
    assert all(rule.count(".") >= 1 for rule in LIVE_FIELDS)
