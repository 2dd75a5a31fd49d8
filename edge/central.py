"""The central's side of the broker: edge sites behind the same Poller and Writer interfaces.

:class:`EdgeHub` keeps one MQTT connection. Its :attr:`EdgeHub.poller` yields, for the devices of
edge sites, the :class:`~sparcs.drivers.telemetry.Telemetry` last received (the same records the
edge's poller made, so the same :class:`~sparcs.controller.state.FleetState`); a device whose
telemetry is older than ``dispatch.stale_after_polls`` polls is stale, so its site leaves the plan
as a directly polled one would. Its :attr:`EdgeHub.writer` publishes, instead of Modbus writes,
each edge site's plan (a schedule of ``broker.plan_hours``, retained, valid until its end) and the
operator commands in force for it (retained), and reports the edges' acknowledged setpoints as
write results.

Every poll an edge sent is stored once (:meth:`~sparcs.controller.store.Store.add_edge_polls`,
keyed by site and sequence number), buffered ones after a link loss included. A message for a site
that does not belong to its sender is refused and raises an alarm; so does an edge clock more than
``broker.max_clock_skew_s`` off the central's, and an edge that went offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import aiomqtt

from sparcs.config.schema import FleetConfig
from sparcs.controller.cycle import Clock, Controller
from sparcs.controller.plan import Plan
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Telemetry, missing_values
from sparcs.drivers.writer import Setpoint, WriteResult
from sparcs.edge import messages as m
from sparcs.edge.link import Credential, keep_connected, message_expiry, stop_task
from sparcs.edge.link import client as mqtt_client

log = logging.getLogger("sparcs.edge.central")

EDGE_COMMAND_KINDS = ("stage", "para14a", "pause")
FLUSH_EVERY_S = 0.5
AGES_KEPT = 200_000
PUBLISH_TIMEOUT_S = 60.0
"""How long a plan or commands message may wait for the broker's acknowledgement (a plan for every
site goes out at once; the client's default of 10 s is too short for a busy broker)."""
SKEW_WINDOW = 4
SKEW_MIN_SAMPLES = 2
"""Clock skew is judged on the least delayed of an edge's last few live state messages (sent every
30 s), from the second on: a delay (a busy broker or central) only makes a sample larger, so one
late message is no skew."""
PUBLISH_WINDOW = 200
"""Publishes awaiting the broker's acknowledgement at once: the client scans its pending calls on
every publish, so a plan for 10,000 sites sent all at once costs quadratic time (20 s against 8 s).
The message-expiry properties are built once per distinct expiry (paho's are slow to build: 4,000
retained messages took 3.6 s with one each, 1.4 s shared)."""
START_GRACE_S = 120.0
"""After start-up an edge device not heard of yet is 'not read yet' (left out, no alarm) this long, at
least the stale window: a fleet's edges reconnecting to a restarted central take a while."""


@dataclass
class _NoFailures:
    """What the cycle's metrics ask of a device's poll attempts: the edge counts them, not the central."""

    attempt_failures: int = 0


NO_FAILURES = _NoFailures()
"""Every edge device's (asked for each device on every poll; never changed)."""


class EdgeHub:
    """The central's broker connection, ingest and publishing for the sites behind edges."""

    def __init__(self, cfg: FleetConfig, store: Store, clock: Clock, credential: Credential):
        if cfg.broker is None:
            raise ValueError("EdgeHub needs the fleet's broker section")
        self.cfg, self.broker, self.store, self.clock, self.credential = cfg, cfg.broker, store, clock, credential
        self.edge_of_site = {sid: e.id for e in self.broker.edges for sid in e.sites}
        self.edge_ids = frozenset(e.id for e in self.broker.edges)
        self.sites = [s for s in cfg.sites if s.id in self.edge_of_site]
        self.kinds = {d.id: d.kind for s in self.sites for d in s.devices}
        self.site_of_device = {d.id: s.id for s in self.sites for d in s.devices}
        self.latest: dict[str, Telemetry] = {}
        self.acks: dict[str, m.AckMsg] = {}
        self._new_acks: set[str] = set()
        self.plan_acked: set[str] = set()  # sites whose edge acknowledged the plan in force as published
        self.online: dict[str, bool] = {}
        self.revision: dict[str, int] = {}  # edge → the protocol revision it announced
        self.skew_s: dict[str, float] = {}  # edge → how far its clock is ahead of the central's (s)
        self._clock_samples: dict[str, deque[float]] = {}
        self.ctl: Controller | None = None
        self.connected = False
        self.ages_s: deque[float] = deque(maxlen=AGES_KEPT)  # telemetry age at arrival (central clock − poll time)
        self.received = 0
        self.refused = 0
        self.publish_s: float | None = None  # the last publish: until the broker acknowledged every message (s)
        self._rows: list[dict] = []
        self._plan_key: int | None = None
        self._plan_id: float | None = None  # the id of the plan in force as published: when it was first
        self._published_cmds: dict[str, tuple] = {}
        self._published_control: dict[str, tuple[float, tuple[str, ...]]] = {}  # site → (sent, monitor-only)
        self._unsent_plans: set[str] = set()  # sites whose plan the broker did not acknowledge
        self._client: aiomqtt.Client | None = None
        self._dirty = True
        self._started_at = clock.now()
        self.start_grace_s = START_GRACE_S
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.poller = EdgePoller(self)
        self.writer = EdgeWriter(self)

    def attach(self, ctl: Controller) -> None:
        """The controller whose plan and commands are published, and whose alarms are raised."""
        self.ctl = ctl

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the running loop); idempotent."""
        if self._task is None:
            self._started_at = self.clock.now()
            self._task = asyncio.create_task(
                keep_connected(self._make_client, self._session, on_state=self._on_link, stop=self._stop)
            )
            self._flusher = asyncio.create_task(self._flush_loop())

    async def close(self) -> None:
        self._stop.set()
        for t in (self._task, self._flusher):
            await stop_task(t)
        await asyncio.to_thread(self.flush)

    def _make_client(self) -> aiomqtt.Client:
        return mqtt_client(self.broker, self.credential)

    def _on_link(self, connected: bool, error: str | None) -> None:
        self.connected = connected
        if not connected:
            self._client = None
        if self.ctl is not None:
            self.ctl.alarms.follow(
                "broker",
                error is not None,
                self.clock.now(),
                f"central: no broker connection: {error}; edge sites follow their stored plans",
                severity="critical",
            )

    async def _session(self, client: aiomqtt.Client) -> None:
        for kind in m.FROM_EDGE:
            await client.subscribe(f"{m.ROOT}/+/{kind}", qos=1)
        await client.subscribe(f"{m.EDGE_ROOT}/+/state", qos=1)
        self._client = client
        self._dirty = True  # publish plan and commands again: they may have changed meanwhile
        try:
            async for msg in client.messages:
                self.handle(str(msg.topic), bytes(msg.payload), retained=bool(msg.retain))
        finally:
            self._client = None

    # -- ingest -------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """One message from the broker: checked against its sender, then taken in."""
        now = self.clock.now()
        try:
            msg = m.decode(topic, payload, self.kinds)
        except m.MessageError as exc:
            self._refuse("unknown", f"{exc}", now)
            return
        self.received += 1
        if isinstance(msg, m.StateMsg):
            self._state(msg, now, retained)
            return
        if isinstance(msg, m.SitePlanMsg | m.CommandsMsg | m.ControlMsg):
            return  # the central's own retained messages are not subscribed to
        owner = self.edge_of_site.get(msg.site)
        if owner != msg.edge:
            whose = f"belongs to edge '{owner}'" if owner else "is not behind an edge"
            self._refuse(msg.edge, f"sent {topic} for site '{msg.site}', which {whose}; message refused", now)
            return
        if isinstance(msg, m.TelemetryMsg):
            self._telemetry(msg, now)
        elif isinstance(msg, m.AckMsg):
            self.acks[msg.site] = msg
            self._new_acks.add(msg.site)
            if msg.plan_id is not None and msg.plan_id == self._plan_id:
                self.plan_acked.add(msg.site)
        elif isinstance(msg, m.AlarmMsg) and self.ctl is not None:
            self.ctl.alarms.follow(
                f"edge:{msg.site}:{msg.source}", msg.active, now, f"edge {msg.edge}: {msg.message}", msg.severity
            )

    def _refuse(self, sender: str, why: str, now: float) -> None:
        self.refused += 1
        log.warning("edge message refused: %s", why)
        if self.ctl is not None:
            self.store.raise_alarm(at=now, severity="critical", source=f"edge:{sender}:refused", message=why)

    def _telemetry(self, msg: m.TelemetryMsg, now: float) -> None:
        devices = {}
        for dev, t in msg.devices.items():
            if self.site_of_device.get(dev) != msg.site:
                self._refuse(msg.edge, f"sent telemetry of device '{dev}' as site '{msg.site}'; refused", now)
                return
            devices[dev] = {"status": t.status, "values": {k: [r.value, r.quality] for k, r in t.values.items()}}
            held = self.latest.get(dev)
            if held is None or t.read_at >= held.read_at:
                self.latest[dev] = t
        self.ages_s.append(now - msg.ts)
        self._rows.append(
            {
                "site_id": msg.site,
                "seq": msg.seq,
                "ts": msg.ts,
                "received_at": now,
                "edge_id": msg.edge,
                "devices": devices,
            }
        )

    def _state(self, msg: m.StateMsg, now: float, retained: bool) -> None:
        if msg.edge not in self.edge_ids:
            self._refuse(msg.edge, f"unknown edge '{msg.edge}' announced itself; refused", now)
            return
        self.online[msg.edge] = msg.online
        if msg.online:
            self.revision[msg.edge] = msg.revision
        if self.ctl is None:
            return
        self.ctl.alarms.follow(
            f"edge:{msg.edge}",
            not msg.online,
            now,
            f"edge {msg.edge} is offline; its sites follow their stored plans until they expire",
        )
        if msg.online and msg.ts is not None and not retained:  # a live message: its time is the edge's now
            window = self._clock_samples.setdefault(msg.edge, deque(maxlen=SKEW_WINDOW))
            window.append(now - float(msg.ts))  # the central's minus the edge's clock, plus the delay (≥ 0)
            if len(window) < SKEW_MIN_SAMPLES:
                return
            skew = -min(window)  # the least delayed sample: how far the edge's clock is ahead
            self.skew_s[msg.edge] = skew
            limit = self.broker.max_clock_skew_s
            self.ctl.alarms.follow(
                f"edge:{msg.edge}:clock",
                abs(skew) > limit,
                now,
                f"edge {msg.edge}: its clock is {skew:+.1f} s off the central's (more than {limit:g} s); "
                "check its time synchronisation (NTP)",
            )

    def flush(self) -> int:
        """Store the edge polls received since the last flush (each (site, seq) once); returns how many were new."""
        rows, self._rows = self._rows, []
        return self.store.add_edge_polls(rows)

    async def _flush_loop(self) -> None:
        speed = float(getattr(self.clock, "speed", 1.0))
        while True:
            await asyncio.sleep(FLUSH_EVERY_S / max(1.0, speed))
            if self._rows:
                try:
                    await asyncio.to_thread(self.flush)
                except Exception:  # the store's trouble is the cycle's to report; these rows are retried
                    log.exception("edge polls not stored")

    # -- the poller's and writer's halves -----------------------------------------------------

    def telemetry(self, now: float) -> dict[str, Telemetry]:
        """The latest telemetry of every edge device; stale once older than the poller's stale rule
        (``stale_after_polls`` of the device's own read interval under tiered polling)."""
        d_cfg = self.cfg.dispatch  # read on every call: a reload may change the stale rule
        limits = {
            k: d_cfg.stale_after_polls * d_cfg.poll_interval_s * d_cfg.polls_between_reads(k)
            for k in set(self.kinds.values())
        }
        out = {}
        for s in self.sites:
            for d in s.devices:
                limit = limits[d.kind]
                t = self.latest.get(d.id)
                if t is not None and now - t.read_at <= limit:
                    out[d.id] = t
                    continue
                if t is None and now - self._started_at <= max(limit, self.start_grace_s):
                    continue  # not heard of since start-up: not read yet, as a direct device before its first poll
                edge = self.edge_of_site[s.id]
                since = "since start-up" if t is None else f"for {now - t.read_at:.0f} s"
                out[d.id] = Telemetry(
                    device_id=d.id,
                    site_id=s.id,
                    kind=d.kind,
                    read_at=now,
                    status="stale",
                    values=missing_values(d.kind),
                    last_good_at=None if t is None else t.last_good_at,
                    error=f"no telemetry from edge {edge} {since}",
                )
        return out

    async def publish(self, now: float) -> None:
        """Publish each edge site's plan when the plan in force changed, its commands and its device
        switches when they changed (all retained); everything again after a reconnect. A message the
        broker did not acknowledge in time is published again at the next call (the rest of that
        round is cancelled), so a slow broker sees each message once per round, not the whole fleet's."""
        client, ctl = self._client, self.ctl
        if client is None or ctl is None:
            return
        dirty, self._dirty = self._dirty, False
        out: list[tuple[str, bytes, float | None]] = []
        plan = ctl.plan
        retry, self._unsent_plans = self._unsent_plans, set()
        if plan is not None and (dirty or id(plan) != self._plan_key or retry):
            if id(plan) != self._plan_key:
                self._plan_key, self._plan_id, retry = id(plan), now, set()
                self.plan_acked = set()
            assert self._plan_id is not None
            for sid in plan.sites:
                if sid in self.edge_of_site and (dirty or not retry or sid in retry):
                    msg = site_plan(plan, sid, self._plan_id, self.broker.plan_hours)
                    if msg is not None:
                        out.append((m.site_topic(sid, "plan"), m.encode(msg), msg.valid_until - now))
        active = [c for c in ctl.commands.active(now) if c.kind in EDGE_COMMAND_KINDS]
        for s in self.sites:
            cmds = [
                m.EdgeCommand(c.id, c.kind, c.start_s, c.expires_s, {k: v for k, v in c.params.items() if k != "sites"})
                for c in active
                if c.covers_site(s.id)
            ]
            key = tuple((c.id, c.expires_s) for c in cmds)
            if dirty or self._published_cmds.get(s.id) != key:
                expiries = [c.expires_s for c in cmds]
                ttl = None if not cmds or None in expiries else max(e for e in expiries if e is not None) - now
                out.append((m.site_topic(s.id, "commands"), m.encode(m.CommandsMsg(s.id, now, cmds)), ttl))
                self._published_cmds[s.id] = key
            off = tuple(d.id for d in s.devices if d.id in ctl.device_control.monitor_only)
            held = self._published_control.get(s.id)
            if dirty or held is None or held[1] != off:
                sent = now if held is None or held[1] != off else held[0]
                out.append((m.site_topic(s.id, "control"), m.encode(m.ControlMsg(s.id, sent, list(off))), None))
                self._published_control[s.id] = (sent, off)
        if not out:
            return
        window = asyncio.Semaphore(PUBLISH_WINDOW)
        expiry = {e: message_expiry(e) for e in {int(ttl) for _, _, ttl in out if ttl is not None}}  # built once each

        async def one(topic: str, payload: bytes, ttl: float | None) -> None:
            async with window:
                props = None if ttl is None else expiry[int(ttl)]
                await client.publish(topic, payload, qos=1, retain=True, properties=props, timeout=PUBLISH_TIMEOUT_S)

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(one(t, p, ttl)) for t, p, ttl in out]
        try:
            await asyncio.gather(*tasks)
        except aiomqtt.MqttError as exc:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            unsent = [topic for (topic, _, _), t in zip(out, tasks, strict=True) if t.cancelled() or t.exception()]
            self._forget(unsent)
            log.warning(
                "%d of %d plan, command and switch messages not published (%s); again next cycle",
                len(unsent),
                len(out),
                exc,
            )
            return
        self.publish_s = time.perf_counter() - t0

    def _forget(self, topics: list[str]) -> None:
        """These messages did not reach the broker: publish them again next time."""
        for topic in topics:
            _, sid, kind = m.parse_topic(topic)
            if kind == "plan":
                self._unsent_plans.add(sid)
            elif kind == "commands":
                self._published_cmds.pop(sid, None)
            else:
                self._published_control.pop(sid, None)

    @property
    def plan_id(self) -> float | None:
        """The id the plan in force was published with (the central's clock then), None before."""
        return self._plan_id

    def released(self, device_id: str) -> WriteResult | None:
        """The release of a device switched to monitor-only, once its edge acknowledged the control
        message that switched it and reports the device released; None while that is owed (also
        while the edge has not announced itself). An edge of protocol revision 1 cannot be switched:
        a failed result that says so."""
        sid = self.site_of_device[device_id]
        edge = self.edge_of_site[sid]
        revision = self.revision.get(edge)
        if revision is None:
            return None
        if revision < 2:
            return WriteResult(
                device_id,
                "failed",
                False,
                detail=f"behind edge {edge}, which speaks protocol v1 revision 1 (no device switch); update the edge",
            )
        ack, held = self.acks.get(sid), self._published_control.get(sid)
        if ack is None or held is None or ack.control is None or ack.control < held[0]:
            return None
        if device_id not in ack.released:
            return None
        return WriteResult(
            device_id,
            "release",
            True,
            detail=f"at edge {edge}: released to its installer configuration",
            written_at=ack.ts,
        )

    def write_results(self) -> dict[str, WriteResult]:
        """The setpoints the edges acknowledged since the last call, as write results per device."""
        out = {}
        for sid in self._new_acks:
            ack = self.acks[sid]
            for dev, a in ack.devices.items():
                out[dev] = WriteResult(
                    dev,
                    a.action,  # type: ignore[arg-type]
                    a.ok,
                    written_w=a.written_w,
                    mismatch=a.mismatch,
                    detail=f"at edge {ack.edge}: {a.detail}",
                    written_at=ack.ts,
                )
        self._new_acks.clear()
        return out


def site_plan(plan: Plan, site_id: str, plan_id: float, hours: float) -> m.SitePlanMsg | None:
    """The site's part of ``plan``: its periods that start in the first ``hours``, valid until their end."""
    s = plan.sites.get(site_id)
    if s is None:
        return None
    limit_end = plan.start_s + hours * 3600.0
    periods, pv, bat, price, grid, available = [], [], [], [], [], []
    t = plan.start_s
    for i, p in enumerate(plan.period_s):
        if t >= limit_end:
            break
        periods.append(float(p))
        pv.append(_opt(s.pv_limit_w[i]))
        bat.append(_opt(s.battery_w[i]))
        grid.append(_opt(s.grid_w[i]))
        available.append(_opt(s.pv_available_w[i]))
        price.append(_opt(plan.price_eur_per_mwh[i]))
        t += float(p)
    return m.SitePlanMsg(site_id, plan_id, plan.path, plan.start_s, periods, t, pv, bat, price, grid, available)


def _opt(v: float) -> float | None:
    return None if v != v else float(v)  # NaN → None


class EdgePoller:
    """The :class:`~sparcs.controller.cycle.Poller` of the edge sites: what the edges sent."""

    def __init__(self, hub: EdgeHub):
        self.hub = hub

    async def poll_once(self) -> dict[str, Telemetry]:
        self.hub.start()
        return self.hub.telemetry(self.hub.clock.now())

    def state(self, device_id: str) -> _NoFailures:
        return NO_FAILURES

    async def close(self) -> None:
        await self.hub.close()


class EdgeWriter:
    """The :class:`~sparcs.controller.cycle.Writer` of the edge sites: publishes plans and commands."""

    def __init__(self, hub: EdgeHub):
        self.hub = hub

    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]:
        """The edges write their devices themselves, from the plan: nothing to do per setpoint."""
        return {}

    async def release(self, device_ids: list[str]) -> dict[str, WriteResult]:
        """The switch goes to the edge in the site's control message (published with the plan); a device
        is reported released once its edge acknowledged the release (:meth:`EdgeHub.released`)."""
        out = {}
        for d in device_ids:
            r = self.hub.released(d)
            if r is not None:
                out[d] = r
        return out

    async def refresh_due(self) -> dict[str, WriteResult]:
        """Called on every cycle: publish what changed, and report the setpoints the edges acknowledged
        (not for a device whose release is owed: the release's result stands for it)."""
        self.hub.start()
        await self.hub.publish(self.hub.clock.now())
        results = self.hub.write_results()
        owed = self.hub.ctl.device_control.releasing if self.hub.ctl is not None else set()
        return {d: r for d, r in results.items() if d not in owed}
