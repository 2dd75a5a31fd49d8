"""Shared fixtures: a small fleet config taken from the demo fleet, a store in a temp dir."""

from __future__ import annotations

import copy

import pytest
import yaml

from sparcs.config.schema import CONFIG_DIR, FleetConfig, validate_config
from sparcs.drivers.telemetry import Reading, Telemetry

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


def tel(dev_id, site_id, kind, status="online", **values):
    """Telemetry read at t = 100 s; plain numbers are good readings."""
    vals = {k: Reading(v, "good") if not isinstance(v, Reading) else v for k, v in values.items()}
    return Telemetry(dev_id, site_id, kind, 100.0, status, vals, last_good_at=100.0)


def site_telemetry(site, *, pv=3000.0, bat=-1000.0, grid=-1500.0, soc=0.5, status="online"):
    """Good telemetry for every device of a site (W, signs of DESIGN.md)."""
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
