"""The edge: the production :class:`~sparcs.controller.cycle.Controller` of its sites, on the broker.

On every poll the edge's controller runs what must not wait for a round trip: the export guard,
the writer (revert timers, refresh, read-back, release), the stages and §14a in force. Its planner
(:class:`~sparcs.edge.follow.FollowPlanner`) follows the per-site plans the central publishes;
operator commands arrive with their expiry and are kept in the edge's own store, so they hold
across a link loss and an edge restart until they expire. Each poll's telemetry and every alarm
change go to the :class:`~sparcs.edge.outbox.Outbox` and reach the central oldest first when the
broker is there. Nothing here loosens a limit when the link is gone: the stored plan holds until
its validity ends, then the installer configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict

import aiomqtt

from sparcs.config.schema import BrokerConfig
from sparcs.controller.cycle import Controller, CycleReport, Writer
from sparcs.drivers.writer import Setpoint, WriteResult
from sparcs.edge import messages as m
from sparcs.edge.follow import FollowPlanner
from sparcs.edge.link import Credential, keep_connected, stop_task
from sparcs.edge.outbox import Outbox

log = logging.getLogger("sparcs.edge")

SEND_BATCH = 200
SEND_TIMEOUT_S = 60.0  # a batch of the outbox after a link loss may wait this long for the broker
BROKER_ALARM = "broker"

_AckKey = tuple[float | None, tuple[int, ...], float | None, tuple[str, ...]]
"""What a site's ack says the edge follows: plan id, command ids, control message, released devices."""


class AckingWriter:
    """A :class:`~sparcs.controller.cycle.Writer` that keeps each device's last write result, for the acks."""

    def __init__(self, inner: Writer):
        self.inner = inner
        self.last: dict[str, WriteResult] = {}
        self.changed = False

    async def apply(self, setpoints: dict[str, Setpoint]) -> dict[str, WriteResult]:
        return self._keep(await self.inner.apply(setpoints))

    async def refresh_due(self) -> dict[str, WriteResult]:
        return self._keep(await self.inner.refresh_due())

    async def release(self, device_ids: list[str]) -> dict[str, WriteResult]:
        return self._keep(await self.inner.release(device_ids))

    def _keep(self, results: dict[str, WriteResult]) -> dict[str, WriteResult]:
        for dev, r in results.items():
            if r.action != "unchanged" or dev not in self.last:
                self.last[dev] = r
                self.changed = self.changed or r.action != "unchanged"
        return results


class EdgeNode:
    """One edge: its controller, its outbox and its broker connection."""

    def __init__(
        self,
        ctl: Controller,
        planner: FollowPlanner,
        writer: AckingWriter,
        outbox: Outbox,
        broker: BrokerConfig,
        edge_id: str,
        credential: Credential,
    ):
        self.ctl, self.planner, self.writer, self.outbox = ctl, planner, writer, outbox
        self.broker, self.edge_id, self.credential = broker, edge_id, credential
        self.sites = [s.id for s in ctl.cfg.sites]
        self.devices_of = {s.id: [d.id for d in s.devices] for s in ctl.cfg.sites}
        self.site_of_device = {d: s for s, ds in self.devices_of.items() for d in ds}
        self.seqs = outbox.next_seqs(self.sites)
        self.connected = False
        self.link_error: str | None = None
        self.wake = asyncio.Event()  # a plan or commands arrived: run a cycle now
        self._queued = asyncio.Event()
        self._stop = asyncio.Event()
        self._link_task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._sent_alarms: dict[str, bool] = {}
        self._acked: dict[str, _AckKey] = {}  # site → what the broker took as the site's last ack
        self._acking: dict[str, _AckKey] = {}  # site → the ack on its way to the broker
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self._central_cmds: dict[str, list[m.EdgeCommand]] = self._stored_commands()
        self._control_sent: dict[str, float] = {}  # site → ``sent`` of the control message followed
        self.received = 0

    # -- the control cycle --------------------------------------------------------------------

    async def cycle(self, *, poll: bool = True) -> CycleReport:
        """One cycle of the edge's controller (taking a plan that arrived), then its telemetry, alarms
        and acks queued for the central. ``poll=False``: only take what arrived, without polling
        unless the fleet state is older than a poll interval."""
        self.wake.clear()
        if poll:  # a poll cycle always polls; a plan that arrived is taken right after it
            report = await self.ctl.cycle()
            if self.planner.pending:
                await self.ctl.cycle(dispatch=True)
        else:
            report = await self.ctl.cycle(dispatch=True)  # the state is fresh: takes what arrived, no poll
        now = self.ctl.clock.now()
        out: list[tuple[str, bytes]] = []
        if report.poll_s is not None and self.ctl.state is not None:
            tel = self.ctl.state.telemetry
            for sid in self.sites:
                devices = {d: tel[d] for d in self.devices_of[sid] if d in tel}
                msg = m.TelemetryMsg(self.edge_id, sid, self.seqs[sid], report.ts, devices)
                out.append((m.site_topic(sid, "telemetry"), m.encode(msg)))
            used = dict(self.seqs)
            self.seqs = {s: n + 1 for s, n in self.seqs.items()}
        else:
            used = {}
        out += self._alarm_changes(now)
        if out:
            await asyncio.to_thread(self.outbox.add, out, {s: n for s, n in used.items()})
            self._queued.set()
        self._ack(now)
        return report

    def _alarm_changes(self, now: float) -> list[tuple[str, bytes]]:
        """Alarms of the edge's controller raised or cleared since the last cycle, one message each."""
        active = {a["source"]: a for a in self.ctl.store.alarms(active_only=True)}
        out = []
        for source in set(active) | {s for s, on in self._sent_alarms.items() if on}:
            on = source in active
            if self._sent_alarms.get(source) == on:
                continue
            self._sent_alarms[source] = on
            a = active.get(source, {})
            site = self._alarm_site(source)
            msg = m.AlarmMsg(
                self.edge_id, site, now, source, on, str(a.get("severity", "warning")), str(a.get("message", ""))
            )
            out.append((m.site_topic(site, "alarm"), m.encode(msg)))
        return out

    def _alarm_site(self, source: str) -> str:
        _, _, ident = source.partition(":")
        return self.site_of_device.get(ident, ident if ident in self.devices_of else self.sites[0])

    def _ack(self, now: float) -> None:
        """Tell the central, per site, what the edge follows once that changed (plan, commands, writes).
        Each ack is published by a task of its own: the cycle never waits for the broker's
        acknowledgement (a link lost at that moment would hold the guard and the writer up to the
        client's timeout)."""
        client = self._client
        if client is None:
            return
        changed_writes, self.writer.changed = self.writer.changed, False
        switches = self.ctl.device_control
        for sid in self.sites:
            pid = self.planner.plan_id(sid)
            pid = pid if pid is not None and math.isfinite(pid) else None
            cmds = tuple(sorted(c.id for c in self._central_cmds.get(sid, [])))
            control = self._control_sent.get(sid)
            released = tuple(
                d for d in self.devices_of[sid] if d in switches.monitor_only and d not in switches.releasing
            )
            key = (pid, cmds, control, released)
            if key in (self._acked.get(sid), self._acking.get(sid)) and not changed_writes:
                continue
            devices = {
                d: m.DeviceAck(r.action, r.ok, r.mismatch, r.written_w, r.detail)
                for d in self.devices_of[sid]
                if (r := self.writer.last.get(d)) is not None
            }
            msg = m.AckMsg(self.edge_id, sid, now, pid, list(cmds), devices, control, list(released))
            self._acking[sid] = key
            task = asyncio.create_task(self._publish_ack(client, sid, key, m.encode(msg)))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)

    async def _publish_ack(self, client: aiomqtt.Client, sid: str, key: _AckKey, payload: bytes) -> None:
        try:
            await client.publish(m.site_topic(sid, "ack"), payload, qos=1)
        except aiomqtt.MqttError:
            return  # the next change acks again; after a reconnect every site is acked again
        finally:
            if self._acking.get(sid) == key:
                del self._acking[sid]
        self._acked[sid] = key

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``dispatch.poll_interval_s`` of the controller's clock, and take a plan or commands
        at once when they arrive (without an extra poll), until ``stop``; the broker link runs alongside."""
        interval = self.ctl.cfg.dispatch.poll_interval_s
        speed = float(getattr(self.ctl.clock, "speed", 1.0))
        await self.start()
        next_poll = self.ctl.clock.now()
        while not stop.is_set():
            now = self.ctl.clock.now()
            if now >= next_poll or self.wake.is_set():
                await self.cycle(poll=now >= next_poll)
                if now >= next_poll:
                    next_poll = max(next_poll + interval, now)
            left = (next_poll - self.ctl.clock.now()) / speed
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())}
            await asyncio.wait(waits, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()

    # -- the broker link ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._link_task is None:
            self._link_task = asyncio.create_task(self._link())

    async def close(self) -> None:
        """Say offline, close the link and the controller's device connections."""
        self._stop.set()
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await asyncio.wait_for(self._publish_state(client, online=False), 2.0)
        for t in [*self._ack_tasks, self._link_task]:
            await stop_task(t)
        await self.ctl.close()
        self.outbox.close()

    def _client_factory(self) -> aiomqtt.Client:
        from sparcs.edge.link import client

        will = aiomqtt.Will(m.state_topic(self.edge_id), m.encode(m.StateMsg(self.edge_id, False)), qos=1, retain=True)
        return client(self.broker, self.credential, will=will)

    def _on_link(self, connected: bool, error: str | None) -> None:
        self.connected = connected
        if not connected:
            self._client = None
        self.link_error = error
        now = self.ctl.clock.now()
        self.ctl.alarms.follow(
            BROKER_ALARM,
            error is not None,
            now,
            f"edge {self.edge_id}: no broker connection: {error}; "
            "the edge follows its stored plan and buffers telemetry",
        )

    async def _link(self) -> None:
        await keep_connected(self._client_factory, self._session, on_state=self._on_link, stop=self._stop)

    async def _publish_state(self, client: aiomqtt.Client, *, online: bool) -> None:
        msg = m.StateMsg(self.edge_id, online, self.ctl.clock.now(), self.sites, m.REVISION)
        await client.publish(m.state_topic(self.edge_id), m.encode(msg), qos=1, retain=True)

    async def _session(self, client: aiomqtt.Client) -> None:
        for sid in self.sites:
            for kind in m.TO_EDGE:
                await client.subscribe(m.site_topic(sid, kind), qos=1)
        await self._publish_state(client, online=True)
        self._client = client
        self._acked.clear()  # tell a central that may have restarted what is followed
        self._acking.clear()
        self._queued.set()
        tasks = [
            asyncio.create_task(self._send(client)),
            asyncio.create_task(self._receive(client)),
            asyncio.create_task(self._heartbeat(client)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            self._client = None

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        speed = float(getattr(self.ctl.clock, "speed", 1.0))
        while True:
            await asyncio.sleep(m.STATE_EVERY_S / speed)
            await self._publish_state(client, online=True)

    async def _send(self, client: aiomqtt.Client) -> None:
        """The outbox, oldest first; a message leaves it once the broker acknowledged it."""
        while True:
            self._queued.clear()  # before the read: a message queued during it sets the event again
            batch = await asyncio.to_thread(self.outbox.oldest, SEND_BATCH)
            if not batch:
                await self._queued.wait()
                continue
            await asyncio.gather(*(client.publish(p.topic, p.payload, qos=1, timeout=SEND_TIMEOUT_S) for p in batch))
            await asyncio.to_thread(self.outbox.done, [p.id for p in batch])

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            try:
                decoded = m.decode(str(msg.topic), bytes(msg.payload), {})
            except m.MessageError as exc:
                log.warning("edge %s: message refused: %s", self.edge_id, exc)
                continue
            self.received += 1
            if isinstance(decoded, m.SitePlanMsg) and decoded.site in self.devices_of:
                if self.planner.receive(decoded):
                    self.wake.set()
            elif isinstance(decoded, m.CommandsMsg) and decoded.site in self.devices_of:
                self._central_cmds[decoded.site] = decoded.commands
                await asyncio.to_thread(self._sync_commands)
                self.wake.set()
            elif isinstance(decoded, m.ControlMsg) and decoded.site in self.devices_of:
                self._follow_control(decoded)
                self.wake.set()

    def _follow_control(self, msg: m.ControlMsg) -> None:
        """Set the site's device switches as the central holds them (stored and audited by the edge's
        :class:`~sparcs.controller.device_control.DeviceControl`, so they hold across a restart); a
        device switched to monitor-only is released by the edge's writer at its next cycle."""
        switches = self.ctl.device_control
        for dev in self.devices_of[msg.site]:
            controlled = dev not in msg.monitor_only
            if controlled == (dev in switches.monitor_only):
                switches.switch(dev, controlled, who="central")
        self._control_sent[msg.site] = msg.sent

    # -- commands -----------------------------------------------------------------------------

    def _stored_commands(self) -> dict[str, list[m.EdgeCommand]]:
        """The central's commands the edge stored before (per site), so a restart keeps them."""
        out: dict[str, list[m.EdgeCommand]] = defaultdict(list)
        for c in self.ctl.store.active_commands(self.ctl.clock.now()):
            cid = c["params"].get("central_id")
            if cid is None:
                continue
            sites = c["params"].get("sites") or self.sites
            for sid in sites:
                if sid in self.devices_of:
                    params = {k: v for k, v in c["params"].items() if k not in ("central_id", "sites")}
                    out[sid].append(m.EdgeCommand(int(cid), c["kind"], c["start_s"], c["expires_s"], params))
        return dict(out)

    def _sync_commands(self) -> None:
        """Make the edge's stored commands those the central holds in force for its sites."""
        now = self.ctl.clock.now()
        wanted: dict[int, tuple[m.EdgeCommand, set[str]]] = {}
        for sid, cmds in self._central_cmds.items():
            for c in cmds:
                wanted.setdefault(c.id, (c, set()))[1].add(sid)
        stored = {
            int(r["params"]["central_id"]): r
            for r in self.ctl.store.active_commands(now)
            if r["params"].get("central_id") is not None
        }
        stale = []
        for cid, row in stored.items():
            want = wanted.get(cid)
            if want is None or sorted(row["params"].get("sites") or []) != sorted(want[1]):
                stale.append(row["id"])
        if stale:
            self.ctl.store.cancel_commands(stale, who="central", at=now, action="cancel", params={"ids": stale})
        for cid, (c, sites) in wanted.items():
            held = stored.get(cid)
            if held is not None and held["id"] not in stale:
                continue
            params = {**c.params, "central_id": cid}
            if c.kind != "pause":
                params["sites"] = sorted(sites)
            self.ctl.store.add_command(
                kind=c.kind,
                who="central",
                created_at=now,
                start_s=c.start_s,
                expires_s=c.expires_s,
                params=params,
                audit_result="ok",
            )
        self.ctl.commands.load(now)
