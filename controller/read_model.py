"""The read model of one running controller: everything the operator API reads, in the API's JSON form.

:class:`ControllerView` answers from a :class:`ControlSnapshot` of the controller's memory (fleet
state, plan, commands in force, guard limits, setpoints; :func:`take_snapshot` is the only reader
of the :class:`~sparcs.controller.cycle.Controller`'s attributes outside the control cycle) and
from the store (history, alarms, audit log). Where the snapshot comes from is its
:class:`ControlSource`: in-process (:class:`LiveControl`, tests and tools) one is taken per request;
under `sparcs run` the API runs in a process of its own and reads the snapshot the control
process publishes after every poll, dispatch and command (:mod:`sparcs.controller.api_process`,
docs/architecture.md "The API beside the control loop"). The API's routes read through the view
and never touch the controller. Grid rules (installer ceiling,
feed-in cap, export cap and ceiling, *curtailed*) come from :mod:`sparcs.config.grid_rules`; this
module applies them and derives none itself.

Output: powers in W with the signs of docs/definitions.md "Signs" (``grid_w`` > 0 import,
``battery_w`` > 0 discharge, ``export_w`` ≥ 0), SoC fractions 0..1, timestamps ISO 8601 in UTC with
offset (docs/definitions.md "Time"); every value JSON-safe (NaN and infinities are null).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sparcs.config.grid_rules import (
    QUARTER_S,
    export_cap_w,
    export_ceiling_w,
    feed_in_cap_w,
    installer_ceiling_w,
    is_curtailing,
)
from sparcs.config.register_map import FailSafe
from sparcs.config.schema import DeviceConfig, FleetConfig, SiteConfig
from sparcs.controller.commands import Command, CommandBook, CommandError
from sparcs.controller.cycle import Controller
from sparcs.controller.device_control import Switches
from sparcs.controller.groups import Group, pool_totals
from sparcs.controller.plan import Plan
from sparcs.controller.state import FleetState
from sparcs.controller.store import Store
from sparcs.drivers.device import fail_safe_of
from sparcs.drivers.writer import Setpoint
from sparcs.optimizer.forecast_quality import QualityRow

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


def _json(obj: Any) -> bytes:
    """A JSON-safe value (:func:`clean`) as compact UTF-8 JSON."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


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


@dataclass(frozen=True)
class ControlSnapshot:
    """What the read model reads of the control loop, as of ``taken_s`` (the controller's clock, Unix s).

    Every field is a value the cycle replaces rather than changes (a new fleet state per poll, a new
    plan per dispatch, new setpoints per cycle), so a snapshot stays whole while the cycle goes on.
    ``commands``: those in force or waiting to start at ``taken_s``.
    """

    taken_s: float
    state: FleetState | None
    plan: Plan | None
    commands: tuple[Command, ...]
    guard_w: dict[str, float]
    setpoints: dict[str, Setpoint]
    last_poll_s: float | None
    last_dispatch_s: float | None
    store_ok: bool
    store_outage: dict[str, Any] | None = None
    """The store's own alarm while it fails (:attr:`Store.outage <sparcs.controller.store.Store.outage>`:
    held in the control process's memory, since it cannot be stored then)."""
    switches: Switches = field(default_factory=Switches)
    """Every device's run-time control switch (:mod:`sparcs.controller.device_control`), copied."""
    fail_safes: dict[str, FailSafe] = field(default_factory=dict)
    """The fail-safe each device's driver declares, by device id (only devices with a driver)."""
    prices: tuple[tuple[float, float | None], ...] = ()
    """(start, EUR/MWh or None) of the quarter-hour of ``taken_s`` and the next, from the price
    source (:meth:`Controller.price_now <sparcs.controller.cycle.Controller.price_now>`)."""
    forecast_quality: tuple[QualityRow, ...] = ()
    """How the planner's forecasts fared so far, per kind and lead band (docs/forecasts.md "Quality")."""


def take_snapshot(ctl: Controller) -> ControlSnapshot:
    """The controller's memory now, by reference (microseconds; nothing is copied but the guard limits)."""
    now = ctl.clock.now()
    return ControlSnapshot(
        taken_s=now,
        state=ctl.state,
        plan=ctl.plan,
        commands=tuple(ctl.commands.active(now)),
        guard_w=dict(ctl.guard_w),
        setpoints=ctl.setpoints,
        last_poll_s=ctl.last_poll_s,
        last_dispatch_s=ctl.last_dispatch_s,
        store_ok=ctl.store_ok,
        store_outage=None if ctl.store.outage is None else dict(ctl.store.outage),
        switches=ctl.device_control.switches(),
        fail_safes=_fail_safes(ctl),
        prices=tuple((q, ctl.price_now(q)) for q in (now - now % QUARTER_S, now - now % QUARTER_S + QUARTER_S)),
        forecast_quality=tuple(ctl.planner.forecast_quality()),
    )


def _fail_safes(ctl: Controller) -> dict[str, FailSafe]:
    """The fail-safe of every device whose driver the poller holds (docs/devices.md "Fail-safes")."""
    out: dict[str, FailSafe] = {}
    for _site, dev in ctl.cfg.devices():
        try:
            driver = getattr(ctl.poller.state(dev.id), "driver", None)
        except KeyError:
            continue
        if driver is not None:
            out[dev.id] = fail_safe_of(driver)
    return out


@dataclass(frozen=True)
class PoolNow:
    """A pool as :meth:`ControllerView.pool_now` reads it."""

    state: FleetState | None
    sites: tuple[str, ...]
    limit: Command | None


class ControlSource(Protocol):
    """Where a :class:`ControllerView` gets the control loop's state, time, metrics and liveness."""

    def snapshot(self) -> ControlSnapshot: ...
    def now(self) -> float: ...
    def metrics_text(self) -> bytes: ...
    def loop_problems(self) -> list[str]: ...


class LiveControl:
    """A controller in this process: a snapshot per call, its clock, its metrics. The control loop is
    alive whenever this answers, since both share one event loop."""

    def __init__(self, ctl: Controller):
        self._ctl = ctl

    def snapshot(self) -> ControlSnapshot:
        return take_snapshot(self._ctl)

    def now(self) -> float:
        return self._ctl.clock.now()

    def metrics_text(self) -> bytes:
        return self._ctl.metrics.render()

    def loop_problems(self) -> list[str]:
        return []


class ControllerView:
    """What the operator API reads of one controller: fleet, sites, devices, caps in force, plan and
    forecast, commands in force, history, alarms, audit log and readiness. Every answer is JSON-safe.

    ``cfg`` is the controller's fleet file (with the ports it polls), ``store`` one it may read
    (history, alarms, audit; the same database the controller writes), ``source`` the snapshot.
    """

    def __init__(self, cfg: FleetConfig, store: Store, source: ControlSource):
        self.store, self._source = store, source
        self.reconfigure(cfg)

    def reconfigure(self, cfg: FleetConfig) -> None:
        """Read with ``cfg`` from now on: the running configuration after a reload, as the control
        process sends it to the API process (in-process the view holds the controller's own, which a
        reload changes in place)."""
        self.cfg = cfg
        self._sites = {s.id: s for s in cfg.sites}
        self._devices: dict[str, tuple[SiteConfig, DeviceConfig]] = {d.id: (s, d) for s, d in cfg.devices()}
        self._book = CommandBook(self.store, cfg)  # holds the snapshot's commands; never stores any
        self._book_of: tuple[Command, ...] | None = None
        self._rendered: dict[str, tuple[ControlSnapshot, tuple[int, ...], bytes]] = {}
        self._fleet_of: tuple[tuple[object, ...], dict[str, Any]] | None = None

    @classmethod
    def of(cls, ctl: Controller) -> ControllerView:
        """The view of a controller in this process."""
        return cls(ctl.cfg, ctl.store, LiveControl(ctl))

    def _snap(self) -> tuple[ControlSnapshot, CommandBook]:
        snap = self._source.snapshot()
        if snap.commands is not self._book_of:
            self._book.mirror(snap.commands)
            self._book_of = snap.commands
        return snap, self._book

    # -- clock, probes, metrics -----------------------------------------------------------------

    def now(self) -> float:
        """The controller's clock (Unix s; a twin or demo may run on a sim clock)."""
        return self._source.now()

    def metrics_text(self) -> bytes:
        """The controller's Prometheus metrics, rendered (served at /metrics)."""
        return self._source.metrics_text()

    def loop_problems(self) -> list[str]:
        """Why the control loop is not known to be running (empty when it is): /healthz fails on these."""
        return self._source.loop_problems()

    def readiness_problems(self) -> list[str]:
        """Why the controller is not ready (empty when it is): the control loop does not answer, the
        store does not answer or does not take the history's writes, or the fleet was not polled
        within :data:`STALE_POLLS` poll intervals."""
        snap, _ = self._snap()
        problems = self.loop_problems()
        try:
            self.store.version()
        except Exception as exc:  # any database error means not ready; the probe reports it
            problems.append(f"store: {exc}")
        if not snap.store_ok:
            problems.append("store: history writes fail (disk full or read-only?); control goes on from memory")
        now = self.now()
        if snap.last_poll_s is None:
            problems.append("no poll yet")
        elif now - snap.last_poll_s > STALE_POLLS * self.cfg.dispatch.poll_interval_s:
            problems.append(f"last poll {now - snap.last_poll_s:.0f} s ago")
        return problems

    # -- fleet, sites, devices ------------------------------------------------------------------

    def fleet(self) -> dict[str, Any]:
        """The fleet now: its summary, pause, plan path and fallback, data age, the export schedule now.
        What depends on the snapshot alone (the summary over every site) is computed once per fleet
        state, plan and poll and dispatch times."""
        snap, book = self._snap()
        now = self.now()
        basis = (snap.state, snap.plan, snap.last_poll_s, snap.last_dispatch_s)
        held = self._fleet_of
        if held is None or any(a is not b for a, b in zip(held[0], basis, strict=True)):
            held = self._fleet_of = (basis, self._fleet_of_snapshot(snap))
        return {
            **held[1],
            "paused": book.paused(now),
            "data_age_s": None if snap.last_poll_s is None else now - snap.last_poll_s,
            "data_stale": snap.last_poll_s is None
            or now - snap.last_poll_s > STALE_POLLS * self.cfg.dispatch.poll_interval_s,
            "schedule_export_w": clean(book.schedule_export_w(now)),
        }

    @staticmethod
    def _fleet_of_snapshot(snap: ControlSnapshot) -> dict[str, Any]:
        summary = snap.state.summary() if snap.state else None
        if summary:
            summary["ts"] = iso(summary["ts"])
        return clean(
            {
                "now": summary,
                "last_poll": iso(snap.last_poll_s),
                "last_dispatch": iso(snap.last_dispatch_s),
                "plan_path": snap.plan.path if snap.plan else None,
                "in_fallback": snap.plan is not None and not snap.plan.optimal,
            }
        )

    def fleet_json(self) -> bytes:
        """:meth:`fleet` as JSON: no per-request work beyond the few fields that depend on the time."""
        return _json(self.fleet())

    def _site(self, snap: ControlSnapshot, book: CommandBook, site: SiteConfig, now: float) -> dict[str, Any]:
        s = snap.state.sites.get(site.id) if snap.state else None
        return {
            "id": site.id,
            "name": site.name,
            "kwp": site.pv.kwp,
            "pv_rating_w": site.pv.rating_w,
            "battery_kwh": site.battery.capacity_kwh if site.battery else None,
            "feed_in_cap_w": feed_in_cap_w(site),
            "stage": book.stage(site.id, now),
            "para14a": book.para14a(site.id, now),
            "guard_limit_w": snap.guard_w.get(site.id),
            # docs/definitions.md "Grid rules": a PV limit in force below the installer ceiling
            "curtailed": s is not None and is_curtailing(s.pv_limit_w, installer_ceiling_w(site)),
            "now": s.as_dict() if s else None,
            "devices": [d.id for d in site.devices],
        }

    def sites(self) -> list[dict[str, Any]]:
        """Every site now: its ratings, feed-in cap, stage, §14a, guard limit, *curtailed*, measurements."""
        snap, book = self._snap()
        now = self.now()
        return clean([self._site(snap, book, s, now) for s in self.cfg.sites])

    def site(self, site_id: str) -> dict[str, Any] | None:
        """One site as in :meth:`sites`, with its devices in full (:meth:`device`); None if unknown."""
        site = self._sites.get(site_id)
        if site is None:
            return None
        snap, book = self._snap()
        view = self._site(snap, book, site, self.now())
        view["devices"] = [self._device(snap, d) for d in view["devices"]]
        return clean(view)

    def device_ids(self) -> list[str]:
        return list(self._devices)

    def sites_json(self) -> bytes:
        """:meth:`sites` as JSON, rendered once per snapshot and set of commands in force now (what else it
        shows depends on neither), so a burst of requests costs one rendering."""
        snap, _ = self._snap()
        now = self.now()
        in_force = tuple(c.id for c in snap.commands if c.overlaps(now, now + 1.0))
        return self._render("sites", snap, in_force, self.sites)

    def devices_json(self) -> bytes:
        """:meth:`devices` as JSON, rendered once per snapshot (it depends on nothing else)."""
        return self._render("devices", self._snap()[0], (), self.devices)

    def _render(self, what: str, snap: ControlSnapshot, key: tuple[int, ...], make: Callable[[], Any]) -> bytes:
        held = self._rendered.get(what)
        if held is not None and held[0] is snap and held[1] == key:
            return held[2]
        body = _json(make())
        self._rendered[what] = (snap, key, body)
        return body

    def devices(self) -> list[dict[str, Any]]:
        """Every device: status, values with their quality, the setpoint sent and what it reads back."""
        snap, _ = self._snap()
        return clean([self._device(snap, d) for d in self._devices])

    def device(self, dev_id: str) -> dict[str, Any] | None:
        """One device as in :meth:`devices`; None if unknown."""
        if dev_id not in self._devices:
            return None
        snap, _ = self._snap()
        return clean(self._device(snap, dev_id))

    def _device(self, snap: ControlSnapshot, dev_id: str) -> dict[str, Any]:
        site, dev = self._devices[dev_id]
        t = snap.state.telemetry.get(dev_id) if snap.state else None
        sp = snap.setpoints.get(dev_id)
        values = {k: {"value": r.value, "quality": r.quality} for k, r in t.values.items()} if t else {}
        return {
            "id": dev.id,
            "site": site.id,
            "kind": dev.kind,
            # effective control (fleet file AND run-time switch), and the switch itself
            "control": snap.switches.controlled(dev),
            "control_switch": self._switch(snap, dev),
            "fail_safe": self._fail_safe(snap, dev_id),
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

    @staticmethod
    def _switch(snap: ControlSnapshot, dev: DeviceConfig) -> dict[str, Any]:
        """The device's control switch (controller/device_control.py), its time as ISO 8601."""
        view = snap.switches.view(dev)
        at = view["switched_at"]
        return {**view, "switched_at": None if at is None else iso(at)}

    @staticmethod
    def _fail_safe(snap: ControlSnapshot, dev_id: str) -> dict[str, Any] | None:
        """What the device does when the controller stops writing (docs/devices.md "Fail-safes"), as its
        driver declares it: kind (revert_timer, watchdog, none), the watchdog's interval_s, a note;
        None while no driver is known."""
        fs = snap.fail_safes.get(dev_id)
        return None if fs is None else {"kind": fs.kind, "interval_s": fs.interval_s, "note": fs.note}

    # -- plan, forecast, caps -------------------------------------------------------------------

    def plan(self) -> dict[str, Any] | None:
        """The plan in force without its forecast (served by :meth:`forecast`), or None."""
        snap, _ = self._snap()
        if snap.plan is None:
            return None
        p = {k: v for k, v in snap.plan.to_record().items() if k != "forecast"}
        p["start"] = iso(p["start_s"])
        return clean(p)

    def forecast(self) -> dict[str, Any] | None:
        """The forecasts the plan in force was made with (prices, per site PV available and load), and
        per configured site its export ceiling in each planned period (W ≥ 0, at that period's price:
        docs/definitions.md "Grid rules", "Negative prices"); None without a plan."""
        snap, _ = self._snap()
        if snap.plan is None:
            return None
        record = snap.plan.to_record()
        prices: list[float | None] = record["forecast"]["price_eur_per_mwh"]
        ceilings = {s.id: [export_ceiling_w(s, price) for price in prices] for s in self.cfg.sites}
        return clean(
            {
                "start": iso(record["start_s"]),
                "period_s": record["period_s"],
                **record["forecast"],
                "export_ceiling_w": ceilings,
            }
        )

    def forecast_quality(self) -> list[dict[str, Any]]:
        """The planner's forecast quality: per kind (``pv``, ``load``) and lead band, the normalised MAE
        and the skill against persistence and climatology (docs/forecasts.md "Quality"); None where
        nothing has been measured yet."""
        snap, _ = self._snap()
        return [q.as_dict() for q in snap.forecast_quality]

    def price_now(self, now: float) -> float | None:
        """Day-ahead price (EUR/MWh) of the quarter-hour of ``now`` from the prices in force (the
        controller's price source, not the plan's), or None when unknown."""
        return next((p for start, p in self._source.snapshot().prices if start <= now < start + QUARTER_S), None)

    def caps(self) -> dict[str, Any]:
        """The limits in force now per site (W): feed-in cap, export cap and export ceiling now,
        connection, installer ceiling, stage, §14a, guard; with the price they hold at."""
        snap, book = self._snap()
        now = self.now()
        price = self.price_now(now)
        out = []
        for s in self.cfg.sites:
            out.append(
                {
                    "site": s.id,
                    "feed_in_cap_w": feed_in_cap_w(s),
                    "export_cap_now_w": export_cap_w(s, price, book.export_limit_w(s.id, now)),
                    "pool_limit_w": book.export_limit_w(s.id, now),
                    "export_ceiling_now_w": export_ceiling_w(s, price),
                    "connection_limit_w": s.grid.connection_limit_w,
                    "installer_ceiling_w": installer_ceiling_w(s),
                    "negative_price_rule": s.grid.negative_price_rule,
                    "stage": book.stage(s.id, now),
                    "stage_ceiling_w": book.stage_ceiling_w(s.id, now),
                    "para14a_limit_w": self.cfg.grid.para14a_limit_w if book.para14a(s.id, now) else None,
                    "guard_limit_w": snap.guard_w.get(s.id),
                }
            )
        return clean({"ts": iso(now), "paused": book.paused(now), "price_eur_per_mwh": price, "sites": out})

    def commands(self) -> list[dict[str, Any]]:
        """Commands in force or waiting to start."""
        _, book = self._snap()
        return [command_view(c) for c in book.active(self.now())]

    # -- groups (controller/groups.py, docs/interfaces.md) --------------------------------------

    def groups(self) -> list[dict[str, Any]]:
        """Every group with its totals now, stages and the pool limit in force."""
        _, book = self._snap()
        return [self._group(g) for g in book.groups.all()]

    def group(self, group_id: str) -> dict[str, Any] | None:
        _, book = self._snap()
        g = book.groups.get(group_id)
        return None if g is None else self._group(g)

    def group_history(
        self, group_id: str, *, start_s: float | None, end_s: float | None, resolution_s: int
    ) -> dict[str, Any] | None:
        """A group's history: per bucket the sum over its sites of each site's mean (W; SoC left
        out), ``sites`` = how many of them had samples in the bucket; None for an unknown group."""
        g = self._book.groups.get(group_id)  # the groups are the fleet file's, the same in every snapshot
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

    def pool_now(self, group: str | None) -> PoolNow:
        """What the SunSpec pool interface reads of the fleet (None) or a group: the fleet state, the
        pool's sites and its pool limit in force now (:mod:`sparcs.controller.pool_server`)."""
        snap, book = self._snap()
        return PoolNow(snap.state, book.groups.sites(group), book.pool_limit(group, self.now()))

    def _group(self, g: Group) -> dict[str, Any]:
        snap, book = self._snap()
        now = self.now()
        limit = book.pool_limit(g.id, now)
        mine = [c for c in book.active(now) if c.params.get("group") == g.id]
        return clean(
            {
                "id": g.id,
                "name": g.name,
                "kind": g.kind,
                "sites": list(g.sites),
                "rating_w": g.rating_w,
                "pool_unit": g.pool_unit,
                "now": pool_totals(self.cfg, snap.state, g.sites).as_dict(),
                "stages": {s: book.stage(s, now) for s in g.sites},
                "para14a": {s: book.para14a(s, now) for s in g.sites},
                "pool_limit_pct": None if limit is None else limit.params["limit_pct"],
                "pool_limit_expires_at": None if limit is None else iso(limit.expires_s),
                "relay_inputs": [r.id for r in self.cfg.relay_inputs if r.group == g.id],
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
        end = self.now() if end_s is None else end_s
        start = end - 3600.0 if start_s is None else start_s
        if start >= end:
            raise CommandError("start", "must be before end")
        if (end - start) / resolution_s > MAX_HISTORY_POINTS:
            raise CommandError("resolution_s", f"gives more than {MAX_HISTORY_POINTS} points; choose a coarser one")
        scope: dict[str, str | bool]
        if device is not None:
            if device not in self._devices:
                raise CommandError("device", f"unknown device '{device}'")
            rows = [
                {"ts": r["ts"], **{k: v[0] for k, v in r["values"].items() if v[1] == "good"}}
                for r in self.store.device_history(device, start, end)
            ]
            keys = sorted({k for r in rows for k in r if k != "ts"})
            scope = {"device": device}
        elif site is not None:
            if site not in self._sites:
                raise CommandError("site", f"unknown site '{site}'")
            rows = self.store.site_history(site, start, end)
            keys = SITE_HISTORY_FIELDS
            scope = {"site": site}
        else:
            rows = self.store.fleet_history(start, end)
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
        if device_id not in self._devices:
            return None
        end = self.now() if end_s is None else end_s
        start = end - 3600.0 if start_s is None else start_s
        if start >= end:
            raise CommandError("start", "must be before end")
        rows = self.store.setpoint_history(device_id, start, end, limit)
        return clean(
            {
                "device": device_id,
                "start": iso(start),
                "end": iso(end),
                "setpoints": [{**{k: v for k, v in r.items() if k != "id"}, "ts": iso(r["ts"])} for r in rows],
            }
        )

    def alarms(self, *, active_only: bool, limit: int) -> list[dict[str, Any]]:
        """Alarms, newest first (``active_only``: only those not cleared); while the controller's store
        fails, its own alarm first (from the snapshot when this view reads another connection)."""
        rows = self.store.alarms(active_only=active_only, limit=limit)
        outage = self._source.snapshot().store_outage
        if outage is not None and self.store.outage is None:
            rows = [outage, *rows][:limit]
        return clean([{**a, "raised_at": iso(a["raised_at"]), "cleared_at": iso(a["cleared_at"])} for a in rows])

    def audit(self, *, limit: int, before_id: int | None) -> list[dict[str, Any]]:
        """Every operator and admin action, newest first (``before_id``: older than that entry)."""
        return clean([{**a, "ts": iso(a["ts"])} for a in self.store.audit_log(limit, before_id)])
