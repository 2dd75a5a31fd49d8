"""The SunSpec pool interface: the whole fleet and each group with a ``pool_unit`` served as one
SunSpec device on Modbus TCP, for a direct marketer's or grid operator's energy-management system.

One pymodbus server (config ``pool``: bind address, port, client allow-list, read-only mode) answers
one unit id per pool. Each pool's registers are laid out from pysunspec2's model definitions at
40000: ``'SunS'``, common model 1, 701 (measurements), 120 (nameplate), 123 (immediate controls),
713 (storage capacity), end model. Values are sums over the pool's sites
(:func:`~sparcs.controller.groups.pool_totals`), rebuilt from the fleet state of the last poll on
every read, so a read never lags the fleet state by more than one poll (and, under `sparcs run`, the
snapshot's 0.25 s):

- 701 ``W``: net export at the meters, Σ −grid_w (W, + = injection into the grid, − while the pool
  imports; docs/definitions.md "Signs"); ``TotWhInj`` / ``TotWhAbs``: Σ of the meters' export /
  import counters (Wh); ``St`` ON while a site's meter is read; ``InvSt`` THROTTLED while a pool
  limit is in force;
- 120 ``WRtg``: the pool's rating, Σ of its sites' PV ratings (W, the base of ``WMaxLimPct``);
  ``WHRtg``: Σ battery capacity (Wh); ``MaxChaRte`` / ``MaxDisChaRte``: Σ battery power ratings (W);
- 123 ``WMaxLimPct`` (% of ``WRtg``), ``WMaxLimPct_RvrtTms`` (s), ``WMaxLim_Ena``: the pool limit;
- 713 ``WHRtg``: capacity (Wh); ``WHAvail``: stored energy above the batteries' minimum SoC (Wh, the
  discharge room); ``SoC``: stored / capacity (%); the charge room is ``WHRtg`` × (100 − SoC) %.

The server reads only a :class:`~sparcs.controller.read_model.ControllerView` and sends commands
only through a :class:`~sparcs.controller.command_port.CommandPort`, as the operator API does: under
`sparcs run` it runs in the API process (:mod:`sparcs.controller.api_process`), so a client that
polls it hard, or many clients, cost that process's time, never the control loop's
(docs/architecture.md "The API beside the control loop"); :meth:`PoolServer.of` serves a controller
in this process (tests, tools).

Writing ``WMaxLim_Ena`` = 1 (with ``WMaxLimPct`` and ``WMaxLimPct_RvrtTms`` in the same or an
earlier write) submits a :class:`~sparcs.controller.commands.PoolLimitRequest` through the command
port to :class:`~sparcs.controller.operations.Operations`: stored and audited (``who`` = ``pool:`` and the
client's address), it expires with the revert timer as a device's limit does (0 s = no timer:
the longest command, 31 days); every later write while enabled replaces it (and restarts the
timer). ``WMaxLim_Ena`` = 0 releases it (an audited
cancel). Read-only mode answers every write with exception 1 (illegal function), a write outside
the writable 123 points with 2 (illegal address), a value out of range with 3 (illegal value), a
write the control process does not answer in time with 4 (device failure).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import ipaddress
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import sunspec2.device as sd
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from sparcs.config.schema import FleetConfig, PoolConfig
from sparcs.controller.command_port import CommandPort, ControlUnavailable, LocalCommands
from sparcs.controller.commands import MAX_COMMAND_S, CommandError, PoolLimitRequest
from sparcs.controller.groups import PoolTotals, pool_totals
from sparcs.controller.read_model import ControllerView
from sparcs.controller.state import FleetState
from sparcs.drivers.sunspec_codec import PointDef, encode_point, model_def, raw_value

if TYPE_CHECKING:
    from sparcs.controller.cycle import Controller

log = logging.getLogger("sparcs.pool")

BASE = 40000
MODELS = (1, 701, 120, 123, 713)
SUNS = (0x5375, 0x6E53)
END_MODEL = (0xFFFF, 0x0000)
WRITABLE_123 = ("WMaxLimPct", "WMaxLimPct_WinTms", "WMaxLimPct_RvrtTms", "WMaxLimPct_RmpTms", "WMaxLim_Ena")
"""The points a client may write; the window and ramp times are kept but not acted on."""
PCT_SF = -1  # WMaxLimPct and SoC in 0.1 %
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("pool_client", default="unknown")
"""The address of the client whose request is being handled (the audit's ``who``)."""


@dataclass(frozen=True)
class Layout:
    """Where each model starts (absolute address of its ID register) and the image's length."""

    model_at: dict[int, int]
    length: int


def layout() -> tuple[Layout, list[int]]:
    """The pool image's layout and its initial registers (every point not implemented)."""
    regs = list(SUNS)
    at: dict[int, int] = {}
    for mid in MODELS:
        at[mid] = BASE + len(regs)
        raw = sd.Model(model_id=mid).get_mb()
        regs.extend(struct.unpack(f">{len(raw) // 2}H", raw))
    regs.extend(END_MODEL)
    return Layout(at, len(regs)), regs


def scale_exponent(max_value: float, bits: int = 15) -> int:
    """The smallest SunSpec scale factor ≥ 0 at which ``max_value`` fits a field of ``bits`` value
    bits (15: int16; 16: uint16), its not-implemented value left out."""
    top = (1 << bits) - 2
    return 0 if max_value <= top else math.ceil(math.log10(max_value / top))


def _string(size: int, text: str) -> list[int]:
    data = text.encode("ascii", "replace")[: 2 * size].ljust(2 * size, b"\0")
    return list(struct.unpack(f">{size}H", data))


@dataclass
class PoolImage:
    """One pool's registers; ``group`` None = the whole fleet."""

    unit: int
    group: str | None
    name: str
    serial: str
    lay: Layout
    registers: list[int]
    written: dict[str, int] = field(default_factory=dict)  # 123 controls as last written (raw)

    def point(self, mid: int, name: str) -> tuple[PointDef, int]:
        p = model_def(mid).point(name)
        return p, self.lay.model_at[mid] - BASE + p.offset

    def put(self, mid: int, name: str, raw: int | str | None) -> None:
        """Write a raw value (already scaled) into the image; None leaves the not-implemented value."""
        if raw is None:
            return
        p, i = self.point(mid, name)
        words = _string(p.size, raw) if isinstance(raw, str) else encode_point(p, raw)
        self.registers[i : i + p.size] = words

    def get(self, mid: int, name: str) -> int | float | str | None:
        """A point's raw value (unscaled; None = not implemented)."""
        return raw_value(self.registers, model_def(mid).point(name), self.lay.model_at[mid] - BASE)


def _fit(value: float, sf: int, bits: int = 16, signed: bool = False) -> int:
    """``value`` in units of 10^sf, clamped to the field's implemented range."""
    raw = round(value / 10.0**sf)
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 2
    bottom = -top if signed else 0
    return max(bottom, min(top, raw))


class _Counters:
    """Σ of the meters' energy counters of a pool, never decreasing: a meter not read this poll adds
    its last good value."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], float] = {}

    def total(self, cfg: FleetConfig, state: FleetState | None, site_ids: Sequence[str], key: str) -> float:
        meters = [d.id for s in cfg.sites if s.id in site_ids for d in s.devices if d.kind == "meter"]
        out = 0.0
        for dev in meters:
            t = state.telemetry.get(dev) if state is not None else None
            r = t.values.get(key) if t is not None and t.status == "online" else None
            if r is not None and r.quality == "good" and r.value is not None:
                self.last[(dev, key)] = max(float(r.value), self.last.get((dev, key), 0.0))
            out += self.last.get((dev, key), 0.0)
        return out


class PoolServer:
    """Serves the pools of the controller ``view`` reads (see the module docstring), its writes sent
    through ``commands``; start inside the running event loop."""

    def __init__(self, view: ControllerView, commands: CommandPort, cfg: PoolConfig):
        self.view, self.commands, self.cfg = view, commands, cfg
        self.images: dict[int, PoolImage] = {}
        lay, regs = layout()
        pools: list[tuple[int, str | None, str]] = []
        if cfg.fleet_unit is not None:
            pools.append((cfg.fleet_unit, None, "fleet"))
        pools += [(g.pool_unit, g.id, g.id) for g in view.cfg.groups if g.pool_unit is not None]
        for unit, group, name in pools:
            self.images[unit] = PoolImage(unit, group, name, f"{cfg.serial}-{name}", lay, list(regs))
        self._allowed = [ipaddress.ip_network(a, strict=False) for a in cfg.allow]
        self._counters = _Counters()
        self._server: ModbusTcpServer | None = None
        self.port = 0
        for img in self.images.values():
            self._nameplate(img)

    @classmethod
    def of(cls, ctl: Controller, cfg: PoolConfig) -> PoolServer:
        """The pool interface of a controller in this process."""
        return cls(ControllerView.of(ctl), LocalCommands(ctl), cfg)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen on ``cfg.host:cfg.port`` (0 = a free port); returns the port. OSError when it cannot."""
        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(BASE, count=img.lay.length, datatype=DataType.REGISTERS)],
                action=self._hook(img),
            )
            for unit, img in self.images.items()
        ]
        server = _AllowListServer(devices, address=(self.cfg.host, self.cfg.port))
        server.allowed = self.allowed
        await server.serve_forever(background=True)
        self._server = server
        sockets = getattr(server.transport, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.cfg.port
        log.info("SunSpec pool interface on %s:%d, units %s", self.cfg.host, self.port, sorted(self.images))
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._allowed)

    # -- the image -------------------------------------------------------------------------------

    def _nameplate(self, img: PoolImage) -> None:
        """Model 1 and the static scale factors; the sums that never change (ratings)."""
        t = pool_totals(self.view.cfg, None, self.view.pool_now(img.group).sites)
        img.put(1, "Mn", self.cfg.manufacturer)
        img.put(1, "Md", f"SPARCS pool {img.name}")
        img.put(1, "Vr", "1")
        img.put(1, "SN", img.serial)
        img.put(1, "DA", img.unit)
        w_sf = scale_exponent(t.rating_w + max(t.discharge_w, t.charge_w))  # PV and batteries at full power
        capacity_wh = self._capacity_wh(img)
        wh_sf = scale_exponent(capacity_wh, bits=16)
        img.put(701, "W_SF", w_sf)
        img.put(701, "TotWh_SF", 0)
        img.put(701, "ACType", 3)  # three phase
        img.put(120, "DERTyp", 82 if t.charge_w else 4)
        img.put(120, "WRtg_SF", w_sf)
        img.put(120, "WRtg", _fit(t.rating_w, w_sf))
        img.put(120, "WHRtg_SF", wh_sf)
        img.put(120, "WHRtg", _fit(capacity_wh, wh_sf))
        img.put(120, "MaxChaRte_SF", w_sf)
        img.put(120, "MaxChaRte", _fit(t.charge_w, w_sf))
        img.put(120, "MaxDisChaRte_SF", w_sf)
        img.put(120, "MaxDisChaRte", _fit(t.discharge_w, w_sf))
        img.put(123, "WMaxLimPct_SF", PCT_SF)
        img.put(123, "Conn", 1)
        img.put(713, "WH_SF", wh_sf)
        img.put(713, "Pct_SF", PCT_SF)
        img.put(713, "WHRtg", _fit(capacity_wh, wh_sf))

    def _capacity_wh(self, img: PoolImage) -> float:
        sites = set(self.view.pool_now(img.group).sites)
        return float(sum(s.battery.capacity_kwh * 1000.0 for s in self.view.cfg.sites if s.id in sites and s.battery))

    def refresh(self, img: PoolImage) -> PoolTotals:
        """The pool's measurements and controls from the last poll and the commands in force."""
        cfg, pool = self.view.cfg, self.view.pool_now(img.group)
        sites, limit = pool.sites, pool.limit
        t = pool_totals(cfg, pool.state, sites)
        w_sf = int(img.get(701, "W_SF") or 0)
        wh_sf = int(img.get(713, "WH_SF") or 0)
        img.put(701, "W", _fit(t.net_export_w, w_sf, signed=True))
        img.put(701, "St", 1 if t.sites_known else 0)
        img.put(701, "ConnSt", 1 if t.sites_known else 0)
        img.put(701, "InvSt", (4 if limit is not None else 3) if t.sites_known else 0)
        img.put(701, "TotWhInj", int(self._counters.total(cfg, pool.state, sites, "export_wh")))
        img.put(701, "TotWhAbs", int(self._counters.total(cfg, pool.state, sites, "import_wh")))
        if limit is None:
            img.put(123, "WMaxLim_Ena", 0)
            img.put(123, "WMaxLimPct", img.written.get("WMaxLimPct", 1000))
            img.put(123, "WMaxLimPct_RvrtTms", img.written.get("WMaxLimPct_RvrtTms", 0))
        else:
            img.put(123, "WMaxLim_Ena", 1)
            img.put(123, "WMaxLimPct", _fit(limit.params["limit_pct"], PCT_SF))
            # the timer the limit was given (as written, or as the API's expiry gave it)
            timer_s = 0 if limit.expires_s is None else max(0, round(limit.expires_s - limit.created_at))
            img.put(123, "WMaxLimPct_RvrtTms", timer_s if timer_s <= 65_534 else 0)
        for name in ("WMaxLimPct_WinTms", "WMaxLimPct_RmpTms"):
            img.put(123, name, img.written.get(name, 0))
        img.put(713, "WHAvail", _fit(t.available_wh, wh_sf))
        img.put(713, "SoC", _fit(100.0 * t.soc, PCT_SF) if t.soc is not None else None)
        img.put(713, "Sta", 0)
        return t

    # -- requests ------------------------------------------------------------------------------

    def _hook(self, img: PoolImage):
        async def on_access(
            fc: int,
            start_addr: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if set_values is None:
                self.refresh(img)
                registers[: len(img.registers)] = img.registers
                return None
            result = await self.write(img, address, [int(v) for v in set_values])
            registers[: len(img.registers)] = img.registers
            if result is None:  # pymodbus stores set_values after the hook: keep the image's values
                first = address - start_addr
                cast("list[int]", set_values)[:] = registers[first : first + len(set_values)]
            return result

        return on_access

    async def write(self, img: PoolImage, address: int, values: list[int]) -> ExcCodes | None:
        """Apply a write of ``values`` at ``address`` to the pool's controls (see the module docstring)."""
        if self.cfg.read_only:
            return ExcCodes.ILLEGAL_FUNCTION
        targets: dict[str, int] = {}
        m123 = img.lay.model_at[123]
        for k, v in enumerate(values):
            a = address + k
            name = next((n for n in WRITABLE_123 if m123 + model_def(123).point(n).offset == a), None)
            if name is None:
                return ExcCodes.ILLEGAL_ADDRESS
            targets[name] = v
        pct_raw = targets.get("WMaxLimPct", img.written.get("WMaxLimPct", 1000))
        rvrt = targets.get("WMaxLimPct_RvrtTms", img.written.get("WMaxLimPct_RvrtTms", 0))
        ena = targets.get("WMaxLim_Ena")
        pct = pct_raw * 10.0**PCT_SF
        if not 0 <= pct <= 100 or (ena is not None and ena not in (0, 1)) or rvrt == 0xFFFF:
            return ExcCodes.ILLEGAL_VALUE
        img.written.update({k: v for k, v in targets.items() if k != "WMaxLim_Ena"})
        now = self.view.now()
        in_force = self.view.pool_now(img.group).limit
        enabled = ena == 1 or (ena is None and in_force is not None)
        who = f"pool:{CLIENT.get()}"
        hold_s = rvrt if rvrt > 0 else MAX_COMMAND_S - 60.0
        expires = dt.datetime.fromtimestamp(now + hold_s, dt.UTC)
        try:
            if enabled:
                await self.commands.submit(PoolLimitRequest(group=img.group, limit_pct=pct, expires_at=expires), who)
            elif ena == 0 and in_force is not None:
                await self.commands.cancel(in_force.id, who)  # an audited cancel
        except CommandError as exc:
            log.warning("pool %s: write refused: %s", img.name, exc)
            return ExcCodes.ILLEGAL_VALUE
        except ControlUnavailable as exc:
            log.warning("pool %s: write not done: %s", img.name, exc)
            return ExcCodes.DEVICE_FAILURE
        self.refresh(img)
        return None


class _AllowListHandler(ServerRequestHandler):
    """Closes a connection whose peer is not on the allow-list as soon as it is made; names the peer
    to the requests it handles (:data:`CLIENT`)."""

    peer = "unknown"

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "unknown"
        if not self.server.allowed(self.peer):
            log.warning("pool interface: connection from %s refused (not in pool.allow)", self.peer)
            transport.abort()

    async def handle_request(self) -> None:
        token = CLIENT.set(self.peer)
        try:
            await super().handle_request()
        finally:
            CLIENT.reset(token)


class _AllowListServer(ModbusTcpServer):
    allowed: Any

    def callback_new_connection(self) -> ServerRequestHandler:
        return _AllowListHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)
