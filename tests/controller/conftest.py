"""Shared fixtures: a small fleet config taken from the demo fleet, a store in a temp dir."""

from __future__ import annotations

import copy

import pytest
import yaml

from config.schema import CONFIG_DIR, FleetConfig, validate_config

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


@pytest.fixture
def small_cfg() -> FleetConfig:
    return validate_config(small_fleet_data())
