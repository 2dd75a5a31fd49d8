"""Shared fixtures: a small fleet config taken from the demo fleet, a store in a temp dir."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from sparcs.config.schema import CONFIG_DIR, FleetConfig, validate_config
from sparcs.controller.plan import Plan, PlanTimings, SitePlan
from sparcs.drivers.telemetry import Reading, Telemetry
from sparcs.optimizer.problem import ObjectiveParts

DEMO = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())


def small_fleet_data(n_sites: int = 3) -> dict:
    """The first ``n_sites`` demo sites (no faults, classic variants) as fleet-file data."""
    data = copy.deepcopy(DEMO)
    data["sites"] = data["sites"][:n_sites]
    ids = {d["id"] for s in data["sites"] for d in s["devices"]}
    sim = data["simulation"]
    sim["faults"] = []
    sim["variants"] = {k: v for k, v in sim["variants"].items() if k in ids}
    sim["control_port"] = None
    return data


def make_plan(
    start_s: float,
    period_s: list[float],
    sites: dict[str, tuple[list[float | None], list[float | None]]] | None = None,
    *,
    prices: list[float] | None = None,
    path: str = "optimal",
) -> Plan:
    """A plan of ``sites`` (site id → (pv_limit_w, battery_w) per period; None = release); the other
    series zero, prices 80 EUR/MWh unless given."""
    n = len(period_s)

    def arr(values: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    zeros = np.zeros(n)
    return Plan(
        start_s=start_s,
        period_s=np.array(period_s, dtype=float),
        path=path,  # type: ignore[arg-type]
        reason="",
        objective_eur=0.0,
        parts=ObjectiveParts(0.0, 0.0, 0.0, 0.0, 0.0),
        soc_end_kwh=0.0,
        timings=PlanTimings(),
        export_w=zeros,
        price_eur_per_mwh=arr(prices) if prices is not None else np.full(n, 80.0),
        export_schedule_w=None,
        sites={
            sid: SitePlan(zeros, arr(limit), arr(battery), zeros, np.zeros(n + 1), zeros, zeros)
            for sid, (limit, battery) in (sites or {}).items()
        },
    )


def tel(dev_id, site_id, kind, status="online", **values):
    """Telemetry read at t = 100 s; plain numbers are good readings."""
    vals = {k: Reading(v, "good") if not isinstance(v, Reading) else v for k, v in values.items()}
    return Telemetry(dev_id, site_id, kind, 100.0, status, vals, last_good_at=100.0)


def site_telemetry(site, *, pv=3000.0, bat=-1000.0, grid=-1500.0, soc=0.5, status="online"):
    """Good telemetry for every device of a site (W, signs of docs/definitions.md "Signs")."""
    out = {}
    for d in site.devices:
        if d.kind == "pv_inverter":
            out[d.id] = tel(d.id, site.id, d.kind, status, pv_w=pv)
        elif d.kind == "battery":
            out[d.id] = tel(d.id, site.id, d.kind, battery_w=bat, soc=soc)
        else:
            out[d.id] = tel(d.id, site.id, d.kind, grid_w=grid)
    return out


@pytest.fixture
def small_cfg() -> FleetConfig:
    return validate_config(small_fleet_data())


# -- the store on both backends (SQLite file, throwaway PostgreSQL cluster: tests/pgcluster.py) ------


@pytest.fixture(scope="session")
def pg_cluster():
    from tests import pgcluster

    why = pgcluster.missing()
    if why is not None:
        pytest.skip(why)
    cluster = pgcluster.Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A URL of an empty store: a SQLite file in ``tmp_path``, or a fresh database on the test cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sparcs.db'}"
    return request.getfixturevalue("pg_cluster").new_database()
