"""Write ``store-0.1.0.db``: a store as the 0.1.0 release (schema version 1, before migrations) leaves it.

Run with the code of that release checked out (commit 8de84cb), from the repository root:
``python -m tests.controller.data.make_release_store``. It drives the real controller over Modbus TCP
against the 3-site simulated fleet on a stepped clock for ten minutes: telemetry, fleet and site
history, two optimal plans, an operator token, a stage command, a cancelled pause, a dispatch-now
and a raised alarm. The migration test (tests/controller/test_migrations.py) upgrades a copy of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sparcs.config.schema import validate_config
from sparcs.controller.auth import create_token, sha256_hex
from sparcs.controller.commands import PauseRequest, StageRequest
from sparcs.controller.store import Store
from sparcs.factory import build_controller
from sparcs.simulators.clock import SimClock
from sparcs.simulators.fleet import FleetHost
from tests.controller.conftest import small_fleet_data

OUT = Path(__file__).with_name("store-0.1.0.db")
START = dt.datetime(2026, 6, 21, 10, 0, tzinfo=dt.UTC).timestamp()
TOKEN = "release-0.1.0-operator-token-for-the-migration-test"  # fixed, so the test can sign in


async def main() -> None:
    data = small_fleet_data(3)
    data["simulation"]["weather"]["cloudiness"] = 0.0
    clock = SimClock(START, stepped=True)
    host = FleetHost(validate_config(data), clock=clock, auto_ports=True)
    await host.start()
    tmp = Path(tempfile.mkdtemp())
    store = Store(data_dir=tmp)
    ctl = build_controller(host.config, store, clock)
    try:
        store.add_token("release-operator", "operator", sha256_hex(TOKEN), clock.now())
        create_token(store, "release-viewer", "viewer", clock.now())
        await ctl.cycle(dispatch=True)
        site = host.config.sites[0].id
        ctl.operations.submit(
            StageRequest.model_validate(
                {
                    "sites": [site],
                    "stage": "K2",
                    "expires_at": dt.datetime.fromtimestamp(START + 86_400, dt.UTC).isoformat(),
                }
            ),
            "release-operator",
        )
        pause = ctl.operations.submit(PauseRequest.model_validate({}), "release-operator")
        ctl.operations.cancel(pause.id, "release-operator")
        ctl.operations.dispatch_now("release-operator")
        for i in range(60):
            await host.step(10)
            await ctl.cycle(dispatch=i == 30)
        store.raise_alarm(at=clock.now(), severity="warning", source="release-test", message="raised by 0.1.0")
    finally:
        await ctl.close()
        store.close()
        await host.stop()
    with sqlite3.connect(tmp / "sparcs.db") as conn:  # one self-contained file: the WAL checkpointed into it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
    shutil.copyfile(tmp / "sparcs.db", OUT)
    shutil.rmtree(tmp)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    asyncio.run(main())
