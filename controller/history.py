"""The history a poll leaves: device telemetry, the fleet summary and the site rows, thinned to
``storage.telemetry_resolution_s`` and pruned after ``storage.retention_days``.

Each device, and the fleet, is recorded at most once per resolution bucket (the first poll in it).
Powers in W with the signs of docs/definitions.md "Signs".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sparcs.config.schema import StorageConfig
from sparcs.controller.state import FleetState
from sparcs.controller.store import Store
from sparcs.drivers.telemetry import Telemetry

PRUNE_EVERY_S = 3600.0
SITE_HISTORY_FIELDS = ("pv_w", "battery_w", "grid_w", "load_w", "export_w", "soc", "flex_up_w", "flex_down_w")
FLEET_BUCKET = "@fleet"


class HistoryRecorder:
    """Writes each poll's history in one store transaction, and prunes once an hour."""

    def __init__(self, store: Store, settings: StorageConfig):
        self.store, self.settings = store, settings
        self._last_bucket: dict[str, int] = {}
        self._last_prune_s = -math.inf

    def record(self, state: FleetState, telemetry: Mapping[str, Telemetry], summary: dict[str, Any]) -> None:
        """Store this poll's rows that open a new bucket (raises the store's error; nothing half-stored)."""
        res = self.settings.telemetry_resolution_s
        rows = []
        for dev_id, t in telemetry.items():
            if self._new_bucket(dev_id, t.read_at, res):
                rows.append(
                    {
                        "ts": t.read_at,
                        "device_id": dev_id,
                        "site_id": t.site_id,
                        "status": t.status,
                        "values": {k: [r.value, r.quality] for k, r in t.values.items()},
                    }
                )
        if self._new_bucket(FLEET_BUCKET, state.ts, res):
            site_rows = [
                {"ts": state.ts, "site_id": sid, **{k: getattr(s, k) for k in SITE_HISTORY_FIELDS}}
                for sid, s in state.sites.items()
            ]
            self.store.add_poll(rows, summary, site_rows)
        else:
            self.store.add_poll(rows)
        if state.ts - self._last_prune_s >= PRUNE_EVERY_S:
            self._last_prune_s = state.ts
            self.store.prune(state.ts, self.settings.retention_days)

    def _new_bucket(self, key: str, ts: float, resolution_s: float) -> bool:
        bucket = int(ts // resolution_s)
        if self._last_bucket.get(key) == bucket:
            return False
        self._last_bucket[key] = bucket
        return True
