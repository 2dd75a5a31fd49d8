"""A twin scenario with a stage for one group only, replayed through the real cycle (30 minutes, three
sites, the rules baseline): the group's sites hold the stage, the other site runs free; and the
shipped group scenario loads and names its groups' sites."""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
import pytest

from sparcs.config.schema import CONFIG_DIR, load_config, validate_config
from sparcs.controller.store import Store
from sparcs.twin.replay import replay
from sparcs.twin.scenario import Scenario, ScenarioError, apply_scenario, load_scenario
from tests.controller.conftest import small_fleet_data

pytestmark = pytest.mark.timeout(600)

DAY = "2026-05-12"


def at(hhmm: str) -> str:
    return f"{DAY}T{hhmm}:00+02:00"


def ts(hhmm: str) -> float:
    return dt.datetime.fromisoformat(at(hhmm)).timestamp()


def scenario(group_sites: list[str]) -> Scenario:
    return Scenario.model_validate(
        {
            "date": DAY,
            "weather": {"cloudiness": 0.0},
            "groups": [{"id": "feeder-a", "kind": "feeder", "sites": group_sites}],
            "actions": [
                {"at": at("11:00"), "stage": {"stage": "K2", "group": "feeder-a", "expires_at": at("11:30")}},
            ],
            "poll_interval_s": 60,
            "dispatch_interval_s": 900,
        }
    )


def test_a_stage_for_one_group_holds_its_sites_and_leaves_the_others_free(tmp_path):
    data = small_fleet_data(3)
    group = [s["id"] for s in data["sites"][:2]]
    sc = scenario(group)
    cfg = apply_scenario(validate_config(data), sc)
    run = asyncio.run(replay(cfg, "none", (ts("11:00"), ts("11:30")), sc, tmp_path / "history"))
    t, pv = run.trace.times, run.trace.power("pv_w")
    during = (t >= ts("11:02")) & (t <= ts("11:29"))
    for i, sid in enumerate(run.trace.site_ids):
        rating = cfg.site(sid).pv.rating_w
        if sid in group:
            assert (pv[i, during] <= 0.3 * rating * 1.01).all(), sid
        else:
            assert (pv[i, during] > 0.35 * rating).any(), sid  # not curtailed by the group's stage
    ids = run.trace.site_ids
    in_group = np.array([s in group for s in ids])
    assert np.isfinite(run.stage_ceiling_w[in_group]).any() and np.isnan(run.stage_ceiling_w[~in_group]).all()
    store = Store(data_dir=tmp_path / "history")
    try:
        stage = next(a for a in store.audit_log() if a["action"] == "stage")
    finally:
        store.close()
    assert stage["params"]["group"] == "feeder-a" and stage["params"]["sites"] == group


def test_the_shipped_group_scenario_loads_and_a_group_of_unknown_sites_is_named():
    path = CONFIG_DIR / "scenarios" / "feeder-k3-stage.yaml"
    sc = load_scenario(path)
    cfg = apply_scenario(load_config(CONFIG_DIR / "demo.yaml"), sc)
    feeder = cfg.group("feeder-north")
    assert len(feeder.sites) == 12
    stage = next(a.stage for a in sc.actions if a.stage is not None)
    assert stage.group == "feeder-north" and stage.stage == "K3"
    assert next(a.pool_limit for a in sc.actions if a.pool_limit is not None).limit_pct == 50
    bad = scenario(["no-such-site"])
    with pytest.raises(ScenarioError) as err:
        apply_scenario(validate_config(small_fleet_data(3)), bad)
    assert "groups[feeder-a].sites: unknown site 'no-such-site'" in str(err.value.errors)
