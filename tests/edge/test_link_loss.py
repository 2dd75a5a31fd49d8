"""The broker stopped mid-run: caps hold at the meters, the stored plan is followed, and afterwards
the central's history holds every poll of every edge site exactly once."""

from __future__ import annotations

import asyncio
import math
import signal
import sqlite3
import threading

import pytest

from sparcs.config.grid_rules import feed_in_cap_w
from sparcs.edge.outbox import Outbox

pytestmark = pytest.mark.slow

OUTAGE_S = 60.0
POLL_S = 10.0


def caps_held(w) -> list[str]:
    """The sites whose meter (ground truth) exports more than their cap + 1 %."""
    out = []
    for site in w.cfg.sites:
        cap = feed_in_cap_w(site)
        if cap is not None and -w.host.site_truth(site.id)["grid_w"] > cap * 1.01 + 1.0:
            out.append(site.id)
    return out


async def test_a_broker_outage_loses_no_poll_duplicates_none_and_never_loosens_a_limit(world):
    w = world
    await w.step(POLL_S)
    await w.step(POLL_S, dispatch=True)
    plan = w.central.plan
    assert plan is not None and plan.path == "optimal"
    await w.until(lambda: all(e.planner.plan_id(s) is not None for e in w.edges.values() for s in e.sites))
    for _ in range(2):
        await w.step(POLL_S)
    followed = {e.edge_id: e.ctl.plan for e in w.edges.values()}

    w.broker.stop()  # really stopped: the edges and the central lose the connection
    await w.until(lambda: not any(e.connected for e in w.edges.values()) and not w.hub.connected, what="link lost")
    for _ in range(int(OUTAGE_S / POLL_S)):
        await w.step(POLL_S)
        assert not caps_held(w), "a cap was exceeded at a meter during the outage"
        now = w.clock.now()
        for e in w.edges.values():
            assert e.ctl.plan is followed[e.edge_id], "the edge keeps the plan it stored"
            for site in e.ctl.cfg.sites:
                planned = plan.setpoint(site.id, now)
                for d in site.devices:
                    limit = w.host.truth(d.id).get("limit_w")
                    if d.kind == "pv_inverter" and planned is not None and planned.pv_limit_w is not None:
                        assert limit is not None and limit <= planned.pv_limit_w + 20.0, d.id
    assert all(len(e.outbox) > 0 for e in w.edges.values()), "the edges buffered their polls"
    assert all("broker" in e.ctl.alarms.open for e in w.edges.values())
    # the central saw the edge sites go stale, as it would directly polled ones
    assert all(t.status == "stale" for t in w.hub.telemetry(w.clock.now()).values())

    w.broker.start()
    await w.until(lambda: all(e.connected for e in w.edges.values()) and w.hub.connected, 30, "reconnect")
    await w.until(lambda: all(len(e.outbox) == 0 for e in w.edges.values()), 30, "outboxes sent")
    await w.step(POLL_S)
    assert not caps_held(w)
    w.hub.flush()
    for e in w.edges.values():
        assert "broker" not in e.ctl.alarms.open
        for sid in e.sites:
            rows = w.central_store.edge_polls(sid, 0, math.inf)
            seqs = [r["seq"] for r in rows]
            polls = e.seqs[sid] - 1
            assert seqs == list(range(1, polls + 1)), (sid, seqs)
            ts = [r["ts"] for r in rows]
            assert ts == sorted(ts) and len(set(ts)) == len(ts)


async def test_a_failing_send_reconnects_the_edge_instead_of_silencing_it(world, monkeypatch):
    """Regression: the outbox failed once in the sender ("cannot start a transaction within a
    transaction", the cycle's add and the sender's removal racing on one SQLite connection); the
    error ended the link task for good while the edge still counted as connected, so its telemetry
    never reached the central again (the twin's edge day hung on it)."""
    w = world
    await w.step(POLL_S)
    edge = w.edges["edge-1"]
    real_oldest, failed = edge.outbox.oldest, []

    def oldest_failing_once(limit):
        if not failed:
            failed.append(True)
            raise sqlite3.OperationalError("cannot start a transaction within a transaction")
        return real_oldest(limit)

    monkeypatch.setattr(edge.outbox, "oldest", oldest_failing_once)
    await w.step(POLL_S, central=False)  # this poll's telemetry fails to leave once
    assert edge.ctl.state is not None
    held = {d: t.read_at for d, t in edge.ctl.state.telemetry.items()}
    await w.until(lambda: bool(failed) and edge.connected and len(edge.outbox) == 0, 30, "the edge back, outbox sent")
    await w.until(
        lambda: all((t := w.hub.latest.get(d)) is not None and t.read_at >= at for d, at in held.items()),
        what="that poll's telemetry at the central",
    )
    assert "broker" not in edge.ctl.alarms.open


def test_the_outbox_takes_adds_and_removals_from_two_threads_at_once(tmp_path):
    box = Outbox(tmp_path / "o.db")
    errors: list[Exception] = []

    def run(work) -> None:
        try:
            for i in range(2000):
                work(i)
        except sqlite3.Error as exc:
            errors.append(exc)

    adder = threading.Thread(target=run, args=(lambda i: box.add([("t", b"x")], {"s": i}),))
    remover = threading.Thread(target=run, args=(lambda i: box.done([p.id for p in box.oldest(5)]),))
    for t in (adder, remover):
        t.start()
    for t in (adder, remover):
        t.join()
    assert errors == []
    box.done([p.id for p in box.oldest(10_000)])
    assert len(box) == 0 and box.next_seqs(["s"]) == {"s": 2000}
    box.close()


async def test_the_edge_cycle_does_not_wait_for_the_broker_to_take_its_acks(world):
    """Regression: the cycle published each changed ack and awaited the broker's PUBACK, so a broker
    that stopped answering held the edge's guard and writer for the client's 30 s timeout."""
    w = world
    await w.step(POLL_S)
    edge = w.edges["edge-1"]
    assert w.broker.proc is not None
    w.broker.proc.send_signal(signal.SIGSTOP)  # the connection stays up; nothing is acknowledged
    try:
        edge.writer.changed = True  # every site acks again
        await asyncio.wait_for(edge.cycle(), timeout=10.0)  # a cycle takes well under a second here
        assert edge._ack_tasks, "the acks are on their way, not awaited"
    finally:
        w.broker.proc.send_signal(signal.SIGCONT)
    await w.until(lambda: not edge._ack_tasks, 30, "acks taken")


async def test_an_edge_closes_promptly_when_the_broker_stopped_answering(world):
    """Regression: closing waited for aiomqtt's clean disconnect, which waits for the broker's answer up
    to the client's 30 s timeout; three links of a test world took ~117 s to close under a loaded suite."""
    w = world
    await w.step(POLL_S)
    assert w.broker.proc is not None
    w.broker.proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.wait_for(w.stop_edge("edge-1"), timeout=15.0)  # 2 s for its offline message, 3 s to close
    finally:
        w.broker.proc.send_signal(signal.SIGCONT)
