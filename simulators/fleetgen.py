"""Synthetic fleets of any size for benchmarks and scale tests, valid for ``config.schema.validate_config``.

:func:`synthetic_fleet` draws sites around Leipzig from a seeded generator: PV 3–25 kWp facing
east, south-east, south, south-west or west, a battery at about 70 % of sites, feed-in caps of
60 %, 70 % or none, and (with ``gateway_every``) every n-th site behind one gateway port. PV
geometries come from a small set of districts and orientations so that the clear-sky curves, the
expensive part of start-up, are shared between sites.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DISTRICTS = ((51.34, 12.37), (51.36, 12.41))
TILTS_DEG = (20, 35)
AZIMUTHS_DEG = (90, 135, 180, 225, 270)


def synthetic_fleet(
    n_sites: int,
    seed: int = 1,
    port_start: int = 20000,
    *,
    host: str = "127.0.0.1",
    battery_share: float = 0.7,
    gateway_every: int = 0,
    with_meter: bool = True,
    simulation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A fleet file as a dict: ``n_sites`` sites, devices on ports from ``port_start`` upwards.

    Every site has a PV inverter, a meter unless ``with_meter`` is False, and a battery with
    probability ``battery_share``. ``gateway_every = k > 0`` puts every k-th site's devices behind
    one port (unit ids 1, 2, 3). ``simulation`` overrides keys of the ``simulation`` section.
    """
    if n_sites < 1:
        raise ValueError("n_sites must be at least 1")
    rng = np.random.default_rng(seed)
    port = port_start
    sites: list[dict[str, Any]] = []
    for i in range(n_sites):
        site_id = f"syn-{i:05d}"
        lat, lon = DISTRICTS[int(rng.integers(len(DISTRICTS)))]
        kwp = round(float(rng.uniform(3.0, 25.0)), 1)
        has_battery = bool(rng.random() < battery_share)
        cap = [60, 70, None][int(rng.integers(3))]
        kinds = ["pv_inverter"] + (["battery"] if has_battery else []) + (["meter"] if with_meter else [])
        gateway = gateway_every > 0 and i % gateway_every == 0 and len(kinds) > 1
        devices = []
        for unit, kind in enumerate(kinds, start=1):
            suffix = {"pv_inverter": "pv", "battery": "bat", "meter": "meter"}[kind]
            devices.append(
                {"id": f"{site_id}-{suffix}", "kind": kind, "host": host, "port": port, "unit": unit if gateway else 1}
            )
            if not gateway:
                port += 1
        if gateway:
            port += 1
        site: dict[str, Any] = {
            "id": site_id,
            "location": {"lat": lat, "lon": lon},
            "pv": {
                "kwp": kwp,
                "tilt_deg": TILTS_DEG[int(rng.integers(len(TILTS_DEG)))],
                "azimuth_deg": AZIMUTHS_DEG[int(rng.integers(len(AZIMUTHS_DEG)))],
            },
            "load": {"annual_kwh": round(float(rng.uniform(2000.0, 7000.0)))},
            "grid": {"feed_in_cap_pct": cap, "negative_price_rule": cap == 60},
            "devices": devices,
        }
        if has_battery:
            size = float(rng.choice([5.0, 7.5, 10.0, 12.8, 15.0]))
            power = 3000.0 if size < 7 else 5000.0
            site["battery"] = {
                "capacity_kwh": size,
                "max_charge_w": power,
                "max_discharge_w": power,
                "soc_initial": round(float(rng.uniform(0.2, 0.8)), 2),
            }
        sites.append(site)
    sim: dict[str, Any] = {"seed": seed}
    sim.update(simulation or {})
    return {"simulation": sim, "sites": sites}


def fleet_of_devices(n_devices: int, seed: int = 1, port_start: int = 20000, **kw: Any) -> dict[str, Any]:
    """Like :func:`synthetic_fleet`, trimmed to exactly ``n_devices`` devices (the last site keeps its PV)."""
    if n_devices < 1:
        raise ValueError("n_devices must be at least 1")
    data = synthetic_fleet(n_devices, seed, port_start, **kw)  # at least one device per site: enough
    kept: list[dict[str, Any]] = []
    count = 0
    for site in data["sites"]:
        room = n_devices - count
        if room <= 0:
            break
        if len(site["devices"]) > room:
            site["devices"] = site["devices"][:room]
            if not any(d["kind"] == "battery" for d in site["devices"]):
                site.pop("battery", None)
        count += len(site["devices"])
        kept.append(site)
    data["sites"] = kept
    return data
