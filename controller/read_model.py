"""The read model of one running controller: everything the operator API reads, in the API's JSON form.

:class:`ControllerView` is the only reader of the :class:`~sparcs.controller.cycle.Controller`'s
attributes outside the control cycle; the API's routes read through it and never touch the
controller. It answers from the controller's memory (fleet state, plan, commands in force, guard
limits, setpoints) and from its store (history, alarms, audit log). Grid rules (installer ceiling,
feed-in cap, export cap and ceiling, *curtailed*) come from :mod:`sparcs.config.grid_rules`; this
module applies them and derives none itself.

Output: powers in W with the signs of docs/definitions.md "Signs" (``grid_w`` > 0 import,
``battery_w`` > 0 discharge, ``export_w`` ≥ 0), SoC fractions 0..1, timestamps ISO 8601 in UTC with
offset (docs/definitions.md "Time"); every value JSON-safe (NaN and infinities are null).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

import numpy as np

from sparcs.config.grid_rules import (
    export_cap_w,
    export_ceiling_w,
    feed_in_cap_w,
    installer_ceiling_w,
    is_curtailing,
)
from sparcs.config.schema import DeviceConfig, SiteConfig
from sparcs.controller.commands import Command, CommandError
from sparcs.controller.cycle import Controller
from sparcs.controller.groups import Group, pool_totals
from sparcs.controller.metrics import Metrics
from sparcs.drivers.device import fail_safe_of

STALE_POLLS = 3
"""Data older than this many poll intervals is stale (and /readyz fails)."""
MAX_HISTORY_POINTS = 20_000
"""The most buckets one history query may return."""
SITE_HISTORY_FIELDS = ["pv_w", "battery_w", "grid_w", "load_w", "export_w", "soc", "flex_up_w", "flex_down_w"]
FLEET_HISTORY_FIELDS = [
    *("pv_w", "battery_w", "load_w", "grid_w", "export_w", "soc", "flex_up_w", "flex_down_w"),
    "online",
]


def iso(ts: float | None) -> str | None:
    """Unix s → ISO 8601 in UTC with offset; None stays None."""
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf → null, numpy → Python, tuples → lists (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        return clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def bucket(rows: list[dict[str, Any]], resolution_s: int, fields: list[str]) -> list[dict[str, Any]]:
    """Mean of each field per bucket of ``resolution_s`` that has samples; None where none had a value."""
    acc: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        b = int(r["ts"] // resolution_s)
        slot = acc[b]  # a bucket with samples but no known value still shows, as null
        for f in fields:
            v = r.get(f)
            if v is not None:
                slot[f].append(float(v))
    out = []
    for b in sorted(acc):
        point: dict[str, Any] = {"ts": iso(b * resolution_s)}
        for f in fields:
            values = acc[b][f]
            point[f] = sum(values) / len(values) if values else None
        out.append(point)
    return out


def command_view(c: Command) -> dict[str, Any]:
    """A command as the API shows it: its record with ISO timestamps."""
    return clean(
        {**c.as_dict(), "created_at": iso(c.created_at), "start": iso(c.start_s), "expires_at": iso(c.expires_s)}
    )


class ControllerView:
    """What the operator API reads of one controller: fleet, sites, devices, caps in force, plan and
    forecast, commands in force, history, alarms, audit log and readiness. Every answer is JSON-safe."""

    def __init__(self, ctl: Controller):
        self._ctl = ctl

    # -- clock, probes, metrics -----------------------------------------------------------------

    def now(self) -> float:
        """The controller's clock (Unix s; a twin or demo may run on a sim clock)."""
        return self._ctl.clock.now()

    @property
    def metrics(self) -> Metrics:
        """The controller's Prometheus metrics (rendered at /metrics; the API counts refused commands)."""
        return self._ctl.metrics

    def readiness_problems(self) -> list[str]:
        """Why the controller is not ready (empty when it is): the store does not answer or does not
        take the history's writes, or the fleet was not polled within :data:`STALE_POLLS` poll intervals."""
        ctl = self._ctl
        problems = []
        try:
            ctl.store.version()
        except Exception as exc:  # any database error means not ready; the probe reports it
            problems.append(f"store: {exc}")
        if not ctl.store_ok:
            problems.append("store: history writes fail (disk full or read-only?); control goes on from memory")
        now = self.now()
        if ctl.last_poll_s is None:
            problems.append("no poll yet")
        elif now - ctl.last_poll_s > STALE_POLLS * ctl.cfg.dispatch.poll_interval_s:
            problems.append(f"last poll {now - ctl.last_poll_s:.0f} s ago")
        return problems

    # -- fleet, sites, devices ------------------------------------------------------------------

    def fleet(self) -> dict[str, Any]:
        """The fleet now: its summary, pause, plan path and fallback, data age, the export schedule now."""
        ctl = self._ctl
        now = self.now()
        summary = ctl.state.summary() if ctl.state else None
        if summary:
            summary["ts"] = iso(summary["ts"])
        return clean(
            {
                "now": summary,
                "paused": ctl.commands.paused(now),
                "last_poll": iso(ctl.last_poll_s),
                "last_dispatch": iso(ctl.last_dispatch_s),
                "plan_path": ctl.plan.path if ctl.plan else None,
                "in_fallback": ctl.plan is not None and not ctl.plan.optimal,
                "data_age_s": None if ctl.last_poll_s is None else now - ctl.last_poll_s,
                "data_stale": ctl.last_poll_s is None
                or now - ctl.last_poll_s > STALE_POLLS * ctl.cfg.dispatch.poll_interval_s,
                "schedule_export_w": ctl.commands.schedule_export_w(now),
            }
        )

    def _site_config(self, site_id: str) -> SiteConfig | None:
        return next((s for s in self._ctl.cfg.sites if s.id == site_id), None)

    def _site(self, site: SiteConfig, now: float) -> dict[str, Any]:
        ctl = self._ctl
        s = ctl.state.sites.get(site.id) if ctl.state else None
        return {
            "id": site.id,
            "name": site.name,
            "kwp": site.pv.kwp,
            "pv_rating_w": site.pv.rating_w,
            "battery_kwh": site.battery.capacity_kwh if site.battery else None,
            "feed_in_cap_w": feed_in_cap_w(site),
            "stage": ctl.commands.stage(site.id, now),
            "para14a": ctl.commands.para14a(site.id, now),
            "guard_limit_w": ctl.guard_w.get(site.id),
            # docs/definitions.md "Grid rules": a PV limit in force below the installer ceiling
            "curtailed": s is not None and is_curtailing(s.pv_limit_w, installer_ceiling_w(site)),
            "now": s.as_dict() if s else None,
            "devices": [d.id for d in site.devices],
        }

    def sites(self) -> list[dict[str, Any]]:
        """Every site now: its ratings, feed-in cap, stage, §14a, guard limit, *curtailed*, measurements."""
        now = self.now()
        return clean([self._site(s, now) for s in self._ctl.cfg.sites])

    def site(self, site_id: str) -> dict[str, Any] | None:
        """One site as in :meth:`sites`, with its devices in full (:meth:`device`); None if unknown."""
        site = self._site_config(site_id)
        if site is None:
            return None
        view = self._site(site, self.now())
        view["devices"] = [self.device(d) for d in view["devices"]]
        return clean(view)

    def device_ids(self) -> list[str]:
        return [d.id for _s, d in self._ctl.cfg.devices()]

    def devices(self) -> list[dict[str, Any]]:
        """Every device: status, values with their quality, the setpoint sent and what it reads back."""
        return [v for v in (self.device(d) for d in self.device_ids()) if v is not None]

    def device(self, dev_id: str) -> dict[str, Any] | None:
        """One device as in :meth:`devices`; None if unknown."""
        ctl = self._ctl
        site, dev = next(((s, d) for s, d in ctl.cfg.devices() if d.id == dev_id), (None, None))
        if dev is None or site is None:
            return None
        t = ctl.state.telemetry.get(dev_id) if ctl.state else None
        sp = ctl.setpoints.get(dev_id)
        values = {k: {"value": r.value, "quality": r.quality} for k, r in t.values.items()} if t else {}
        return clean(
            {
                "id": dev.id,
                "site": site.id,
                "kind": dev.kind,
                # effective control (fleet file AND run-time switch), and the switch itself
                "control": ctl.device_control.controlled(dev.id),
                "control_switch": self._switch(dev),
                "fail_safe": self._fail_safe(dev_id),
                "accept_no_fail_safe": dev.accept_no_fail_safe,
                "status": t.status if t else "unknown",
                "read_at": iso(t.read_at) if t else None,
                "last_seen": iso(t.last_good_at) if t else None,
                "error": t.error if t else None,
                "values": values,
                "setpoint": {"pv_limit_w": sp.pv_limit_w, "battery_w": sp.battery_w} if sp else None,
                "actual": {
                    "pv_w": values.get("pv_w", {}).get("value"),
                    "pv_limit_w": values.get("pv_limit_w", {}).get("value"),
                    "battery_w": values.get("battery_w", {}).get("value"),
                },
            }
        )

    def _switch(self, dev: DeviceConfig) -> dict[str, Any]:
        """The device's control switch (controller/device_control.py), its time as ISO 8601."""
        view = self._ctl.device_control.view(dev)
        at = view["switched_at"]
        return {**view, "switched_at": None if at is None else iso(at)}

    def _fail_safe(self, dev_id: str) -> dict[str, Any] | None:
        """What the device does when the controller stops writing (docs/devices.md "Fail-safes"), as its
        driver declares it: kind (revert_timer, watchdog, none), the watchdog's interval_s, a note."""
        try:
            driver = getattr(self._ctl.poller.state(dev_id), "driver", None)
        except KeyError:
            return None
        if driver is None:
            return None
        fs = fail_safe_of(driver)
        return {"kind": fs.kind, "interval_s": fs.interval_s, "note": fs.note}

    # -- plan, forecast, caps -------------------------------------------------------------------

    def plan(self) -> dict[str, Any] | None:
        """The plan in force without its forecast (served by :meth:`forecast`), or None."""
        if self._ctl.plan is None:
            return None
        p = {k: v for k, v in self._ctl.plan.to_record().items() if k != "forecast"}
        p["start"] = iso(p["start_s"])
        return clean(p)

    def forecast(self) -> dict[str, Any] | None:
        """The forecasts the plan in force was made with (prices, per site PV available and load), and
        per configured site its export ceiling in each planned period (W ≥ 0, at that period's price:
        docs/definitions.md "Grid rules", "Negative prices"); None without a plan."""
        plan = self._ctl.plan
        if plan is None:
            return None
        record = plan.to_record()
        prices: list[float | None] = record["forecast"]["price_eur_per_mwh"]
        ceilings = {s.id: [export_ceiling_w(s, price) for price in prices] for s in self._ctl.cfg.sites}
        return clean(
            {
                "start": iso(record["start_s"]),
                "period_s": record["period_s"],
                **record["forecast"],
                "export_ceiling_w": ceilings,
            }
        )

    def price_now(self, now: float) -> float | None:
        """Day-ahead price (EUR/MWh) of the current period of the plan in force, or None."""
        return self._ctl.price_now(now)

    def caps(self) -> dict[str, Any]:
        """The limits in force now per site (W): feed-in cap, export cap and export ceiling now,
        connection, installer ceiling, stage, §14a, guard; with the price they hold at."""
        ctl = self._ctl
        now = self.now()
        price = self.price_now(now)
        out = []
        for s in ctl.cfg.sites:
            out.append(
                {
                    "site": s.id,
                    "feed_in_cap_w": feed_in_cap_w(s),
                    "export_cap_now_w": export_cap_w(s, price, ctl.commands.export_limit_w(s.id, now)),
                    "pool_limit_w": ctl.commands.export_limit_w(s.id, now),
                    "export_ceiling_now_w": export_ceiling_w(s, price),
                    "connection_limit_w": s.grid.connection_limit_w,
                    "installer_ceiling_w": installer_ceiling_w(s),
                    "negative_price_rule": s.grid.negative_price_rule,
                    "stage": ctl.commands.stage(s.id, now),
                    "stage_ceiling_w": ctl.commands.stage_ceiling_w(s.id, now),
                    "para14a_limit_w": ctl.cfg.grid.para14a_limit_w if ctl.commands.para14a(s.id, now) else None,
                    "guard_limit_w": ctl.guard_w.get(s.id),
                }
            )
        return clean({"ts": iso(now), "paused": ctl.commands.paused(now), "price_eur_per_mwh": price, "sites": out})

    def commands(self) -> list[dict[str, Any]]:
        """Commands in force or waiting to start."""
        return [command_view(c) for c in self._ctl.commands.active(self.now())]

    # -- groups (controller/groups.py, docs/interfaces.md) --------------------------------------

    def groups(self) -> list[dict[str, Any]]:
        """Every group with its totals now, stages and the pool limit in force."""
        return [self._group(g) for g in self._ctl.commands.groups.all()]

    def group(self, group_id: str) -> dict[str, Any] | None:
        g = self._ctl.commands.groups.get(group_id)
        return None if g is None else self._group(g)

    def group_history(
        self, group_id: str, *, start_s: float | None, end_s: float | None, resolution_s: int
    ) -> dict[str, Any] | None:
        """A group's history: per bucket the sum over its sites of each site's mean (W; SoC left
        out), ``sites`` = how many of them had samples in the bucket; None for an unknown group."""
        g = self._ctl.commands.groups.get(group_id)
        if g is None:
            return None
        fields = [f for f in SITE_HISTORY_FIELDS if f != "soc"]
        sums: dict[str, dict[str, Any]] = {}
        out: dict[str, Any] = {}
        for sid in g.sites:
            out = self.history(start_s=start_s, end_s=end_s, resolution_s=resolution_s, site=sid)
            for p in out["points"]:
                acc = sums.setdefault(p["ts"], {"ts": p["ts"], "sites": 0, **dict.fromkeys(fields)})
                acc["sites"] += 1
                for f in fields:
                    if p[f] is not None:
                        acc[f] = (acc[f] or 0.0) + p[f]
        points = [sums[ts] for ts in sorted(sums, key=lambda t: dt.datetime.fromisoformat(t))]
        return {"group": g.id, "start": out["start"], "end": out["end"], "resolution_s": resolution_s, "points": points}

    def _group(self, g: Group) -> dict[str, Any]:
        ctl, now = self._ctl, self.now()
        limit = ctl.commands.pool_limit(g.id, now)
        mine = [c for c in ctl.commands.active(now) if c.params.get("group") == g.id]
        return clean(
            {
                "id": g.id,
                "name": g.name,
                "kind": g.kind,
                "sites": list(g.sites),
                "rating_w": g.rating_w,
                "pool_unit": g.pool_unit,
                "now": pool_totals(ctl.cfg, ctl.state, g.sites).as_dict(),
                "stages": {s: ctl.commands.stage(s, now) for s in g.sites},
                "para14a": {s: ctl.commands.para14a(s, now) for s in g.sites},
                "pool_limit_pct": None if limit is None else limit.params["limit_pct"],
                "pool_limit_expires_at": None if limit is None else iso(limit.expires_s),
                "relay_inputs": [r.id for r in ctl.cfg.relay_inputs if r.group == g.id],
                "commands": [command_view(c) for c in mine],
            }
        )

    # -- the store: history, alarms, audit ------------------------------------------------------

    def history(
        self,
        *,
        start_s: float | None,
        end_s: float | None,
        resolution_s: int,
        site: str | None = None,
        device: str | None = None,
    ) -> dict[str, Any]:
        """Fleet (default), site or device history between ``start_s`` (default: an hour before the
        end) and ``end_s`` (default: now), averaged per ``resolution_s``. Raises
        :class:`~sparcs.controller.commands.CommandError` naming the query field at fault."""
        ctl = self._ctl
        end = self.now() if end_s is None else end_s
        start = end - 3600.0 if start_s is None else start_s
        if start >= end:
            raise CommandError("start", "must be before end")
        if (end - start) / resolution_s > MAX_HISTORY_POINTS:
            raise CommandError("resolution_s", f"gives more than {MAX_HISTORY_POINTS} points; choose a coarser one")
        scope: dict[str, str | bool]
        if device is not None:
            if device not in set(self.device_ids()):
                raise CommandError("device", f"unknown device '{device}'")
            rows = [
                {"ts": r["ts"], **{k: v[0] for k, v in r["values"].items() if v[1] == "good"}}
                for r in ctl.store.device_history(device, start, end)
            ]
            keys = sorted({k for r in rows for k in r if k != "ts"})
            scope = {"device": device}
        elif site is not None:
            if self._site_config(site) is None:
                raise CommandError("site", f"unknown site '{site}'")
            rows = ctl.store.site_history(site, start, end)
            keys = SITE_HISTORY_FIELDS
            scope = {"site": site}
        else:
            rows = ctl.store.fleet_history(start, end)
            keys = FLEET_HISTORY_FIELDS
            scope = {"fleet": True}
        return clean(
            {
                **scope,
                "start": iso(start),
                "end": iso(end),
                "resolution_s": resolution_s,
                "points": bucket(rows, resolution_s, keys),
            }
        )

    def setpoints(
        self, device_id: str, *, start_s: float | None, end_s: float | None, limit: int
    ) -> dict[str, Any] | None:
        """The setpoints written to ``device_id`` in [start, end) (default: the hour before now), oldest
        first, at most ``limit``; None for an unknown device. Raises
        :class:`~sparcs.controller.commands.CommandError` naming the query field at fault."""
        if device_id not in set(self.device_ids()):
            return None
        end = self.now() if end_s is None else end_s
        start = end - 3600.0 if start_s is None else start_s
        if start >= end:
            raise CommandError("start", "must be before end")
        rows = self._ctl.store.setpoint_history(device_id, start, end, limit)
        return clean(
            {
                "device": device_id,
                "start": iso(start),
                "end": iso(end),
                "setpoints": [{**{k: v for k, v in r.items() if k != "id"}, "ts": iso(r["ts"])} for r in rows],
            }
        )

    def alarms(self, *, active_only: bool, limit: int) -> list[dict[str, Any]]:
        """Alarms, newest first (``active_only``: only those not cleared)."""
        rows = self._ctl.store.alarms(active_only=active_only, limit=limit)
        return clean([{**a, "raised_at": iso(a["raised_at"]), "cleared_at": iso(a["cleared_at"])} for a in rows])

    def audit(self, *, limit: int, before_id: int | None) -> list[dict[str, Any]]:
        """Every operator and admin action, newest first (``before_id``: older than that entry)."""
        return clean([{**a, "ts": iso(a["ts"])} for a in self._ctl.store.audit_log(limit, before_id)])
