"""`sparcs bench poll`: the fleet poller against simulated devices, beside a bare pymodbus loop.

The simulators run in a separate process (`sparcs simulate --config FILE --json`), so this
process measures only the poller. Both loops read the same registers (each device's dynamic
models, one request per model) over the same number of connections with the same concurrency,
alternating cycle by cycle in one run, so machine noise hits both alike. Silent devices
(``silent_fraction``) are simulated with the ``no_reply`` fault; the bare loop skips them, so
its figures are the "normal cycle" the silent goal is measured against.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from sparcs.config.schema import DispatchConfig, FleetConfig, validate_config
from sparcs.drivers.link import raise_open_file_limit
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.profile_device import ProfileDevice
from sparcs.drivers.sunspec_device import SunSpecDevice

SIM_START_TIMEOUT_S = 300.0
WARMUP_TIMEOUT_S = 120.0


class BenchError(RuntimeError):
    """The benchmark could not run (simulators did not start, no free ports)."""


def trim_fleet(fleet: dict[str, Any], n_devices: int) -> dict[str, Any]:
    """Keep the first ``n_devices`` devices of a generated fleet (whole sites, the last one cut short)."""
    sites, count = [], 0
    for site in fleet["sites"]:
        if count >= n_devices:
            break
        keep = site["devices"][: n_devices - count]
        sites.append({**site, "devices": keep})
        count += len(keep)
    if count < n_devices:
        raise BenchError(f"the generated fleet has only {count} devices, {n_devices} asked for")
    return {**fleet, "sites": sites}


def add_silent(fleet: dict[str, Any], fraction: float, seed: int) -> list[str]:
    """Make ``fraction`` of the devices silent (fault ``no_reply``); returns their ids."""
    ids = [d["id"] for s in fleet["sites"] for d in s["devices"]]
    silent = sorted(random.Random(seed).sample(ids, round(fraction * len(ids))))
    sim = fleet.setdefault("simulation", {})
    sim["faults"] = [*sim.get("faults", []), *({"device": i, "mode": "no_reply"} for i in silent)]
    return silent


def add_latency(fleet: dict[str, Any], latency_ms: float, silent: list[str]) -> None:
    """Every answering device replies ``latency_ms`` late (the simulators' fault proxy holds each reply
    back: fault ``slow``), as devices behind DSL routers and dongles do in the field."""
    sim = fleet.setdefault("simulation", {})
    late = [d["id"] for s in fleet["sites"] for d in s["devices"] if d["id"] not in set(silent)]
    sim["faults"] = [
        *sim.get("faults", []),
        *({"device": i, "mode": "slow", "delay_s": latency_ms / 1000.0} for i in late),
    ]


def free_port_range(count: int, start: int = 10000, stop: int = 32000) -> int:
    """A first port such that ``count`` consecutive loopback ports are free right now.

    The range stays below Linux's ephemeral ports (32768+), where earlier runs' client sockets linger.
    """
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(start, stop - count)
        if all(_port_free(p) for p in range(first, first + count)):
            return first
    raise BenchError(f"no {count} consecutive free ports found between {start} and {stop}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SimulatorProcess:
    """`sparcs simulate --json` in a child process; ``endpoints`` maps device id → (host, port, unit)."""

    def __init__(self, config_path: Path, n_devices: int):
        self.config_path, self.n_devices = config_path, n_devices
        self.proc: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, tuple[str, int, int]] = {}

    async def start(self) -> None:
        cmd = [sys.executable, "-m", "sparcs", "simulate", "--config", str(self.config_path), "--json"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + SIM_START_TIMEOUT_S
        assert self.proc.stdout is not None
        while len(self.endpoints) < self.n_devices:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise BenchError(f"the simulators exited before listing their endpoints: {err.strip()[-500:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"the simulators listed {len(self.endpoints)} endpoints in {SIM_START_TIMEOUT_S} s")
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.endpoints[e["id"]] = (e["host"], int(e["port"]), int(e["unit"]))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _requests(poller: FleetPoller) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
    """Per endpoint the (unit, address, count) reads the poller makes in one cycle of answering devices."""
    out: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for s in poller.devices.values():
        d = s.driver
        if isinstance(d, SunSpecDevice) and d.plan is not None:
            reads = [(d.unit, loc.addr, min(loc.length + 2, 125)) for loc in d.plan.dynamic]
        elif isinstance(d, ProfileDevice) and s.last_good_at is not None:
            reads = [(d.unit, addr, count) for _, addr, count, _ in d.blocks]
        else:
            continue  # silent or never answered: the bare loop is the normal-cycle reference
        out.setdefault(s.cfg.endpoint, []).extend(reads)
    return out


class BareLoop:
    """The reference: one pymodbus client per endpoint, the same reads, no decoding or bookkeeping."""

    def __init__(self, reads: dict[tuple[str, int], list[tuple[int, int, int]]], timeout_s: float, concurrency: int):
        self.reads, self.timeout_s = reads, timeout_s
        self.clients: dict[tuple[str, int], AsyncModbusTcpClient] = {}
        self._sem = asyncio.Semaphore(concurrency)
        self.errors = 0

    async def connect(self) -> None:
        for host, port in self.reads:
            c = AsyncModbusTcpClient(host, port=port, timeout=self.timeout_s, retries=0, reconnect_delay=0)
            await c.connect()
            self.clients[(host, port)] = c

    async def cycle(self) -> None:
        async def one(key: tuple[str, int]) -> None:
            async with self._sem:
                c = self.clients[key]
                for unit, addr, count in self.reads[key]:
                    try:
                        await c.read_holding_registers(addr, count=count, device_id=unit)
                    except ModbusException:
                        self.errors += 1

        await asyncio.gather(*(one(k) for k in self.reads))

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - w0, time.process_time() - c0


async def measure(
    cfg: FleetConfig,
    endpoints: dict[str, tuple[str, int, int]],
    cycles: int,
    settings: DispatchConfig,
    silent: list[str],
) -> dict[str, Any]:
    """Poll every device ``cycles`` times with the poller and with the bare loop, alternating."""
    devices = []
    for site, dev in cfg.devices():
        host, port, unit = endpoints[dev.id]
        devices.append((site, dev.model_copy(update={"host": host, "port": port, "unit": unit})))
    n = len(devices)
    poller = FleetPoller(devices, settings, time.time)
    bare: BareLoop | None = None
    try:
        # Warm-up: discovery and nameplates, until every answering device has been read once.
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        answering = {d.id for _, d in devices} - set(silent)
        while time.monotonic() < deadline:
            await poller.poll_once()
            if all(poller.devices[i].last_good_at is not None for i in answering):
                break
            await asyncio.sleep(0.5)
        await poller.poll_once()
        bare = BareLoop(_requests(poller), settings.modbus_timeout_s, settings.max_concurrency)
        await bare.connect()
        await bare.cycle()
        p_wall, p_cpu, b_wall = [], [], []
        telemetry: dict = {}
        for _ in range(cycles):
            w, c = await _timed(poller.poll_once)
            telemetry = poller.devices
            p_wall.append(w)
            p_cpu.append(c)
            w, _ = await _timed(bare.cycle)
            b_wall.append(w)
        online = sum(1 for s in telemetry.values() if s.telemetry is not None and s.telemetry.read_at == s.last_good_at)
        dps = n * cycles / sum(p_wall)
        bare_dps = len(answering) * cycles / sum(b_wall)
        return {
            "devices": n,
            "cycles": cycles,
            "devices_per_s": round(dps, 1),
            "cycle_p50_s": round(statistics.median(p_wall), 4),
            "cycle_p99_s": round(_pct(p_wall, 0.99), 4),
            "cycle_max_s": round(max(p_wall), 4),
            "cpu_s_per_device": round(sum(p_cpu) / (n * cycles), 7),
            "bare_devices_per_s": round(bare_dps, 1),
            "bare_cycle_p50_s": round(statistics.median(b_wall), 4),
            "ratio_to_bare": round(dps / bare_dps, 3),
            "connections": len(poller.links),
            "requests_per_cycle": sum(len(r) for r in bare.reads.values()),
            "bare_errors": bare.errors,
            "silent_fraction": round(len(silent) / n, 3),
            "silent_devices": len(silent),
            "devices_read_ok": online,
            "modbus_timeout_s": settings.modbus_timeout_s,
            "max_concurrency": settings.max_concurrency,
        }
    finally:
        if bare is not None:
            bare.close()
        await poller.close()


async def run_poll_bench(
    fleet: dict[str, Any],
    n_devices: int,
    cycles: int,
    silent_fraction: float = 0.0,
    concurrency: int | None = None,
    seed: int = 7,
    latency_ms: float = 0.0,
) -> dict[str, Any]:
    """Trim ``fleet`` (a generated fleet config dict) to ``n_devices``, serve it in a child process, measure.

    ``latency_ms``: every reply of an answering device comes that late, for both loops alike."""
    raise_open_file_limit()
    fleet = trim_fleet(fleet, n_devices)
    fleet.setdefault("simulation", {})["speed"] = 1.0
    silent = add_silent(fleet, silent_fraction, seed) if silent_fraction > 0 else []
    if latency_ms > 0:
        add_latency(fleet, latency_ms, silent)
    cfg = validate_config(fleet, "generated bench fleet")
    settings = cfg.dispatch.model_copy(update={"max_concurrency": concurrency or cfg.dispatch.max_concurrency})
    with tempfile.TemporaryDirectory(prefix="sparcs-bench-") as tmp:
        path = Path(tmp) / "fleet.yaml"
        path.write_text(yaml.safe_dump(fleet, sort_keys=False), encoding="utf-8")
        sim = SimulatorProcess(path, n_devices)
        try:
            await sim.start()
            return await measure(cfg, sim.endpoints, cycles, settings, silent) | {"latency_ms": latency_ms}
        finally:
            sim.stop()
