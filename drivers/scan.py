"""`sparcs scan`: SunSpec discovery and one full read of a device, for commissioning.

Every candidate base address (40000, 0, 50000) is tried and reported (SunS found, another value,
an exception reply, or no reply); the models are read from the first that holds SunS. Prints every
model with its decoded points and units (or, for a device without SunSpec, the registers of a
vendor profile). ``run_scan`` returns the report as a dict (``bases``: one entry per candidate);
``format_scan`` renders it for people; ``config_snippet`` gives the fleet-file entry of the device.
"""

from __future__ import annotations

from typing import Any

import yaml

from sparcs.drivers.discovery import BASE_ADDRESSES, NotSunSpecError, discover, probe_base, read_model_full
from sparcs.drivers.link import Link
from sparcs.drivers.profile_device import ProfileDevice
from sparcs.drivers.profiles import KEY_UNITS, load_profile
from sparcs.drivers.sunspec_codec import ModelUnknownError, decode, model_def

SI_UNITS = {"pv_w": "W", "battery_w": "W", "grid_w": "W", "soc": "fraction"}


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); raises ValueError with a message naming the argument."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{text}' is not HOST:PORT (e.g. 127.0.0.1:502)")
    return host, int(port)


async def run_scan(host: str, port: int, unit: int, timeout_s: float = 2.0, profile: str | None = None) -> dict:
    """Discover and read one device; raises DeviceError (unreachable, no SunSpec) or ProfileError."""
    link = Link(host, port, timeout_s)
    try:
        if profile is not None:
            return await _scan_profile(link, unit, profile)
        probes = [await probe_base(link.reader(unit), base) for base in BASE_ADDRESSES]
        bases = [{"address": p.address, "result": p.result, "detail": p.detail} for p in probes]
        base = next((p.address for p in probes if p.result == "sunspec"), None)
        if base is None:
            raise NotSunSpecError(
                "not a SunSpec device (" + "; ".join(f"{p.address}: {p.detail}" for p in probes) + ")"
            )
        found = await discover(link.reader(unit), base)
        models: list[dict[str, Any]] = []
        for loc in found.models:
            entry: dict[str, Any] = {"id": loc.model_id, "addr": loc.addr, "length": loc.length}
            try:
                md = model_def(loc.model_id)
            except ModelUnknownError:
                entry |= {"name": None, "points": {}, "note": "no SunSpec definition (vendor model)"}
                models.append(entry)
                continue
            regs = await read_model_full(link.reader(unit), loc)
            values = decode(loc.model_id, regs)
            entry |= {
                "name": md.name,
                "points": {
                    name: {"value": v, "units": md.points[name].units, "access": md.points[name].access}
                    for name, v in values.items()
                },
            }
            models.append(entry)
        return {
            "host": host,
            "port": port,
            "unit": unit,
            "protocol": "sunspec",
            "base": found.base,
            "bases": bases,
            "kind": sunspec_kind(found.ids),
            "models": models,
        }
    finally:
        link.drop()


async def _scan_profile(link: Link, unit: int, name: str) -> dict:
    p = load_profile(name)
    dev = ProfileDevice(link, unit, p.kind, p)
    values = await dev.read_all()
    points = {
        key: {
            "value": values[key],
            "units": SI_UNITS.get(key, KEY_UNITS[key][0] or None),
            "address": p.registers[key].address,
            "access": p.registers[key].access.upper(),
        }
        for key in p.registers
    }
    return {
        "host": link.host,
        "port": link.port,
        "unit": unit,
        "protocol": "profile",
        "profile": p.name,
        "kind": p.kind,
        "models": [{"id": None, "name": p.name, "points": points}],
    }


def format_scan(report: dict) -> str:
    """Human-readable scan: one line per model, then its implemented points with units."""
    lines = [f"{report['host']}:{report['port']} unit {report['unit']}"]
    if report["protocol"] == "sunspec":
        lines[0] += f" - SunSpec at base {report['base']}, models {[m['id'] for m in report['models']]}"
        lines += [f"  base {b['address']:>5}: {b['result']} ({b['detail']})" for b in report["bases"]]
    else:
        lines[0] += f" - profile {report['profile']}"
    for m in report["models"]:
        head = f"model {m['id']} {m['name'] or ''}".strip() if m["id"] is not None else f"profile {m['name']}"
        if "addr" in m:
            head += f" @ {m['addr']} (L={m['length']})"
        lines.append(head + (f": {m['note']}" if m.get("note") else ""))
        shown = {k: p for k, p in m["points"].items() if p["value"] is not None}
        for name, p in shown.items():
            v = p["value"]
            text = f"{v:.6g}" if isinstance(v, float) else str(v)
            unit = f" {p['units']}" if p.get("units") else ""
            lines.append(f"  {name:<22} {text}{unit}{'  (RW)' if p.get('access') == 'RW' else ''}")
        hidden = len(m["points"]) - len(shown)
        if hidden:
            lines.append(f"  ({hidden} points not implemented)")
    return "\n".join(lines)


def sunspec_kind(model_ids: list[int]) -> str | None:
    """The device kind a SunSpec model list describes: a meter (20x/21x), a battery (storage 124, 713
    or 802), a PV inverter (10x/11x/701); None when it shows none of these."""
    ids = set(model_ids)
    if ids & {201, 202, 203, 204, 211, 212, 213, 214}:
        return "meter"
    if ids & {124, 713, 802}:
        return "battery"
    if ids & {101, 102, 103, 111, 112, 113, 701}:
        return "pv_inverter"
    return None


def config_snippet(report: dict, device_id: str) -> str:
    """The fleet-file entry (``sites[].devices[]``) for the scanned device, as YAML."""
    entry: dict[str, Any] = {
        "id": device_id,
        "kind": report.get("kind") or "pv_inverter",
        "host": report["host"],
        "port": report["port"],
        "unit": report["unit"],
        "protocol": report["protocol"],
    }
    if report["protocol"] == "profile":
        entry["profile"] = report["profile"]
    text = yaml.safe_dump([entry], sort_keys=False)
    if report.get("kind") is None:
        text = "# the models show no inverter, storage or meter: check 'kind'\n" + text
    return text
