"""A child process that writes to a store as fast as it can until it is killed (kill -9 test).

``python -m tests.controller.store_load URL``: each round stores one poll of history (20 telemetry
rows, a fleet row, 5 site rows) and one operator command with its audit entry, then prints
``<command id> <round>`` once both are committed, so the parent knows what was acknowledged.
"""

from __future__ import annotations

import sys

from sparcs.controller.store import Store


def main(url: str) -> None:
    store = Store(url)
    n = 0
    while True:
        n += 1
        ts = float(n)
        tel = [
            {
                "ts": ts,
                "device_id": f"d{i}",
                "site_id": f"s{i % 5}",
                "status": "online",
                "values": {"pv_w": [n, "good"]},
            }
            for i in range(20)
        ]
        sites = [{"ts": ts, "site_id": f"s{i}", "pv_w": float(n)} for i in range(5)]
        store.add_poll(tel, {"ts": ts, "pv_w": float(n), "online": 20, "stale": 0, "total": 20}, sites)
        cid = store.add_command(
            kind="stage", who="load", created_at=ts, start_s=ts, expires_s=None, params={"n": n}, audit_result="ok"
        )
        print(cid, n, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
