"""Reload of the fleet file without a restart (SIGHUP, or POST /api/v1/admin/reload).

The file is validated first, as `sparcs check-config` does (:func:`config_problems`): a file with any
error changes nothing, and every error is reported with its path. A valid file is compared with the
running configuration field by field. A changed field that takes effect while running
(:data:`LIVE_FIELDS`) is set on the running configuration, which every part of the controller holds
(the same objects), so it is in force from the next poll or dispatch; a re-plan is requested. A
changed field that needs a restart (everything else: endpoints, devices or sites added or removed,
the API, storage, the simulation, a site's battery section added or removed) is not applied and
is reported as such, naming its path. docs/operations.md "Reload" lists both.

Every reload is audited (``config-reload``) under who asked: an admin token's name, or
``signal:SIGHUP``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from sparcs.config.schema import ConfigError, FleetConfig, LoggingConfig, load_config
from sparcs.controller.cycle import Controller
from sparcs.controller.heap import settle_heap
from sparcs.drivers.checks import check_devices

log = logging.getLogger("sparcs.reload")

LIVE_FIELDS = frozenset(
    {
        "sites.name",
        "sites.pv.kwp",
        "sites.pv.inverter_w",
        "sites.pv.installer_limit_pct",
        "sites.battery.capacity_kwh",
        "sites.battery.max_charge_w",
        "sites.battery.max_discharge_w",
        "sites.battery.eta_charge",
        "sites.battery.eta_discharge",
        "sites.battery.soc_min",
        "sites.battery.soc_max",
        "sites.battery.soc_initial",
        "sites.load.annual_kwh",
        "sites.grid.connection_limit_w",
        "sites.grid.feed_in_cap_pct",
        "sites.grid.negative_price_rule",
        "sites.devices.control",
        "dispatch.min_replan_interval_s",
        "dispatch.horizon_h",
        "dispatch.solve_timeout_s",
        "dispatch.stale_after_polls",
        "dispatch.max_backoff_s",
        "dispatch.revert_timeout_s",
        "dispatch.min_pv_limit_pct",
        "dispatch.battery_throughput_eur_per_kwh",
        "dispatch.curtailment_penalty_eur_per_kwh",
        "dispatch.schedule_penalty_eur_per_kwh",
        "grid.para14a_limit_w",
        "grid.export_guard",
        "logging.level",
        "logging.format",
    }
)
"""Fields (paths without list indices) that a reload puts in force while running."""

MAX_AUDITED = 100  # paths per list written to the audit entry


@dataclass
class Change:
    """One field that differs between the running configuration and the file."""

    path: str  # e.g. sites[0:lej-001].devices[1:lej-001-bat].control
    owner: BaseModel  # the running model that holds the field
    name: str
    old: Any
    new: Any

    @property
    def rule(self) -> str:
        """The path without list indices, as :data:`LIVE_FIELDS` names it."""
        return re.sub(r"\[[^\]]*\]", "", self.path)

    @property
    def live(self) -> bool:
        return self.rule in LIVE_FIELDS and not isinstance(self.old, BaseModel) and not isinstance(self.new, BaseModel)


@dataclass
class ReloadReport:
    """The outcome of one reload: ``errors`` (the file was refused, nothing changed), ``applied`` (in
    force now) and ``restart_needed`` (changed in the file, not applied until a restart)."""

    source: str
    errors: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "ok": self.ok,
            "errors": self.errors,
            "applied": self.applied,
            "restart_needed": self.restart_needed,
        }


def config_problems(path: Path) -> tuple[FleetConfig | None, list[str]]:
    """The fleet file and every problem `sparcs check-config` reports (:func:`~sparcs.drivers.checks.check_devices`),
    one ``FILE: path: message`` line each."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return None, [f"{exc.source}: {line}" for line in exc.errors]
    problems = [f"{path}: {line}" for line in check_devices(cfg).problems]
    return (None, problems) if problems else (cfg, [])


def _ids(items: list[Any]) -> list[Any] | None:
    ids = [getattr(x, "id", None) for x in items]
    return ids if all(isinstance(x, BaseModel) for x in items) and None not in ids else None


def differences(old: BaseModel, new: BaseModel, path: str = "") -> list[Change]:
    """Every field that differs between two models of one schema. Lists of models with ids (sites,
    devices) are compared item by item when they hold the same ids in the same order; otherwise the
    whole list is one change."""
    out: list[Change] = []
    for name in type(old).model_fields:
        a, b = getattr(old, name), getattr(new, name)
        where = f"{path}.{name}" if path else name
        if isinstance(a, BaseModel) and isinstance(b, BaseModel) and type(a) is type(b):
            out += differences(a, b, where)
        elif isinstance(a, list) and isinstance(b, list) and _ids(a) is not None and _ids(a) == _ids(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                out += differences(x, y, f"{where}[{i}:{x.id}]")
        elif a != b:
            out.append(Change(where, old, name, a, b))
    return out


def _describe(c: Change) -> str:
    if isinstance(c.old, list) or isinstance(c.new, list):
        return f"{c.path}: entries added, removed or reordered; takes effect after a restart"
    if isinstance(c.old, BaseModel) or isinstance(c.new, BaseModel):
        return f"{c.path}: section added, removed or replaced; takes effect after a restart"
    return f"{c.path}: {c.old!r} → {c.new!r} in the file; takes effect after a restart"


class Reloader:
    """Reloads one controller's fleet file; ``on_logging`` applies a changed ``logging`` section."""

    def __init__(
        self,
        ctl: Controller,
        path: Path,
        on_logging: Callable[[LoggingConfig], None] | None = None,
    ):
        self.ctl, self.path, self.on_logging = ctl, Path(path), on_logging

    def reload(self, who: str) -> ReloadReport:
        """Validate the file; if it is valid, apply the fields that take effect while running and
        report those that need a restart. Audited under ``who``; never raises for a bad file."""
        report = ReloadReport(str(self.path))
        cfg, report.errors = config_problems(self.path)
        changes = differences(self.ctl.cfg, cfg) if cfg is not None else []
        for c in changes:
            if c.live:
                report.applied.append(c.path)
            else:
                report.restart_needed.append(_describe(c))
        self._audit(report, who)  # before anything changes: a reload that cannot be audited applies nothing
        self._apply([c for c in changes if c.live])
        self._log(report, who)
        return report

    def reload_on_signal(self) -> None:
        """:meth:`reload` for SIGHUP: its outcome goes to the log; a store that cannot take the
        audit entry is one ERROR line (nothing applied), not a traceback."""
        try:
            self.reload("signal:SIGHUP")
        except SQLAlchemyError as exc:
            log.error("reload not done: its audit entry could not be stored (%s); nothing changed", exc)

    def _apply(self, changes: list[Change]) -> None:
        """Set each value on the running model. The new file as a whole is valid, so the values are
        set without re-validating one at a time (a pair like soc_min/soc_max may move together)."""
        for c in changes:
            c.owner.__dict__[c.name] = c.new
            if c.rule == "sites.devices.control" and c.old and not c.new:
                device_id = getattr(c.owner, "id", "")
                self.ctl.device_control.config_turned_off(device_id)
        if any(c.rule.startswith("logging.") for c in changes) and self.on_logging is not None:
            self.on_logging(self.ctl.cfg.logging)
        if any(not c.rule.startswith("logging.") for c in changes):
            self.ctl.request_dispatch()  # plan with the new parameters
        if changes:
            settle_heap()  # the replaced values were frozen with the fleet (sparcs.controller.heap)

    def _audit(self, report: ReloadReport, who: str) -> None:
        params = {
            "file": report.source,
            "applied": report.applied[:MAX_AUDITED],
            "restart_needed": report.restart_needed[:MAX_AUDITED],
            "errors": report.errors[:MAX_AUDITED],
        }
        result = "ok" if report.ok else f"refused: {len(report.errors)} error(s); the running configuration stays"
        self.ctl.store.audit_event(
            ts=self.ctl.clock.now(), who=who, action="config-reload", params=params, result=result
        )

    def _log(self, report: ReloadReport, who: str) -> None:
        for line in report.errors:
            log.error("reload refused: %s", line)
        for line in report.restart_needed:
            log.warning("reload: %s", line)
        if report.ok:
            log.warning(
                "configuration reloaded by %s: %d field(s) applied, %d need a restart",
                who,
                len(report.applied),
                len(report.restart_needed),
            )
