"""The demo fleet with a store of synthetic site history, for the open-data tests: every site's
samples per minute over a few hours, with curtailment of each cause, and the sums the published
values must equal, computed here from the rows themselves (not through the store's averaging)."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import math
from collections import defaultdict
from dataclasses import dataclass

import yaml

from sparcs.config.schema import CONFIG_DIR, FleetConfig, validate_config
from sparcs.controller.store import Store
from tests.controller.conftest import pg_cluster, store_url  # noqa: F401  (the store on SQLite and PostgreSQL)

DEMO = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
START = dt.datetime(2026, 6, 21, 8, 0, tzinfo=dt.UTC).timestamp()  # 10:00 in Leipzig
HOURS = 3
CAUSES = ("caps", "stages", "negative_prices")
SILENT_SITE = "lej-005"  # no samples in the second quarter-hour: Schleussig (5 sites) has 4 then


def demo_data(**open_data) -> dict:
    data = copy.deepcopy(DEMO)
    data["open_data"] = {**data["open_data"], **open_data}
    return data


def demo_cfg(**open_data) -> FleetConfig:
    return validate_config(demo_data(**open_data))


class FixedClock:
    def __init__(self, t: float):
        self.t = t

    def now(self) -> float:
        return self.t


@dataclass(eq=False)
class History:
    rows: list[dict]

    @functools.cached_property
    def site_quarter_means(self) -> dict[tuple[str, float], dict[str, float]]:
        """(site, quarter start) → mean power per field over that site's samples (W)."""
        acc: dict[tuple[str, float], list[dict]] = defaultdict(list)
        for r in self.rows:
            acc[(r["site_id"], math.floor(r["ts"] / 900) * 900.0)].append(r)
        out = {}
        for key, rows in acc.items():
            n = len(rows)
            m = {
                "pv_w": sum(r["pv_w"] for r in rows) / n,
                "export_w": sum(r["export_w"] for r in rows) / n,
                "battery_abs_w": sum(abs(r["battery_w"]) for r in rows) / n,
                "flex_up_w": sum(r["flex_up_w"] for r in rows) / n,
                "flex_down_w": sum(r["flex_down_w"] for r in rows) / n,
            }
            for c in CAUSES:
                m[c] = sum(r["curtailed_w"] for r in rows if r["curtail_cause"] == c) / n
            out[key] = m
        return out

    def expected(self, sites: frozenset[str], quarter: float) -> dict[str, float | None] | None:
        """The values an area of ``sites`` must publish for ``quarter`` (None: fewer than k = 5 sites)."""
        means = self.site_quarter_means
        mine = [means[(s, quarter)] for s in sites if (s, quarter) in means]
        if len(mine) < 5:
            return None
        wh = lambda key: sum(m[key] for m in mine) * 0.25  # noqa: E731
        pv, fed = wh("pv_w"), wh("export_w")
        return {
            "pv_energy_wh": pv,
            "feed_in_energy_wh": fed,
            "curtailed_caps_wh": wh("caps"),
            "curtailed_stages_wh": wh("stages"),
            "curtailed_negative_prices_wh": wh("negative_prices"),
            "battery_throughput_wh": wh("battery_abs_w"),
            "self_consumption_share": min(1.0, max(0.0, 1 - fed / pv)) if pv > 0 else None,
            "flex_up_w": sum(m["flex_up_w"] for m in mine),
            "flex_down_w": sum(m["flex_down_w"] for m in mine),
        }


def fill(store: Store, cfg: FleetConfig, start: float = START, hours: int = HOURS) -> History:
    """One sample per site and minute (a little jitter in time), deterministic values."""
    rows = []
    for minute in range(hours * 60):
        for k, site in enumerate(cfg.sites):
            ts = start + minute * 60 + (k % 7) * 3.0
            if site.id == SILENT_SITE and 900 <= ts - start < 1800:
                continue
            pv = 500.0 + 37.0 * k + 11.0 * (minute % 13)
            grid = -0.4 * pv + 80.0 * ((minute + k) % 5)
            cause = CAUSES[(minute + k) % 4] if (minute + k) % 4 < 3 else None
            rows.append(
                {
                    "ts": ts,
                    "site_id": site.id,
                    "pv_w": pv,
                    "battery_w": (-1.0) ** minute * 150.0 * (k % 3),
                    "grid_w": grid,
                    "load_w": grid + pv,
                    "export_w": max(0.0, -grid),
                    "soc": 0.5,
                    "flex_up_w": 100.0 + k,
                    "flex_down_w": 200.0 + 2 * k,
                    "curtailed_w": None if cause is None else 10.0 + k % 9,
                    "curtail_cause": cause,
                }
            )
    for i in range(0, len(rows), 5000):
        store.add_poll([], None, rows[i : i + 5000])
    return History([r if r["curtailed_w"] is not None else {**r, "curtailed_w": 0.0} for r in rows])
