"""Condition alarms against a real SQLite store: raised once, cleared when the condition ends, and
never forgotten while the store fails."""

from __future__ import annotations

import threading

from sparcs.controller.alarms import Alarms
from sparcs.controller.state import build_state, device_problem
from sparcs.controller.store import Store, alarms
from sparcs.drivers.telemetry import Reading
from sparcs.drivers.writer import WriteResult
from tests.controller.conftest import site_telemetry, tel


def open_sources(store: Store) -> list[str]:
    return sorted(a["source"] for a in store.alarms(active_only=True))


def test_a_write_alarm_clears_once_the_setpoint_is_in_force(tmp_path):
    store = Store(data_dir=tmp_path)
    book = Alarms(store)
    book.writes({"pv-1": WriteResult("pv-1", "failed", False, detail="no reply")}, 10.0)
    book.writes({"pv-1": WriteResult("pv-1", "failed", False, detail="no reply")}, 20.0)
    assert open_sources(store) == ["write:pv-1"] and len(store.alarms()) == 1  # raised once
    book.writes({"pv-1": WriteResult("pv-1", "unchanged", True, detail="in force and read back")}, 30.0)
    assert open_sources(store) == []
    store.close()


def test_an_alarm_change_is_not_forgotten_while_the_store_fails(tmp_path):
    store = Store(data_dir=tmp_path)
    book = Alarms(store)
    alarms.drop(store.engine)  # the store fails: no alarm can be written
    book.writes({"pv-1": WriteResult("pv-1", "failed", False, detail="no reply")}, 10.0)  # does not raise
    assert book.open == set()
    alarms.create(store.engine)  # the store is back: the next poll raises it
    book.writes({"pv-1": WriteResult("pv-1", "failed", False, detail="no reply")}, 20.0)
    assert open_sources(store) == ["write:pv-1"]
    alarms.drop(store.engine)
    book.writes({"pv-1": WriteResult("pv-1", "limit", True)}, 30.0)
    assert book.open == {"write:pv-1"}  # the clear did not reach the store: still open, tried again
    alarms.create(store.engine)
    store.raise_alarm(at=20.0, severity="warning", source="write:pv-1", message="as stored before")
    book.writes({"pv-1": WriteResult("pv-1", "limit", True)}, 40.0)
    assert open_sources(store) == [] and book.open == set()
    store.close()


def test_a_device_whose_required_values_are_bad_takes_its_site_out_of_control_with_an_alarm(small_cfg, tmp_path):
    site = small_cfg.sites[0]
    telemetry = site_telemetry(site)
    meter = next(d for d in site.devices if d.kind == "meter")
    assert build_state(small_cfg, telemetry, 100.0).sites[site.id].controllable
    frozen = tel(meter.id, site.id, "meter", grid_w=Reading(-1500.0, "bad"), import_wh=Reading(5.0, "bad"))
    telemetry[meter.id] = frozen
    assert device_problem(frozen) == "values not usable: grid_w bad"
    assert not build_state(small_cfg, telemetry, 100.0).sites[site.id].controllable
    store = Store(data_dir=tmp_path)
    book = Alarms(store)
    book.devices(telemetry, 100.0)
    assert open_sources(store) == [f"device:{meter.id}"]
    telemetry[meter.id] = tel(meter.id, site.id, "meter", grid_w=-1500.0)
    book.devices(telemetry, 110.0)
    assert open_sources(store) == []
    store.close()


def test_the_alarm_changes_of_one_poll_are_one_transaction_stored_whole_or_not_at_all(small_cfg, tmp_path):
    """Through the store's writer thread a poll's alarm changes go in one transaction (one commit, not
    one per device); while the store fails none of them is stored, what is open in memory stays the
    change made, and once the store is back all of them are stored (issue 20 #5: memory and store agree)."""
    from sqlalchemy import event

    from sparcs.controller.history import StoreWriter

    store = Store(data_dir=tmp_path)
    writer = StoreWriter(store, max_rows=100, retry_s=0.05)
    book = Alarms(store, writer=writer)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    site = small_cfg.sites[0]
    stale = {d.id: tel(d.id, site.id, d.kind, status="stale") for d in site.devices}
    book.devices(stale, 100.0)
    assert writer.flush()
    assert len(commits) == 1 and open_sources(store) == sorted(f"device:{d}" for d in stale)
    alarms.drop(store.engine)  # the store fails: the next poll's clears cannot be written
    book.devices(site_telemetry(site), 110.0)
    assert not writer.flush(0.3)
    assert book.open == set()  # memory holds the change; the writer keeps it and tries again
    # The store back as it was before the clears (the open alarms), in one transaction: the writer,
    # trying again every 0.05 s meanwhile, sees the table either missing or whole, never half of it.
    before = len(commits)
    with store.engine.begin() as conn:
        alarms.create(conn)
        for d in stale:
            conn.execute(
                alarms.insert().values(raised_at=100.0, severity="warning", source=f"device:{d}", message="stale")
            )
    assert writer.flush()
    # the repair, every clear in one transaction, then the store's outage alarm raised and cleared (two more)
    assert len(commits) - before == 4 and open_sources(store) == []
    writer.close()
    store.close()


def test_a_burst_of_alarm_changes_is_split_into_transactions_of_at_most_batch_max(tmp_path):
    from sqlalchemy import event

    from sparcs.controller.alarms import BATCH_MAX
    from sparcs.controller.history import StoreWriter, WriteJob

    store = Store(data_dir=tmp_path)
    writer = StoreWriter(store, max_rows=10 * BATCH_MAX, retry_s=0.05)
    book = Alarms(store, writer=writer)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    gate = threading.Event()
    writer.submit(WriteJob("history", 0.0, 1, lambda st: gate.wait(10)))  # the writer is busy meanwhile
    for i in range(BATCH_MAX + 1):
        book.follow(f"edge:e{i}", True, 1.0, "offline")
    gate.set()
    assert writer.flush()
    assert len(commits) == 2 and len(store.alarms(active_only=True, limit=10 * BATCH_MAX)) == BATCH_MAX + 1
    writer.close()
    store.close()
