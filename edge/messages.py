"""The edge protocol, version 1: topics under ``sparcs/v1/`` and the typed messages on them (docs/edges.md).

Every message is a JSON object with ``"v": 1``; a reader refuses any other version. Per site:

- ``sparcs/v1/<site>/telemetry`` (edge → central, QoS 1): one poll of the site's devices, with the
  site's sequence number ``seq`` (1, 2, … per site, kept across edge restarts) and the edge's poll
  time ``ts``;
- ``sparcs/v1/<site>/plan`` (central → edge, QoS 1, retained): the site's schedule over the coming
  hours, valid until ``valid_until``;
- ``sparcs/v1/<site>/commands`` (central → edge, QoS 1, retained): the operator commands in force
  for the site (stage, §14a, pause) with their expiry;
- ``sparcs/v1/<site>/control`` (central → edge, QoS 1, retained; revision 2): the site's devices
  an operator switched to monitor-only (docs/operations.md "Control switch");
- ``sparcs/v1/<site>/ack`` (edge → central, QoS 1): the plan, commands and control switches the
  edge follows, the setpoints in force on its devices and the monitor-only devices it released;
- ``sparcs/v1/<site>/alarm`` (edge → central, QoS 1): an edge alarm raised or cleared.

Per edge: ``sparcs/v1/@edge/<edge>/state`` (edge → central, QoS 1, retained; the MQTT 5 will
message says offline). ``@`` is not allowed in site ids, so the two never collide.

Powers in W with the signs of docs/definitions.md "Signs"; times Unix s (UTC); ``None`` (JSON
null) in a schedule releases the control to the installer configuration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sparcs.drivers.telemetry import KEYS_BY_KIND, MISSING, Reading, Telemetry

VERSION = 1
REVISION = 2
"""Additions within version 1 that a reader of revision 1 ignores: revision 2 adds the ``control``
topic, the ack's ``ctl`` and ``rel`` and the state's ``r`` (the revision the edge speaks; absent: 1)."""
ROOT = f"sparcs/v{VERSION}"
EDGE_ROOT = f"{ROOT}/@edge"
SiteTopic = Literal["telemetry", "plan", "commands", "control", "ack", "alarm"]
FROM_EDGE: tuple[SiteTopic, ...] = ("telemetry", "ack", "alarm")
TO_EDGE: tuple[SiteTopic, ...] = ("plan", "commands", "control")

STATE_EVERY_S = 30.0
_QUALITY = {"good": "g", "missing": "m", "bad": "b"}
_QUALITY_BACK = {v: k for k, v in _QUALITY.items()}


class MessageError(ValueError):
    """A message that is not version 1 of the protocol, or not well-formed; names the topic."""


def site_topic(site_id: str, kind: SiteTopic) -> str:
    return f"{ROOT}/{site_id}/{kind}"


def state_topic(edge_id: str) -> str:
    return f"{EDGE_ROOT}/{edge_id}/state"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """``("site", site_id, kind)`` or ``("edge", edge_id, "state")``; MessageError for any other topic."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == EDGE_ROOT and parts[4] == "state":
        return "edge", parts[3], "state"
    if len(parts) == 4 and "/".join(parts[:2]) == ROOT and parts[3] in FROM_EDGE + TO_EDGE:
        return "site", parts[2], parts[3]
    raise MessageError(f"{topic}: not a topic of protocol v{VERSION}")


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetryMsg:
    """One poll of one site at its edge: the devices' :class:`Telemetry` as the edge's poller made it."""

    edge: str
    site: str
    seq: int
    ts: float
    devices: dict[str, Telemetry]


@dataclass(frozen=True)
class SitePlanMsg:
    """A site's plan: per period from ``start_s``, PV limit (W, None = release), battery power (W,
    + discharge; None = release) and the day-ahead price the plan assumed (EUR/MWh; the negative-
    price rule of the export cap reads it). ``plan_id``: the central's plan (its creation time)."""

    site: str
    plan_id: float
    path: str
    start_s: float
    period_s: list[float]
    valid_until: float
    pv_limit_w: list[float | None]
    battery_w: list[float | None]
    price_eur_per_mwh: list[float | None]
    grid_w: list[float | None] | None = None
    """The grid exchange the plan expects (W, + import), which the edge's battery follows within
    (docs/definitions.md "Following the plan"); optional (None: a central that does not send it)."""
    pv_available_w: list[float | None] | None = None
    """The PV power the plan's forecast expects without a limit (W ≥ 0): a plan limit above it holds
    back nothing, so the battery follows the plan within the net load (docs/definitions.md "Following
    the plan"); optional (None: a central that does not send it)."""


@dataclass(frozen=True)
class EdgeCommand:
    """An operator command in force for one site, as the central's command book holds it
    (``kind``: stage, para14a or pause; ``expires_s`` None: until cancelled)."""

    id: int
    kind: str
    start_s: float
    expires_s: float | None
    params: dict[str, Any]


@dataclass(frozen=True)
class CommandsMsg:
    site: str
    sent: float
    commands: list[EdgeCommand]


@dataclass(frozen=True)
class ControlMsg:
    """The site's devices switched to monitor-only at the central (``sent``: when published, central
    clock, Unix s); every other device of the site is controlled. Revision 2."""

    site: str
    sent: float
    monitor_only: list[str]


@dataclass(frozen=True)
class DeviceAck:
    """The outcome of a device's last write at the edge (:class:`sparcs.drivers.writer.WriteResult`)."""

    action: str
    ok: bool
    mismatch: bool = False
    written_w: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class AckMsg:
    """What an edge follows for a site: the plan (``plan_id``; None: none), the command ids, and its
    devices' setpoints in force. Revision 2: ``control`` the ``sent`` of the control message followed
    (None: none), ``released`` the monitor-only devices whose release to the installer configuration
    was written and read back."""

    edge: str
    site: str
    ts: float
    plan_id: float | None
    commands: list[int]
    devices: dict[str, DeviceAck] = field(default_factory=dict)
    control: float | None = None
    released: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AlarmMsg:
    edge: str
    site: str
    ts: float
    source: str
    active: bool
    severity: str = "warning"
    message: str = ""


@dataclass(frozen=True)
class StateMsg:
    """An edge's online state; ``ts`` its clock when sent (None in the will message). Sent on connect
    and every :data:`STATE_EVERY_S`: the central reads the edge's clock skew from it. ``revision``:
    the protocol revision the edge speaks (:data:`REVISION`)."""

    edge: str
    online: bool
    ts: float | None = None
    sites: list[str] = field(default_factory=list)
    revision: int = 1


Message = TelemetryMsg | SitePlanMsg | CommandsMsg | ControlMsg | AckMsg | AlarmMsg | StateMsg


# -- encoding ----------------------------------------------------------------------------------


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, **obj}, separators=(",", ":"), allow_nan=False).encode()


def encode(msg: Message) -> bytes:
    """The JSON bytes of ``msg`` (compact: telemetry values as ``[value, quality letter]``, missing
    values left out)."""
    if isinstance(msg, TelemetryMsg):
        return _dump(
            {
                "e": msg.edge,
                "seq": msg.seq,
                "ts": msg.ts,
                "d": {dev: _telemetry(t) for dev, t in msg.devices.items()},
            }
        )
    if isinstance(msg, SitePlanMsg):
        return _dump(
            {
                "plan": msg.plan_id,
                "path": msg.path,
                "start_s": msg.start_s,
                "period_s": msg.period_s,
                "valid_until": msg.valid_until,
                "pv_limit_w": [_num(v) for v in msg.pv_limit_w],
                "battery_w": [_num(v) for v in msg.battery_w],
                "price": [_num(v) for v in msg.price_eur_per_mwh],
                **{
                    key: [_num(v) for v in values]
                    for key, values in (("grid_w", msg.grid_w), ("pv_available_w", msg.pv_available_w))
                    if values is not None
                },
            }
        )
    if isinstance(msg, CommandsMsg):
        return _dump(
            {
                "sent": msg.sent,
                "commands": [
                    {"id": c.id, "kind": c.kind, "start_s": c.start_s, "expires_s": c.expires_s, "params": c.params}
                    for c in msg.commands
                ],
            }
        )
    if isinstance(msg, ControlMsg):
        return _dump({"sent": msg.sent, "monitor_only": msg.monitor_only})
    if isinstance(msg, AckMsg):
        return _dump(
            {
                "e": msg.edge,
                "ts": msg.ts,
                "plan": msg.plan_id,
                "commands": msg.commands,
                "w": {
                    dev: {"a": a.action, "ok": a.ok, "mm": a.mismatch, "w": _num(a.written_w), "d": a.detail}
                    for dev, a in msg.devices.items()
                },
                "ctl": msg.control,
                "rel": msg.released,
            }
        )
    if isinstance(msg, AlarmMsg):
        return _dump(
            {
                "e": msg.edge,
                "ts": msg.ts,
                "source": msg.source,
                "active": msg.active,
                "severity": msg.severity,
                "message": msg.message,
            }
        )
    return _dump({"e": msg.edge, "online": msg.online, "ts": msg.ts, "sites": msg.sites, "r": msg.revision})


def _telemetry(t: Telemetry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "s": "o" if t.status == "online" else "s",
        "t": t.read_at,
        "x": {k: [_num(r.value), _QUALITY[r.quality]] for k, r in t.values.items() if r.quality != "missing"},
    }
    if t.last_good_at is not None and t.last_good_at != t.read_at:
        out["g"] = t.last_good_at
    if t.error:
        out["err"] = t.error
    if t.models:
        out["m"] = t.models
    return out


def decode(topic: str, payload: bytes, kinds: Mapping[str, str]) -> Message:
    """The message ``payload`` on ``topic`` holds. ``kinds``: device id → kind of the central's fleet
    (a telemetry message names devices only). MessageError for anything else."""
    where, ident, kind = parse_topic(topic)
    try:
        d = json.loads(payload)
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise MessageError(
                f"{topic}: not protocol version {VERSION} (v={d.get('v') if isinstance(d, dict) else d})"
            )
        if where == "edge":
            return StateMsg(ident, bool(d["online"]), d.get("ts"), list(d.get("sites") or []), int(d.get("r", 1)))
        if kind == "telemetry":
            return TelemetryMsg(
                str(d["e"]),
                ident,
                int(d["seq"]),
                float(d["ts"]),
                {dev: _telemetry_back(dev, ident, kinds[dev], t) for dev, t in d["d"].items()},
            )
        if kind == "plan":
            return SitePlanMsg(
                ident,
                float(d["plan"]),
                str(d["path"]),
                float(d["start_s"]),
                [float(p) for p in d["period_s"]],
                float(d["valid_until"]),
                list(d["pv_limit_w"]),
                list(d["battery_w"]),
                list(d["price"]),
                *(None if d.get(key) is None else list(d[key]) for key in ("grid_w", "pv_available_w")),
            )
        if kind == "commands":
            cmds = [
                EdgeCommand(int(c["id"]), str(c["kind"]), float(c["start_s"]), c["expires_s"], dict(c["params"]))
                for c in d["commands"]
            ]
            return CommandsMsg(ident, float(d["sent"]), cmds)
        if kind == "control":
            return ControlMsg(ident, float(d["sent"]), [str(x) for x in d["monitor_only"]])
        if kind == "ack":
            devices = {
                dev: DeviceAck(str(a["a"]), bool(a["ok"]), bool(a.get("mm")), a.get("w"), str(a.get("d") or ""))
                for dev, a in d.get("w", {}).items()
            }
            ctl = d.get("ctl")
            return AckMsg(
                str(d["e"]),
                ident,
                float(d["ts"]),
                d.get("plan"),
                [int(i) for i in d["commands"]],
                devices,
                None if ctl is None else float(ctl),
                [str(x) for x in d.get("rel") or []],
            )
        return AlarmMsg(
            str(d["e"]),
            ident,
            float(d["ts"]),
            str(d["source"]),
            bool(d["active"]),
            str(d["severity"]),
            str(d["message"]),
        )
    except MessageError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MessageError(f"{topic}: malformed message ({type(exc).__name__}: {exc})") from None


def _telemetry_back(dev: str, site: str, kind: str, t: dict[str, Any]) -> Telemetry:
    values = dict.fromkeys(KEYS_BY_KIND[kind], MISSING)
    for k, (v, q) in t["x"].items():
        values[k] = Reading(None if v is None else float(v), _QUALITY_BACK[q])  # type: ignore[arg-type]
    read_at = float(t["t"])
    online = t["s"] == "o"
    return Telemetry(
        device_id=dev,
        site_id=site,
        kind=kind,
        read_at=read_at,
        status="online" if online else "stale",
        values=values,
        last_good_at=t.get("g", read_at if online and "err" not in t else None),
        error=t.get("err"),
        models=list(t.get("m") or []),
    )
