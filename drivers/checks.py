"""What `sparcs check-config` and `sparcs run` say about a fleet's devices before any is polled.

Each device is built as the poller builds it (its protocol's factory; no connection is opened), so
an unknown protocol, a missing or invalid profile and a profile of another device kind (a PV map
on a battery) are errors that name the device's path in the fleet file. Its fail-safe (docs/devices.md
"Fail-safes") gives a note: a device without one is monitor-only unless its entry accepts the risk,
and the note says what to write; a watchdog the poll interval cannot refresh in time is an error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sparcs.config.register_map import ProfileError
from sparcs.config.schema import DeviceConfig, FleetConfig
from sparcs.drivers.device import build_device, check_protocol, fail_safe_of
from sparcs.drivers.link import Link
from sparcs.drivers.writer import max_poll_interval_s


@dataclass
class DeviceReport:
    """Problems (the fleet cannot be used) and notes (it can; this is what will happen), one line each."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _unconnected(dev: DeviceConfig) -> Link:
    return Link(dev.host, dev.port, 1.0)  # a Link connects on its first request only: none is made here


def check_devices(cfg: FleetConfig) -> DeviceReport:
    """The problems and notes of every device of ``cfg``, each line starting with the device's path."""
    out = DeviceReport()
    if cfg.profiles_dir is not None and not cfg.profiles_dir.is_dir():
        out.problems.append(f"profiles_dir: {cfg.profiles_dir} is not a folder; create it or correct the path")
    poll_s = cfg.dispatch.poll_interval_s
    for i, site in enumerate(cfg.sites):
        for j, dev in enumerate(site.devices):
            path = f"sites[{i}:{site.id}].devices[{j}:{dev.id}]"
            unknown = check_protocol(dev.protocol, f"{path}.protocol")
            if unknown is not None:
                out.problems.append(unknown)
                continue
            try:
                device = build_device(dev, functools.partial(_unconnected, dev), f"{path}.protocol")
            except ProfileError as exc:
                out.problems.append(f"{path}.profile: {exc}")
                continue
            except ValueError as exc:
                out.problems.append(f"{path}: {exc}")
                continue
            if dev.kind == "meter":
                continue
            fs = fail_safe_of(device)
            if dev.watchdog_s is not None and fs.kind != "watchdog":
                out.problems.append(
                    f"{path}.watchdog_s: device {dev.id}'s fail-safe is '{fs.kind}', not a watchdog; remove watchdog_s"
                )
            if fs.kind == "none" and dev.control and not dev.accept_no_fail_safe:
                out.notes.append(
                    f"{path}: monitor-only: device {dev.id} has no fail-safe (no revert timer or watchdog), so a "
                    f"limit would stay in force if the controller stopped; to control it anyway write "
                    f"'accept_no_fail_safe: true' on device {dev.id}"
                )
            elif fs.kind == "none" and dev.control:
                out.notes.append(f"{path}: controlled without a fail-safe (accept_no_fail_safe: true)")
            if fs.kind == "watchdog" and fs.interval_s is not None and poll_s > max_poll_interval_s(fs.interval_s):
                out.problems.append(
                    f"{path}: its watchdog falls back after {fs.interval_s:g} s without a heartbeat; "
                    f"dispatch.poll_interval_s {poll_s:g} s cannot refresh it in time: set it to at most "
                    f"{max_poll_interval_s(fs.interval_s):g} s"
                )
    return out
