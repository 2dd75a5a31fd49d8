"""Prometheus metrics of one controller, in its own CollectorRegistry (served at /metrics).

Names follow Prometheus conventions: base units (seconds, watts), ``_total`` for counters. Power
gauges use the signs of docs/definitions.md "Signs" (``grid`` > 0 import, ``battery`` > 0 discharge, ``export`` ≥ 0).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sparcs.config.grid_rules import STAGE_OUTPUT
from sparcs.controller.groups import PoolTotals
from sparcs.optimizer.forecast_quality import QualityRow

QUALITIES = ("good", "missing", "bad")
STATUSES = ("online", "stale")
CONTENT_TYPE = CONTENT_TYPE_LATEST
POLL_BUCKETS_S = (
    *(round(0.05 * i, 2) for i in range(1, 21)),  # 0.05 … 1 s
    *(round(1 + 0.1 * i, 1) for i in range(1, 11)),  # 1.1 … 2 s
    2.25, 2.5, 2.75, 3, 3.5, 4, 4.5, 5, 6, 7.5, 10, 15, 30,
)  # fmt: skip
"""Poll-cycle histogram bounds (s): at most a tenth apart from 0.5 s to 2 s and a sixth from 0.3 s
to 5 s, so that a percentile `sparcs bench load` reads from them (interpolated inside a bucket, as
Prometheus' ``histogram_quantile``) is off by at most that much: with bounds a quarter apart, one
slow poll among thirty read as the top of its bucket."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.poll_seconds = Histogram(
            "sparcs_poll_cycle_duration_seconds",
            "Duration of one poll cycle: read every device, fleet state, export guard, history, then the writes",
            buckets=POLL_BUCKETS_S,
            registry=r,
        )
        self.dispatch_seconds = Histogram(
            "sparcs_dispatch_duration_seconds",
            "Duration of one dispatch (forecast, plan, caps, write)",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.dispatch_total = Counter(
            "sparcs_dispatch_total", "Dispatches by the path that produced the plan", ["path"], registry=r
        )
        self.plan_objective = Gauge("sparcs_plan_objective_eur", "Objective of the plan in force, EUR", registry=r)
        self.values_by_quality = Gauge(
            "sparcs_telemetry_values", "Telemetry values of the last poll by quality", ["quality"], registry=r
        )
        self.devices_by_status = Gauge(
            "sparcs_devices", "Devices by status after the last poll", ["status"], registry=r
        )
        self.modbus_errors = Counter(
            "sparcs_modbus_errors_total", "Modbus errors reported by the poller, by kind", ["kind"], registry=r
        )
        self.fleet_power = Gauge(
            "sparcs_fleet_power_watts",
            "Fleet power now: pv, battery (+discharge), load, grid (+import), export (>= 0)",
            ["quantity"],
            registry=r,
        )
        self.flex = Gauge("sparcs_fleet_flexibility_watts", "Flexibility for the next hour", ["direction"], registry=r)
        self.soc = Gauge("sparcs_fleet_soc_ratio", "Capacity-weighted state of charge, 0..1", registry=r)
        self.stage_sites = Gauge(
            "sparcs_curtailment_stage_sites", "Sites under each curtailment stage now", ["stage"], registry=r
        )
        self.commands = Counter(
            "sparcs_commands_total", "Operator commands by type and result", ["type", "result"], registry=r
        )
        self.guard_actions = Counter(
            "sparcs_export_guard_actions_total", "Sites whose PV limit the export guard tightened", registry=r
        )
        self.writes = Counter(
            "sparcs_setpoint_writes_total",
            "Setpoint writes by outcome (written, unchanged, failed...)",
            ["action"],
            registry=r,
        )
        self.paused = Gauge("sparcs_control_paused", "1 while automatic control is paused", registry=r)
        self.store_errors = Counter(
            "sparcs_store_errors_total", "History store writes that failed, by what was stored", ["what"], registry=r
        )
        self.store_ok = Gauge(
            "sparcs_store_ok", "1 while the history store takes writes, 0 after one failed", registry=r
        )
        self.store_ok.set(1)
        self.group_power = Gauge(
            "sparcs_group_power_watts",
            "Group power now: export (>= 0, sum over its sites), net_export (sum of -grid), pv, battery (+discharge)",
            ["group", "quantity"],
            registry=r,
        )
        self.group_stage_sites = Gauge(
            "sparcs_group_stage_sites",
            "Sites of a group under each curtailment stage now",
            ["group", "stage"],
            registry=r,
        )
        self.group_pool_limit = Gauge(
            "sparcs_group_pool_limit_ratio",
            "Pool limit in force on a group's export as a fraction of its rating (1 = none)",
            ["group"],
            registry=r,
        )
        self.forecast_nmae = Gauge(
            "sparcs_forecast_nmae_ratio",
            "Forecast mean absolute error over the norm (PV: kWp; load: mean load), by kind and lead band",
            ["kind", "lead"],
            registry=r,
        )
        self.forecast_skill = Gauge(
            "sparcs_forecast_skill_ratio",
            "1 - MAE(forecast) / MAE(reference), by kind, lead band and reference (persistence, climatology)",
            ["kind", "lead", "reference"],
            registry=r,
        )

    def observe_poll(
        self,
        *,
        statuses: Mapping[str, int],
        qualities: Mapping[str, int],
        errors: Mapping[str, int],
        fleet: Mapping[str, float | None],
    ) -> None:
        for s in STATUSES:
            self.devices_by_status.labels(s).set(statuses.get(s, 0))
        for q in QUALITIES:
            self.values_by_quality.labels(q).set(qualities.get(q, 0))
        for kind, n in errors.items():
            self.modbus_errors.labels(kind).inc(n)
        for q in ("pv_w", "battery_w", "load_w", "grid_w", "export_w"):
            self.fleet_power.labels(q.removesuffix("_w")).set(fleet.get(q) or 0.0)
        self.flex.labels("up").set(fleet.get("flex_up_w") or 0.0)
        self.flex.labels("down").set(fleet.get("flex_down_w") or 0.0)
        soc = fleet.get("soc")
        if soc is not None:
            self.soc.set(soc)

    def observe_forecast_quality(self, rows: list[QualityRow]) -> None:
        """Normalised MAE and skill per forecast kind and lead band (docs/forecasts.md)."""
        for row in rows:
            band = f"{row.band_h[0]:g}-{row.band_h[1]:g}h"
            if row.nmae is not None:
                self.forecast_nmae.labels(row.kind, band).set(row.nmae)
            for reference, skill in row.skill.items():
                if skill is not None:
                    self.forecast_skill.labels(row.kind, band, reference).set(skill)

    def observe_stages(self, stage_by_site: Mapping[str, str | None]) -> None:
        tally = Tally(v for v in stage_by_site.values() if v is not None)
        for stage in STAGE_OUTPUT:
            self.stage_sites.labels(stage).set(tally.get(stage, 0))

    def observe_group(
        self, group: str, totals: PoolTotals, stage_by_site: Mapping[str, str | None], limit_pct: float | None
    ) -> None:
        """One group's gauges (W with the signs of docs/definitions.md "Signs")."""
        for q, v in (
            ("export", totals.export_w),
            ("net_export", totals.net_export_w),
            ("pv", totals.pv_w),
            ("battery", totals.battery_w),
        ):
            self.group_power.labels(group, q).set(v)
        tally = Tally(v for v in stage_by_site.values() if v is not None)
        for stage in STAGE_OUTPUT:
            self.group_stage_sites.labels(group, stage).set(tally.get(stage, 0))
        self.group_pool_limit.labels(group).set(1.0 if limit_pct is None else limit_pct / 100.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
