"""A small simulated fleet with every device variant, served from a thread on a stepped clock.

Tests talk to it with blocking clients (pysunspec2, pymodbus's sync client) from the test thread;
:class:`FleetThread` runs the fleet host's event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sparcs.config.register_map import PROFILE_DIR
from sparcs.config.schema import FleetConfig, validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import Endpoint, FleetHost

SUMMER_NOON_S = 1782036000.0
"""2026-06-21T10:00:00Z, 12:00 in Leipzig: plenty of sun."""


def site(
    site_id: str,
    port: int,
    *,
    kwp: float = 8.0,
    battery: bool = True,
    cap: int | None = 60,
    gateway: bool = False,
    meter: bool = True,
    installer_limit_pct: float = 100.0,
) -> dict:
    kinds = ["pv_inverter"] + (["battery"] if battery else []) + (["meter"] if meter else [])
    suffix = {"pv_inverter": "pv", "battery": "bat", "meter": "meter"}
    devices = [
        {
            "id": f"{site_id}-{suffix[k]}",
            "kind": k,
            "port": port if gateway else port + i,
            "unit": i + 1 if gateway else 1,
        }
        for i, k in enumerate(kinds)
    ]
    out = {
        "id": site_id,
        "location": {"lat": 51.34, "lon": 12.37},
        "pv": {"kwp": kwp, "tilt_deg": 30, "azimuth_deg": 180, "installer_limit_pct": installer_limit_pct},
        "load": {"annual_kwh": 4000},
        "grid": {"feed_in_cap_pct": cap},
        "devices": devices,
    }
    if battery:
        out["battery"] = {"capacity_kwh": 10.0, "max_charge_w": 5000, "max_discharge_w": 5000, "soc_initial": 0.5}
    return out


def variant_fleet() -> dict:
    """Sites covering each device kind and variant, a gateway, a capped and an uncapped site."""
    return {
        "simulation": {
            "seed": 7,
            "variants": {
                "der-pv": {"models": "der"},
                "der-bat": {"models": "der"},
                "der-meter": {"base_address": 0, "common_len": 65},
                "flt-pv": {"models": "float", "base_address": 50000},
                "flt-bat": {"models": "float"},
                "b0-pv": {"base_address": 0, "common_len": 65},
            },
        },
        "sites": [
            site("cls", 30000),
            site("der", 30010),
            site("flt", 30020, gateway=True),
            site("b0", 30030, battery=False, cap=None),
        ],
    }


class FleetThread:
    """A FleetHost on a stepped clock whose event loop runs in a background thread."""

    def __init__(self, data: dict, start_s: float = SUMMER_NOON_S, profile_dir: Path = PROFILE_DIR) -> None:
        self.config: FleetConfig = validate_config(data)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clock = SimClock(start_s, stepped=True)
        self.host = FleetHost(self.config, clock=self.clock, auto_ports=True, profile_dir=profile_dir)
        self.run(self.host.start())
        self.endpoints: dict[str, Endpoint] = {ep.id: ep for ep in self.host.endpoints()}

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def wrapped() -> Any:
            return fn(*args)

        return self.run(wrapped())

    def step(self, seconds: float) -> None:
        self.run(self.host.step(seconds))

    def truth(self, device_id: str) -> dict:
        return self.call(self.host.truth, device_id)

    def close(self) -> None:
        try:
            self.run(self.host.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture(scope="module")
def fleet():
    f = FleetThread(variant_fleet())
    try:
        yield f
    finally:
        f.close()
