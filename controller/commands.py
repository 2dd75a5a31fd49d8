"""Operator commands: curtailment stages K1–K4, §14a dimming, the fleet export schedule, pause/resume.

Requests are pydantic models (the API's bodies); :class:`CommandBook` checks them against the fleet
and the clock, persists them durably with their audit entry before acknowledging, and answers what
is in force at any time:

- stages: per site the most restrictive active stage wins (K1 = 0 %, K2 = 30 %, K3 = 60 %,
  K4 = 100 % of the PV rating); when it expires the next active one applies;
- §14a: a site's battery may charge from the grid with at most ``grid.para14a_limit_w``;
- export schedule: quarter-hourly fleet export values (W ≥ 0 at the meters); a newer schedule
  replaces an older one for the quarter-hours it covers;
- pause: stops the optimizer only; stages, caps and the export guard stay enforced;
- pool limit: the export of a pool (the fleet or a group) at most ``limit_pct`` % of its rating,
  as a per-site export limit (``grid_rules.pool_share_w``) the export guard and the plan hold; a
  newer pool limit for the same pool replaces the older one, as a device's register would;
- relay: the stage (or §14a dimming, or nothing) a control box's contacts show for the fleet or a
  group; in force until the contacts change, when the newer relay command replaces it.

Stages and §14a dimming address all sites, the named ``sites`` or a ``group`` (its sites are
resolved and stored with the command, the legal record of what was ordered).

Times are Unix seconds (UTC) inside; timestamps in requests must carry an offset.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sparcs.config.grid_rules import QUARTER_S, Stage, most_restrictive_stage, pool_share_w, stage_ceiling_w
from sparcs.config.schema import AwareDatetime, FleetConfig
from sparcs.controller.groups import Groups
from sparcs.controller.store import Store

MAX_COMMAND_S = 31 * 86_400.0  # a stage or schedule further out than a month is a typo, not a plan


class CommandError(ValueError):
    """A request that is well-formed but cannot be applied; ``field`` is its path in the request body."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class _Body(BaseModel):
    # NaN and Infinity parse as JSON numbers in Python; a command never means them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StageRequest(_Body):
    """Curtailment stage for all sites (``sites`` and ``group`` omitted), the named ones or a group's,
    from ``start`` until ``expires_at``."""

    stage: Stage = Field(description="K1 = 0 %, K2 = 30 %, K3 = 60 %, K4 = 100 % of the PV rating")
    sites: list[str] | None = Field(default=None, min_length=1, max_length=10_000, description="omit for all sites")
    group: str | None = Field(default=None, max_length=64, description="a group's sites instead of 'sites'")
    start: AwareDatetime | None = Field(default=None, description="default: now")
    expires_at: AwareDatetime


class Para14aRequest(_Body):
    """§14a EnWG dimming: batteries of the named sites, a group's (or all) charge from the grid with at
    most the §14a limit."""

    sites: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    group: str | None = Field(default=None, max_length=64, description="a group's sites instead of 'sites'")
    start: AwareDatetime | None = None
    expires_at: AwareDatetime


class PoolLimitRequest(_Body):
    """Export of a pool (the fleet, or ``group``) at most ``limit_pct`` % of its rating until
    ``expires_at``; each site holds the same share of its own PV rating at its meter."""

    group: str | None = Field(default=None, max_length=64, description="omit for the whole fleet")
    limit_pct: float = Field(ge=0, le=100, description="% of the pool's rating (sum of its sites' PV ratings)")
    expires_at: AwareDatetime


class RelayRequest(_Body):
    """What a control box's contacts show now for the fleet or ``group``: a stage, §14a dimming, or
    neither (no limit). Replaces the previous state of the same ``source``; no expiry."""

    source: str = Field(max_length=64, description="the relay input's id")
    group: str | None = Field(default=None, max_length=64)
    stage: Stage | None = None
    para14a: bool = False


class SchedulePoint(_Body):
    start: AwareDatetime = Field(description="start of a quarter-hour, with offset")
    export_w: float = Field(ge=0, le=1e9, description="fleet export at the meters in W (≥ 0)")


class ScheduleRequest(_Body):
    """Fleet export schedule: one value per quarter-hour, each holding for 15 minutes from its start."""

    points: list[SchedulePoint] = Field(min_length=1, max_length=400)


class PauseRequest(_Body):
    reason: str | None = Field(default=None, max_length=500)


CommandRequest = StageRequest | Para14aRequest | ScheduleRequest | PauseRequest | PoolLimitRequest | RelayRequest


@dataclass(frozen=True)
class Command:
    id: int
    kind: str
    who: str
    created_at: float
    start_s: float
    expires_s: float | None
    params: dict[str, Any]

    def overlaps(self, t0: float, t1: float) -> bool:
        return self.start_s < t1 and (self.expires_s is None or self.expires_s > t0)

    def covers_site(self, site_id: str) -> bool:
        sites = self.params.get("sites")
        return sites is None or site_id in sites

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "who": self.who,
            "created_at": self.created_at,
            "start_s": self.start_s,
            "expires_s": self.expires_s,
            "params": self.params,
        }


def _row_to_command(row: dict[str, Any]) -> Command:
    return Command(
        id=row["id"],
        kind=row["kind"],
        who=row["who"],
        created_at=row["created_at"],
        start_s=row["start_s"],
        expires_s=row["expires_s"],
        params=row["params"],
    )


def _group_of(group: str | None) -> dict[str, str]:
    """The ``group`` entry of a command's params: only for a command addressed to a group."""
    return {} if group is None else {"group": group}


def _ts(t: dt.datetime) -> float:
    return t.timestamp()


class CommandBook:
    """The commands in force, kept in memory and written through to the store before acknowledging."""

    def __init__(self, store: Store, cfg: FleetConfig):
        self.store = store
        self.cfg = cfg
        self.groups = Groups(cfg)
        self._site_ids = {s.id for s in cfg.sites}
        self._rating_w = {s.id: s.pv.rating_w for s in cfg.sites}
        self._commands: list[Command] = []

    def load(self, now_s: float) -> None:
        """Reload the active commands from the store (start-up, and after a restart)."""
        self._commands = [_row_to_command(r) for r in self.store.active_commands(now_s)]

    def active(self, now_s: float) -> list[Command]:
        """Commands not expired at ``now_s``, including ones that start later."""
        return [c for c in self._commands if c.expires_s is None or c.expires_s > now_s]

    # -- what is in force --------------------------------------------------------------------

    def stage(self, site_id: str, t0: float, t1: float | None = None) -> str | None:
        """The most restrictive stage overlapping [t0, t1) for a site (t1 default: t0 + 1 s)."""
        t1 = t0 + 1.0 if t1 is None else t1
        return most_restrictive_stage(
            c.params["stage"]
            for c in self._commands
            if c.kind in ("stage", "relay")
            and c.params.get("stage") is not None
            and c.overlaps(t0, t1)
            and c.covers_site(site_id)
        )

    def stage_ceiling_w(self, site_id: str, t0: float, t1: float | None = None) -> float | None:
        """The stage's ceiling on PV output in W (fraction of the PV rating), or None without a stage."""
        stage = self.stage(site_id, t0, t1)
        return None if stage is None else stage_ceiling_w(stage, self._rating_w[site_id])

    def para14a(self, site_id: str, t0: float, t1: float | None = None) -> bool:
        t1 = t0 + 1.0 if t1 is None else t1
        return any(
            (c.kind == "para14a" or (c.kind == "relay" and c.params.get("para14a")))
            and c.overlaps(t0, t1)
            and c.covers_site(site_id)
            for c in self._commands
        )

    def export_limit_w(self, site_id: str, t0: float, t1: float | None = None) -> float | None:
        """The most restrictive pool limit overlapping [t0, t1) as the site's export limit at its
        meter (W ≥ 0, :func:`~sparcs.config.grid_rules.pool_share_w`), or None without one."""
        t1 = t0 + 1.0 if t1 is None else t1
        limits = [
            pool_share_w(c.params["limit_pct"], self._rating_w[site_id])
            for c in self._commands
            if c.kind == "pool_limit" and c.overlaps(t0, t1) and c.covers_site(site_id)
        ]
        return min(limits) if limits else None

    def pool_limit(self, group: str | None, now_s: float) -> Command | None:
        """The pool limit of the fleet (None) or a group in force at ``now_s``, if any."""
        return next(
            (
                c
                for c in reversed(self._commands)
                if c.kind == "pool_limit" and c.params.get("group") == group and c.overlaps(now_s, now_s + 1.0)
            ),
            None,
        )

    def lapsed_pool_limits(self, now_s: float) -> list[Command]:
        """Pool limits whose revert timer ran out by ``now_s``, each returned once (and forgotten):
        the plan made under them must be made again without them."""
        done = [
            c for c in self._commands if c.kind == "pool_limit" and c.expires_s is not None and c.expires_s <= now_s
        ]
        self._commands = [c for c in self._commands if c not in done]
        return done

    def relay_state(self, source: str) -> Command | None:
        """The relay command of ``source`` in force (it has no expiry), if any."""
        return next((c for c in reversed(self._commands) if c.kind == "relay" and c.params["source"] == source), None)

    def schedule_export_w(self, t: float) -> float | None:
        """The fleet export the operator asked for at ``t`` (W ≥ 0), from the newest covering schedule."""
        for c in sorted(self._commands, key=lambda c: c.id, reverse=True):
            if c.kind != "schedule" or not c.overlaps(t, t + 1.0):
                continue
            for start_s, export_w in c.params["points_s"]:
                if start_s <= t < start_s + QUARTER_S:
                    return float(export_w)
        return None

    def paused(self, now_s: float) -> bool:
        return any(c.kind == "pause" and c.overlaps(now_s, now_s + 1.0) for c in self._commands)

    def period_series(self, site_id: str, starts_s: np.ndarray, ends_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per period: stage ceiling in W (NaN = none) and the §14a flag, for the optimizer."""
        ceiling = np.full(len(starts_s), np.nan)
        dimmed = np.zeros(len(starts_s), dtype=bool)
        for i, (t0, t1) in enumerate(zip(starts_s, ends_s, strict=True)):
            c = self.stage_ceiling_w(site_id, float(t0), float(t1))
            if c is not None:
                ceiling[i] = c
            dimmed[i] = self.para14a(site_id, float(t0), float(t1))
        return ceiling, dimmed

    def schedule_series(self, starts_s: np.ndarray) -> np.ndarray:
        """Fleet export schedule per period in W (NaN where none is set)."""
        out = np.full(len(starts_s), np.nan)
        for i, t in enumerate(starts_s):
            v = self.schedule_export_w(float(t))
            if v is not None:
                out[i] = v
        return out

    # -- accepting commands ------------------------------------------------------------------

    def _window(self, start: dt.datetime | None, expires_at: dt.datetime, now_s: float) -> tuple[float, float]:
        start_s = now_s if start is None else max(now_s, _ts(start))
        exp_s = _ts(expires_at)
        if exp_s <= now_s:
            raise CommandError("expires_at", "is in the past; give a time in the future with its UTC offset")
        if exp_s <= start_s:
            raise CommandError("expires_at", "must be after start")
        if exp_s - now_s > MAX_COMMAND_S:
            raise CommandError("expires_at", "is more than 31 days ahead; send a nearer expiry and renew it")
        return start_s, exp_s

    def _target(self, sites: list[str] | None, group: str | None) -> list[str] | None:
        """The sites a command addresses: the named ones, a group's, or None for all."""
        if group is None:
            return self._check_sites(sites)
        if sites is not None:
            raise CommandError("group", "give 'sites' or 'group', not both")
        if self.groups.get(group) is None:
            raise CommandError("group", f"unknown group '{group}'; GET /api/v1/groups lists the group ids")
        return list(self.groups.sites(group))

    def _check_sites(self, sites: list[str] | None) -> list[str] | None:
        if sites is None:
            return None
        seen: set[str] = set()
        for i, s in enumerate(sites):
            if s not in self._site_ids:
                raise CommandError(f"sites[{i}]", f"unknown site '{s}'; GET /api/v1/sites lists the site ids")
            if s in seen:
                raise CommandError(f"sites[{i}]", f"site '{s}' is listed twice")
            seen.add(s)
        return list(sites)

    def _persist(
        self,
        kind: str,
        who: str,
        now_s: float,
        start_s: float,
        expires_s: float | None,
        params: dict,
        supersedes: list[int] | None = None,
    ) -> Command:
        """Store a command with its audit entry; ``supersedes``: commands it ends in the same transaction."""
        cid = self.store.add_command(
            kind=kind,
            who=who,
            created_at=now_s,
            start_s=start_s,
            expires_s=expires_s,
            params=params,
            audit_result="ok",
            supersedes=supersedes or [],
        )
        cmd = Command(cid, kind, who, now_s, start_s, expires_s, params)
        ended = set(supersedes or [])
        self._commands = [c for c in self._commands if c.id not in ended]
        self._commands.append(cmd)
        return cmd

    def submit(self, req: CommandRequest, who: str, now_s: float) -> Command:
        """Check ``req`` against the fleet and the clock, then store it with its audit entry."""
        if isinstance(req, StageRequest):
            return self.submit_stage(req, who, now_s)
        if isinstance(req, Para14aRequest):
            return self.submit_para14a(req, who, now_s)
        if isinstance(req, ScheduleRequest):
            return self.submit_schedule(req, who, now_s)
        if isinstance(req, PoolLimitRequest):
            return self.submit_pool_limit(req, who, now_s)
        if isinstance(req, RelayRequest):
            return self.submit_relay(req, who, now_s)
        return self.submit_pause(req, who, now_s)

    def submit_stage(self, req: StageRequest, who: str, now_s: float) -> Command:
        sites = self._target(req.sites, req.group)
        start_s, exp_s = self._window(req.start, req.expires_at, now_s)
        params = {"stage": req.stage, "sites": sites, **_group_of(req.group)}
        return self._persist("stage", who, now_s, start_s, exp_s, params)

    def submit_para14a(self, req: Para14aRequest, who: str, now_s: float) -> Command:
        sites = self._target(req.sites, req.group)
        start_s, exp_s = self._window(req.start, req.expires_at, now_s)
        return self._persist("para14a", who, now_s, start_s, exp_s, {"sites": sites, **_group_of(req.group)})

    def submit_pool_limit(self, req: PoolLimitRequest, who: str, now_s: float) -> Command:
        """A pool limit replaces the one in force for the same pool (one audit entry for both)."""
        sites = self._target(None, req.group)
        _, exp_s = self._window(None, req.expires_at, now_s)
        before = self.pool_limit(req.group, now_s)
        params = {"limit_pct": req.limit_pct, "group": req.group, "sites": sites}
        replaced = [before.id] if before is not None else []
        return self._persist("pool_limit", who, now_s, now_s, exp_s, {**params, "supersedes": replaced}, replaced)

    def submit_relay(self, req: RelayRequest, who: str, now_s: float) -> Command:
        """A relay state replaces the previous state of the same source (one audit entry for both)."""
        sites = self._target(None, req.group)
        before = self.relay_state(req.source)
        replaced = [before.id] if before is not None else []
        params = {
            "source": req.source,
            "group": req.group,
            "stage": req.stage,
            "para14a": req.para14a,
            "sites": sites,
            "supersedes": replaced,
        }
        return self._persist("relay", who, now_s, now_s, None, params, replaced)

    def submit_schedule(self, req: ScheduleRequest, who: str, now_s: float) -> Command:
        points: list[tuple[float, float]] = []
        for i, p in enumerate(req.points):
            t = _ts(p.start)
            if not math.isclose(t % QUARTER_S, 0.0, abs_tol=1e-6):
                raise CommandError(f"points[{i}].start", "must be the start of a quarter-hour (minute 0, 15, 30, 45)")
            if points and t <= points[-1][0]:
                raise CommandError(f"points[{i}].start", "must be later than the point before it")
            if t - now_s > MAX_COMMAND_S:
                raise CommandError(f"points[{i}].start", "is more than 31 days ahead")
            points.append((t, p.export_w))
        end_s = points[-1][0] + QUARTER_S
        if end_s <= now_s:
            raise CommandError("points", "every quarter-hour lies in the past; send points for now or later")
        params = {"points_s": [list(p) for p in points]}
        return self._persist("schedule", who, now_s, points[0][0], end_s, params)

    def submit_pause(self, req: PauseRequest, who: str, now_s: float) -> Command:
        return self._persist("pause", who, now_s, now_s, None, {"reason": req.reason})

    def resume(self, who: str, now_s: float) -> list[int]:
        """Cancel every active pause; returns the ids cancelled (empty: was not paused, audited as noop)."""
        return self.cancel([c.id for c in self._commands if c.kind == "pause"], who, now_s, action="resume")

    def cancel(self, ids: list[int], who: str, now_s: float, action: str = "cancel") -> list[int]:
        done = self.store.cancel_commands(ids, who=who, at=now_s, action=action, params={"ids": ids})
        self._commands = [c for c in self._commands if c.id not in done]
        return done

    def find(self, command_id: int) -> Command | None:
        return next((c for c in self._commands if c.id == command_id), None)
