"""`sparcs bench edges`: N sites, each behind its own edge, one Mosquitto (TLS, password file, ACL),
one central controller; prints telemetry age at the central, plan fan-out, the central's CPU and
the broker's message rate (docs/edges.md "Benchmark").

The edges run as asyncio tasks in ``workers`` processes. Full edges are the production edge (the
controller with the Modbus poller and writer) against simulated devices served in the same worker;
``--light`` edges send synthetic telemetry of the same shape without Modbus and acknowledge plans
at once, so that 10,000 fit on one machine. The central is the production controller built by the
factory; its planner here returns a fixed plan of every site at once (the solve is
``sparcs bench dispatch``'s subject), so ``fanout_s`` measures the transport: from the dispatch
until every edge acknowledged that plan. ``central_cores`` is the central process's CPU seconds
per wall second over the measured window (the broker and edges run in other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import psutil
import yaml

from sparcs.config.schema import BrokerConfig, FleetConfig, validate_config
from sparcs.controller.commands import CommandBook
from sparcs.controller.cycle import WallClock
from sparcs.controller.heap import settle_heap
from sparcs.controller.plan import Plan, PlanTimings, SitePlan
from sparcs.controller.state import FleetState
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import KEYS_BY_KIND, Reading, Telemetry
from sparcs.edge import messages as m
from sparcs.edge.central import EdgeHub
from sparcs.edge.link import Credential, client, keep_connected, tls_context
from sparcs.edge.mosquitto import Mosquitto, raise_fd_limit, write_broker_files
from sparcs.factory import build_controller, build_edge
from sparcs.optimizer.forecast_quality import QualityRow
from sparcs.optimizer.problem import ObjectiveParts

log = logging.getLogger("sparcs.bench.edges")
READY_TIMEOUT_S = 900.0
FANOUT_TIMEOUT_S = 60.0
RAMP_CONNECTS_PER_S = 100.0
"""Edges start evenly spread at this rate (all processes together), as a fleet's gateways come up
over time: the broker takes about so many TLS handshakes a second on this machine beside the rest."""


def _rounded(v: float) -> float | None:
    """A figure for the JSON: None (null) where nothing was measured."""
    return None if not math.isfinite(float(v)) else round(float(v), 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchPlanner:
    """A fixed plan of every controllable site (limit at half the PV rating for the next hours)."""

    def __init__(self, cfg: FleetConfig):
        self.cfg = cfg

    def observe(self, state: FleetState) -> None:
        pass

    def restore(self, plan: Plan) -> None:
        pass

    async def plan(self, state: FleetState, commands: CommandBook, now_s: float) -> Plan | None:
        n = 24
        start = math.floor(now_s / 900.0) * 900.0
        zeros, nan = np.zeros(n), np.full(n, np.nan)
        sites = {
            s.id: SitePlan(nan, np.full(n, 0.5 * s.pv.rating_w), nan, nan, np.full(n + 1, np.nan), nan, nan)
            for s in self.cfg.sites
            if s.id in state.sites and state.sites[s.id].controllable
        }
        return Plan(
            start_s=start,
            period_s=np.full(n, 900.0),
            path="optimal",
            reason="bench plan",
            objective_eur=0.0,
            parts=ObjectiveParts(0.0, 0.0, 0.0, 0.0, 0.0),
            soc_end_kwh=0.0,
            timings=PlanTimings(),
            export_w=zeros,
            price_eur_per_mwh=np.full(n, 80.0),
            export_schedule_w=None,
            sites=sites,
        )

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def forecast_quality(self) -> list[QualityRow]:
        return []


def bench_fleet(n: int, port: int, folder: Path, poll_s: float) -> tuple[dict[str, Any], dict[str, str]]:
    """A synthetic fleet of ``n`` sites, one edge each (own password), on the broker at ``port``."""
    from sparcs.simulators.fleetgen import synthetic_fleet

    data = synthetic_fleet(n, seed=7, port_start=20_000, simulation={"weather": {"cloudiness": 0.2}})
    passwords = {"central": secrets.token_hex(12)}
    edges = []
    for s in data["sites"]:
        eid = f"e-{s['id']}"
        passwords[eid] = secrets.token_hex(12)
        (folder / "pw").mkdir(exist_ok=True)
        edges.append({"id": eid, "sites": [s["id"]], "password_file": str(folder / "pw" / eid)})
        (folder / "pw" / eid).write_text(passwords[eid])
    (folder / "pw" / "central").write_text(passwords["central"])
    data["broker"] = {"port": port, "password_file": str(folder / "pw" / "central"), "edges": edges}
    data["dispatch"] = {"poll_interval_s": poll_s, "stale_after_polls": 3}
    return data, passwords


@dataclass(frozen=True)
class LightSite:
    """A light edge's site: its id, its devices (id, kind) and the edge's broker password."""

    id: str
    devices: tuple[tuple[str, str], ...]
    password: str


def _light_telemetry(site: LightSite, now: float, rng: random.Random) -> dict[str, Telemetry]:
    out = {}
    for dev, kind in site.devices:
        vals = dict.fromkeys(KEYS_BY_KIND[kind], Reading(None, "missing"))
        good: dict[str, float | None] = {
            "pv_inverter": {"pv_w": rng.uniform(0, 5000), "pv_limit_w": None, "wmax_w": 5000.0, "rating_w": 5000.0},
            "battery": {"battery_w": rng.uniform(-2000, 2000), "soc": rng.uniform(0.1, 0.9), "capacity_wh": 1e4},
            "meter": {"grid_w": rng.uniform(-3000, 3000), "import_wh": 1e6, "export_wh": 2e6},
        }[kind]  # type: ignore[assignment]
        vals.update({k: Reading(v, "good") for k, v in good.items()})
        vals["energy_wh" if kind != "meter" else "import_wh"] = Reading(1e6 + now, "good")
        out[dev] = Telemetry(dev, site.id, kind, now, "online", vals, now, None, [1, 103])
    return out


async def _light_edge(
    broker: BrokerConfig,
    tls: ssl.SSLContext | None,
    site: LightSite,
    poll_s: float,
    start_at: float,
    stop: asyncio.Event,
) -> None:
    """One light edge from ``start_at`` (wall clock): synthetic telemetry every ``poll_s``, every plan
    acknowledged at once, on the production link (:func:`~sparcs.edge.link.keep_connected`)."""
    sid, eid = site.id, f"e-{site.id}"
    rng = random.Random(sid)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    will = aiomqtt.Will(m.state_topic(eid), m.encode(m.StateMsg(eid, False)), qos=1, retain=True)
    seq = 0

    async def session(c: aiomqtt.Client) -> None:
        nonlocal seq
        await c.subscribe(m.site_topic(sid, "plan"), qos=1)
        state = m.StateMsg(eid, True, time.time(), [sid], m.REVISION)
        await c.publish(m.state_topic(eid), m.encode(state), qos=1, retain=True)

        async def acks() -> None:
            async for msg in c.messages:
                plan = m.decode(str(msg.topic), bytes(msg.payload), {})
                if isinstance(plan, m.SitePlanMsg):
                    ack = m.AckMsg(eid, sid, time.time(), plan.plan_id, [])
                    await c.publish(m.site_topic(sid, "ack"), m.encode(ack), qos=1)

        task = asyncio.create_task(acks())
        try:
            next_t = time.time()
            while not stop.is_set():
                seq += 1
                now = time.time()
                msg = m.TelemetryMsg(eid, sid, seq, now, _light_telemetry(site, now, rng))
                await c.publish(m.site_topic(sid, "telemetry"), m.encode(msg), qos=1)
                next_t += poll_s
                await asyncio.sleep(max(0.0, next_t - time.time()))
        finally:
            task.cancel()

    await keep_connected(
        lambda: client(broker, Credential(eid, site.password, eid), will=will, tls=tls),
        session,
        on_state=lambda connected, error: None,
        stop=stop,
    )


async def _light_worker(
    broker: BrokerConfig, sites: list[LightSite], poll_s: float, ramp_s: float, stop_at: float
) -> None:
    """Light edges in this process, started evenly over ``ramp_s`` (one TLS context for all)."""
    stop = asyncio.Event()
    tls = tls_context(broker)
    t0 = time.time()
    tasks = [
        asyncio.create_task(_light_edge(broker, tls, s, poll_s, t0 + ramp_s * i / max(1, len(sites)), stop))
        for i, s in enumerate(sites)
    ]
    await asyncio.sleep(max(0.0, stop_at - time.time()))
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _full_worker(fleet_file: str, site_ids: list[str], stop_at: float) -> None:
    """Production edges (one per site) against the sites' simulated devices, served in this process."""
    data = yaml.safe_load(Path(fleet_file).read_text())
    cfg = validate_config(data)
    poll_s = cfg.dispatch.poll_interval_s
    from sparcs.simulators.clock import SimClock
    from sparcs.simulators.fleet import FleetHost

    sub = cfg.model_copy(update={"sites": [s for s in cfg.sites if s.id in set(site_ids)]})
    clock = SimClock(time.time(), speed=1.0)
    host = FleetHost(sub, clock=clock, auto_ports=True)
    await host.start()
    full = cfg.model_copy(update={"sites": [host.config.site(s.id) if s.id in site_ids else s for s in cfg.sites]})
    stop = asyncio.Event()
    folder = Path(fleet_file).parent / "edges"
    nodes, stores = [], []
    for sid in site_ids:
        store = Store(data_dir=folder / sid)
        stores.append(store)
        nodes.append(build_edge(full, f"e-{sid}", store, clock, folder / sid))

    async def run(node: Any, delay: float) -> None:
        await asyncio.sleep(delay)
        await node.run(stop)

    rng = random.Random(7)
    tasks = [asyncio.create_task(run(n, rng.uniform(0, poll_s))) for n in nodes]
    await asyncio.sleep(max(0.0, stop_at - time.time()))
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    for n in nodes:
        with contextlib.suppress(Exception):
            await n.close()
    for s in stores:
        s.close()
    await host.stop()


def _light_process(broker: BrokerConfig, sites: list[LightSite], poll_s: float, ramp_s: float, stop_at: float) -> None:
    raise_fd_limit()
    asyncio.run(_light_worker(broker, sites, poll_s, ramp_s, stop_at))


def _full_process(fleet_file: str, site_ids: list[str], stop_at: float) -> None:
    raise_fd_limit()
    asyncio.run(_full_worker(fleet_file, site_ids, stop_at))


async def _sys_counter(cfg: FleetConfig, password: str) -> tuple[float, float] | None:
    """The broker's messages received + sent so far (from $SYS) and when read; None when the broker
    did not answer in three tries (a broker this busy may time out a new TLS handshake)."""
    assert cfg.broker is not None
    want = {"$SYS/broker/messages/received", "$SYS/broker/messages/sent"}
    for _ in range(3):
        got: dict[str, float] = {}
        try:
            async with client(cfg.broker, Credential("central", password, f"bench-sys-{secrets.token_hex(3)}")) as c:
                for t in want:
                    await c.subscribe(t, qos=0)
                async with asyncio.timeout(30):
                    async for msg in c.messages:
                        got[str(msg.topic)] = float(bytes(msg.payload))
                        if set(got) == want:
                            return sum(got.values()), time.monotonic()
        except (aiomqtt.MqttError, TimeoutError):
            await asyncio.sleep(1.0)
    return None


async def run_edge_bench(n: int, light: bool, poll_s: float, duration_s: float, workers: int) -> dict[str, Any]:
    """Run the benchmark; see the module docstring. Returns the JSON fields of docs/edges.md."""
    raise_fd_limit()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM cancels the run, so the broker and the workers are stopped below
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    folder = Path(tempfile.mkdtemp(prefix="sparcs-bench-edges-"))
    port = _free_port()
    data, passwords = bench_fleet(n, port, folder, poll_s)
    probe = validate_config(data)
    assert probe.broker is not None
    files = write_broker_files(folder / "broker", probe.broker, passwords, port=port, sys_interval_s=1)
    data["broker"]["ca_file"] = str(files.ca)
    fleet_file = folder / "fleet.yaml"  # what full edges read (light ones get their sites' records)
    if not light:
        fleet_file.write_text(yaml.safe_dump(data))
    cfg = validate_config(data)
    broker = Mosquitto(files, port)
    broker.start()
    store = Store(data_dir=folder / "central")
    ctl = build_controller(cfg, store, WallClock(), planner=BenchPlanner(cfg))
    hub = ctl.writer.edge.hub  # type: ignore[attr-defined]
    assert isinstance(hub, EdgeHub)
    procs: list[Any] = []
    hub.start_grace_s = READY_TIMEOUT_S  # edges still connecting are not read yet, not stale
    try:
        settle_heap()  # as `sparcs run` does before it serves (sparcs.controller.heap)
        hub.start()
        while not hub.connected:
            await asyncio.sleep(0.05)
        ids = [s.id for s in cfg.sites]
        ramp_s = n / RAMP_CONNECTS_PER_S
        ready_s = min(READY_TIMEOUT_S, 60.0 + ramp_s + (0.0 if light else n / 2.0))
        stop_at = time.time() + ready_s + duration_s + 3 * poll_s + FANOUT_TIMEOUT_S
        ctx = mp.get_context("spawn")
        k = min(workers, n)
        light_sites = [
            LightSite(s.id, tuple((d.id, d.kind) for d in s.devices), passwords[f"e-{s.id}"]) for s in cfg.sites
        ]
        for i in range(k):
            if light:
                args: tuple[Any, ...] = (cfg.broker, light_sites[i::k], poll_s, ramp_s, stop_at)
                p = ctx.Process(target=_light_process, args=args, daemon=True)
            else:
                p = ctx.Process(target=_full_process, args=(str(fleet_file), ids[i::k], stop_at), daemon=True)
            p.start()
            procs.append(p)
        deadline = time.monotonic() + ready_s
        all_devices = {d.id for s in cfg.sites for d in s.devices}
        next_cycle = time.monotonic()
        while time.monotonic() < deadline and len(hub.latest) < len(all_devices):
            if time.monotonic() >= next_cycle:  # the central's cycle at its poll interval, as in production
                await ctl.cycle()
                next_cycle += poll_s
            heard, total = len(hub.latest), len(all_devices)
            log.info(
                "bench: %d of %d devices heard of, %d messages, central connected: %s",
                heard,
                total,
                hub.received,
                hub.connected,
            )
            await asyncio.sleep(1.0)
        ready_after_s = time.monotonic() - (deadline - ready_s)
        # warm-up done: one poll interval more, then measure
        await asyncio.sleep(poll_s)
        hub.ages_s.clear()
        me = psutil.Process(os.getpid())
        cpu0, wall0 = sum(me.cpu_times()[:2]), time.monotonic()
        msgs0 = await _sys_counter(cfg, passwords["central"])
        fanout_s = dispatch_s = None
        at_edges = np.array([np.nan])
        acked = 0
        next_cycle = time.monotonic()
        while time.monotonic() - wall0 < duration_s:
            if fanout_s is None and time.monotonic() - wall0 >= duration_s / 3:
                t0 = time.time()
                await ctl.cycle(dispatch=True)
                pid = hub.plan_id  # the central's (wall) clock when it began publishing this plan
                assert pid is not None and pid >= t0
                dispatch_s = pid - t0
                while time.time() < pid + FANOUT_TIMEOUT_S:
                    acked = len(hub.plan_acked)  # counted as the acks arrive: this loop scans no sites
                    if acked == n:
                        break
                    await asyncio.sleep(0.005)
                fanout_s = time.time() - pid if acked == n else None
                got = [a for s in ids if (a := hub.acks.get(s)) is not None and a.plan_id == pid]
                at_edges = np.array([a.ts - pid for a in got])
            else:
                await ctl.cycle()
            next_cycle += poll_s
            await asyncio.sleep(max(0.0, min(next_cycle, wall0 + duration_s) - time.monotonic()))
        cpu1, wall1 = sum(me.cpu_times()[:2]), time.monotonic()
        msgs1 = await _sys_counter(cfg, passwords["central"])
        ages = np.array(hub.ages_s) if hub.ages_s else np.array([np.nan])
        return {
            "sites": n,
            "light": light,
            "poll_interval_s": poll_s,
            "duration_s": round(wall1 - wall0, 1),
            "workers": k,
            "sites_online": sum(1 for s in cfg.sites if all(d.id in hub.latest for d in s.devices)),
            "devices_reporting": len(hub.latest),
            "ready_after_s": round(ready_after_s, 1),
            "telemetry_msgs": len(hub.ages_s),
            "telemetry_age_p50_s": _rounded(np.percentile(ages, 50)),
            "telemetry_age_p99_s": _rounded(np.percentile(ages, 99)),
            "fanout_s": None if fanout_s is None else round(fanout_s, 4),
            "fanout_acked": acked,
            "dispatch_s": None if dispatch_s is None else round(dispatch_s, 4),
            "publish_s": None if hub.publish_s is None else round(hub.publish_s, 4),
            "plan_at_edges_p50_s": _rounded(np.percentile(at_edges, 50)) if len(at_edges) else None,
            "plan_at_edges_max_s": _rounded(np.max(at_edges)) if len(at_edges) else None,
            "central_cores": round((cpu1 - cpu0) / (wall1 - wall0), 4),
            "broker_msgs_per_s": None
            if msgs0 is None or msgs1 is None
            else round((msgs1[0] - msgs0[0]) / max(1e-9, msgs1[1] - msgs0[1]), 1),
            "tls": True,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        await ctl.close()
        store.close()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
