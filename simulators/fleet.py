"""The fleet host: one process serving every simulated device of a fleet over Modbus TCP.

Each device gets its own loopback port, except devices of one site that share a port in the
config: they sit behind one gateway port with distinct unit ids. Per port a pymodbus 3.16
``ModbusTcpServer`` (:class:`simulators.modbus_server.SimServer`, its shorter path per request;
SimDevice/SimData API, one SimDevice per unit id, its ``action`` hook bound to a
:class:`simulators.devices.SunSpecSimDevice`, or a :class:`simulators.profile_device.ProfileSimDevice`
for ``protocol: profile``) listens on an internal port, and a :class:`simulators.proxy.FaultProxy`
listens on the public one.

Faults (config ``simulation.faults`` with optional ``start``/``end`` on the sim clock, or
:meth:`FleetHost.inject_fault` at run time; one injected fault replaces the device's others):
value faults (``exception``, ``frozen``, ``sentinel``, ``garbage``) and ``ignore_writes`` (a write
is acknowledged but the registers keep their old values, so a read-back shows the old value and
the physics never see the command) act in the hook, timing
faults (``offline``, ``no_reply``, ``slow``) in the proxy; ``reboot`` resets the device's
controls to the installer configuration once and makes it unavailable (like ``offline``) for
``duration_s`` sim seconds.

The fleet file's ``relay_inputs`` are served too: one simulated I/O module each
(:class:`simulators.io_module.IoModuleSim`, contacts and faults set at run time).

With ``faults="scheduled"`` (the twin: every fault is in the config, none injected at run time) an
endpoint without a timing fault among its devices' faults is served by its pymodbus server on
the public port, without the proxy: still Modbus TCP, one socket hop instead of two; and a SunSpec
device without a value fault publishes only the models a request reaches
(``SunSpecSimDevice.lazy``: a battery's FC 6 echo renders its model 124, not its whole image).

The clock either runs free (real time × ``speed``; a background task advances the physics every
``min(1, max(0.1, 5 / speed))`` wall seconds) or is stepped with :meth:`FleetHost.step`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from pymodbus.constants import ExcCodes
from pymodbus.simulator import SimDevice

from sparcs.config.register_map import PROFILE_DIR, RegisterMap, load_register_map
from sparcs.config.schema import DeviceConfig, DeviceVariant, FaultSpec, FleetConfig, SimulationConfig
from sparcs.simulators.clock import SimClock
from sparcs.simulators.devices import SunSpecSimDevice, make_device
from sparcs.simulators.io_module import IoModuleSim
from sparcs.simulators.modbus_server import SimServer
from sparcs.simulators.profile_device import ProfileSimDevice
from sparcs.simulators.proxy import FORWARD, FaultProxy, FrameAction
from sparcs.simulators.site import MAX_SUBSTEP_S, SiteSim

log = logging.getLogger(__name__)
VALUE_FAULTS = {"exception", "frozen", "sentinel", "garbage", "ignore_writes"}
SimulatedDevice = SunSpecSimDevice | ProfileSimDevice
_EXC_CODES = {int(c) for c in ExcCodes}
GATEWAY_NO_RESPONSE = 11


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit (1,000 devices need thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class EndpointError(OSError):
    """An endpoint could not be bound; the message names the devices, the port and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where a simulated device answers. ``kind``: pv_inverter | battery | meter."""

    id: str
    site: str
    kind: str
    host: str
    port: int
    unit: int


@dataclass
class _Fault:
    spec: FaultSpec
    start_s: float
    end_s: float
    reboot_done: bool = False

    def active(self, now: float) -> bool:
        end = self.end_s
        if self.spec.mode == "reboot":
            end = min(end, self.start_s + self.spec.duration_s)
            if self.spec.duration_s == 0:
                return False
        return self.start_s <= now < end


@dataclass
class _Port:
    """One public endpoint: a device of its own, or a site gateway with several unit ids."""

    host: str
    port: int
    devices: dict[int, SimulatedDevice] = field(default_factory=dict)
    backend: SimServer | None = None
    proxy: FaultProxy | None = None

    @property
    def gateway(self) -> bool:
        return len(self.devices) > 1


class FleetHost:
    """Serves a fleet's simulated devices; see the module docstring for faults and the clock."""

    def __init__(
        self,
        cfg: FleetConfig,
        *,
        clock: SimClock | None = None,
        auto_ports: bool = False,
        profile_dir: Path = PROFILE_DIR,
        faults: Literal["runtime", "scheduled"] = "runtime",
    ) -> None:
        """Build every site and device; raises ProfileError for a profile that is missing or invalid.

        ``faults``: "runtime" puts the fault proxy before every endpoint (faults may be injected later);
        "scheduled" only before those with a timing fault in ``simulation.faults`` (see the module docstring).
        """
        self.config = cfg.model_copy(deep=True)
        self.fault_mode = faults
        self.sim: SimulationConfig = self.config.simulation or SimulationConfig()
        if clock is None:
            start = self.sim.start.timestamp() if self.sim.start is not None else time.time()
            clock = SimClock(start, speed=self.sim.speed)
        self.clock = clock
        self.auto_ports = auto_ports
        now = clock.now()
        variants = self.sim.variants
        der = {dev_id for dev_id, v in variants.items() if v.models == "der"}
        self.sites: dict[str, SiteSim] = {}
        self.devices: dict[str, SimulatedDevice] = {}
        maps: dict[str, RegisterMap] = {}
        self._site_of: dict[str, str] = {}
        self._ports: dict[tuple[str, int], _Port] = {}
        for site in self.config.sites:
            sim_site = self.sites[site.id] = SiteSim.create(site, self.sim, now, der)
            for dev in site.devices:
                device = _make(dev, sim_site, variants.get(dev.id, DeviceVariant()), maps, profile_dir)
                self.devices[dev.id] = device
                self._site_of[dev.id] = site.id
                self._ports.setdefault(dev.endpoint, _Port(dev.host, dev.port)).devices[dev.unit] = device
        self._faults: dict[str, list[_Fault]] = {}
        for spec in self.sim.faults:
            self._faults.setdefault(spec.device, []).append(self._fault(spec, -math.inf))
        if faults == "scheduled":  # no fault comes later: a device without a value fault never shows one
            for dev_id, device in self.devices.items():
                if isinstance(device, SunSpecSimDevice):
                    device.lazy = not any(f.spec.mode in VALUE_FAULTS for f in self._faults.get(dev_id, []))
        self.io_modules = {r.id: IoModuleSim(r) for r in self.config.relay_inputs}
        self._ticker: asyncio.Task | None = None
        self._started = False

    # --- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every endpoint (``auto_ports``: OS-assigned free ports, written into ``config``)."""
        raise_nofile_limit()
        ports: dict[str, int] = {}
        try:
            for port in self._ports.values():
                sim_devices = [
                    SimDevice(
                        id=unit,
                        simdata=d.simdata(),
                        action=self._hook(d),
                    )
                    for unit, d in port.devices.items()
                ]
                public = 0 if self.auto_ports else port.port
                direct = self.fault_mode == "scheduled" and not any(
                    f.spec.mode not in VALUE_FAULTS for d in port.devices.values() for f in self._faults.get(d.id, [])
                )
                try:
                    port.backend = SimServer(sim_devices, address=(port.host, public) if direct else ("127.0.0.1", 0))
                    await port.backend.serve_forever(background=True)
                    server = port.backend.transport
                    assert isinstance(server, asyncio.Server)  # a listening server's transport is its asyncio.Server
                    backend_port = server.sockets[0].getsockname()[1]
                    if not direct:
                        port.proxy = FaultProxy(port.host, public, backend_port, self._action_for(port))
                        await port.proxy.open()
                except OSError as exc:
                    names = ", ".join(d.id for d in port.devices.values())
                    raise EndpointError(
                        f"{names}: cannot listen on {port.host}:{port.port}: {exc.strerror}; "
                        "stop the program using it or change the device's port"
                    ) from None
                for d in port.devices.values():
                    ports[d.id] = backend_port if port.proxy is None else port.proxy.port
            for r in self.config.relay_inputs:
                try:
                    r.port = await self.io_modules[r.id].start(r.host, self.auto_ports)
                except OSError as exc:
                    raise EndpointError(
                        f"io module {r.id}: cannot listen on {r.host}:{r.port}: {exc.strerror}; change its port"
                    ) from None
        except BaseException:
            await self.stop()
            raise
        for site in self.config.sites:
            for dev in site.devices:
                dev.port = ports[dev.id]
        self._started = True
        self._sync_faults(self.clock.now())
        if not self.clock.stepped:
            self._ticker = asyncio.get_running_loop().create_task(self._run_clock())

    async def stop(self) -> None:
        """Close every endpoint and stop the clock task; safe to call twice."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for io in self.io_modules.values():
            await io.stop()
        for port in self._ports.values():
            if port.proxy is not None:
                await port.proxy.stop()
                port.proxy = None
            if port.backend is not None:
                await port.backend.shutdown()
                port.backend = None
        self._started = False

    async def __aenter__(self) -> FleetHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def endpoints(self) -> list[Endpoint]:
        """Every device's endpoint, in config order (ports as bound after ``start``)."""
        return [
            Endpoint(dev.id, site.id, dev.kind, dev.host, dev.port, dev.unit)
            for site in self.config.sites
            for dev in site.devices
        ]

    # --- time -----------------------------------------------------------------------------
    def advance(self, now: float | None = None) -> None:
        """Bring every site's physics to ``now`` (default: the clock) and apply due faults."""
        now = self.clock.now() if now is None else now
        for site in self.sites.values():
            site.advance(now)
        self._sync_faults(now)

    async def step(self, seconds: float) -> None:
        """Advance a stepped clock by ``seconds`` in chunks of at most MAX_SUBSTEP_S, physics with it."""
        if not self.clock.stepped:
            raise RuntimeError("step() needs a stepped clock; this fleet runs in real time")
        if seconds < 0:
            raise ValueError(f"cannot step backwards ({seconds} s)")
        left = float(seconds)
        while left > 1e-9:
            dt = min(left, MAX_SUBSTEP_S)
            self.clock.step(dt)
            left -= dt
            self.advance()
            await asyncio.sleep(0)  # let servers answer between chunks

    async def _run_clock(self) -> None:
        interval = min(1.0, max(0.1, 5.0 / self.clock.speed))
        while True:
            await asyncio.sleep(interval)
            self.advance()

    # --- faults ---------------------------------------------------------------------------
    def _fault(self, spec: FaultSpec, default_start: float) -> _Fault:
        start = spec.start.timestamp() if spec.start is not None else default_start
        end = spec.end.timestamp() if spec.end is not None else math.inf
        return _Fault(spec, start, end)

    def inject_fault(self, spec: FaultSpec) -> None:
        """Start a fault now (or at ``spec.start``); it replaces the device's earlier faults."""
        if spec.device not in self.devices:
            raise KeyError(f"unknown device '{spec.device}'")
        if self.fault_mode == "scheduled":
            raise RuntimeError("this fleet serves the faults of its config only (faults='scheduled')")
        self._faults[spec.device] = [self._fault(spec, self.clock.now())]
        if self._started:
            self._sync_faults(self.clock.now())

    def clear_fault(self, device_id: str) -> None:
        """End every fault of a device (from config or run time); it answers normally again."""
        if device_id not in self.devices:
            raise KeyError(f"unknown device '{device_id}'")
        self._faults.pop(device_id, None)
        if self._started:
            self._sync_faults(self.clock.now())

    def active_fault(self, device_id: str, now: float | None = None) -> FaultSpec | None:
        """The fault in force for a device at ``now`` (default: the clock), or None."""
        faults = self._faults.get(device_id)
        if not faults:
            return None
        now = self.clock.now() if now is None else now
        for f in reversed(faults):
            if f.active(now):
                return f.spec
        return None

    def _sync_faults(self, now: float) -> None:
        """Apply reboots that became due and open or close ports to match offline states."""
        for dev_id, faults in self._faults.items():
            for f in faults:
                if f.spec.mode == "reboot" and not f.reboot_done and now >= f.start_s and now < f.end_s:
                    f.reboot_done = True
                    self.sites[self._site_of[dev_id]].reboot(dev_id)
        for port in self._ports.values():
            if port.proxy is None or port.gateway:
                continue
            (device,) = port.devices.values()
            fault = self.active_fault(device.id, now)
            down = fault is not None and fault.mode in ("offline", "reboot")
            if down and port.proxy.is_open:
                port.proxy.close_port()
            elif not down and not port.proxy.is_open:
                port.proxy.reopen()

    def _action_for(self, port: _Port):
        def action(unit: int) -> FrameAction:
            device = port.devices.get(unit)
            if device is None:
                return FrameAction(exception=GATEWAY_NO_RESPONSE)
            fault = self.active_fault(device.id)
            if fault is None:
                return FORWARD
            mode = fault.mode
            if mode in ("offline", "reboot"):
                # Behind a gateway the gateway answers for its silent device; a device of its own is
                # unreachable (its port is closed; a request in flight just gets no answer).
                return FrameAction(exception=GATEWAY_NO_RESPONSE) if port.gateway else FrameAction(drop=True)
            if mode == "no_reply":
                return FrameAction(drop=True)
            if mode == "slow":
                return FrameAction(delay_s=fault.delay_s)
            if mode == "exception" and fault.code not in _EXC_CODES:
                return FrameAction(exception=fault.code)
            return FORWARD

        return action

    def _hook(self, device: SimulatedDevice):
        async def on_access(
            fc: int,
            start_addr: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            device.adopt(fc, registers)
            fault = self.active_fault(device.id)
            mode = fault.mode if fault is not None and fault.mode in VALUE_FAULTS else None
            if mode == "exception" and fault is not None and fault.code in _EXC_CODES:
                return ExcCodes(fault.code)
            if set_values is not None and mode == "ignore_writes":
                # pymodbus stores set_values after the hook: store what is there, i.e. change nothing.
                first = address - start_addr
                # Register writes (FC 6/16; the devices serve no coils): the values are ints.
                cast("list[int]", set_values)[:] = registers[first : first + len(set_values)]
                return None
            if set_values is not None:
                return device.write(address, [int(v) for v in set_values], self.clock.now())
            device.render(None if mode == "ignore_writes" else mode, address, count)
            return None

        return on_access

    # --- ground truth ---------------------------------------------------------------------
    def truth(self, device_id: str) -> dict[str, float | None]:
        """SI ground truth of a device's physics now (see simulators.devices ``truth``)."""
        if device_id not in self.devices:
            raise KeyError(f"unknown device '{device_id}'")
        out = self.devices[device_id].truth()
        out["t"] = self.sites[self._site_of[device_id]].t
        return out

    def site_truth(self, site_id: str) -> dict[str, float | None]:
        """Site totals now: pv_w, battery_w (+discharge), load_w, grid_w (+import), soc (0..1 or None)."""
        if site_id not in self.sites:
            raise KeyError(f"unknown site '{site_id}'")
        return self.sites[site_id].truth()

    def site_ground_truth(self, site_id: str) -> SiteGroundTruth:
        """A site's powers now and its cumulative energy counters (the twin's ground truth)."""
        if site_id not in self.sites:
            raise KeyError(f"unknown site '{site_id}'")
        s = self.sites[site_id]
        return SiteGroundTruth(
            t=s.t,
            pv_w=sum(u.pv_w for u in s.pv),
            battery_w=sum(b.battery_w for b in s.batteries),
            load_w=s.load_w,
            grid_w=s.grid_w,
            available_w=sum(u.available_w for u in s.pv),
            pv_wh=sum(u.energy_wh for u in s.pv),
            import_wh=s.import_wh,
            export_wh=s.export_wh,
            charged_wh=sum(b.charged_wh for b in s.batteries),
            discharged_wh=sum(b.discharged_wh for b in s.batteries),
            stored_wh=sum(b.soc * b.cell.capacity_wh for b in s.batteries),
        )


@dataclass(frozen=True)
class SiteGroundTruth:
    """A site's physics at sim time ``t`` (Unix s): powers in W with the signs of docs/definitions.md "Signs",
    counters in Wh cumulative since the simulators started.

    ``available_w``: PV the arrays could deliver (after inverter clipping, before limits);
    ``stored_wh``: energy in the battery cells (SoC × capacity).
    """

    t: float
    pv_w: float
    battery_w: float
    load_w: float
    grid_w: float
    available_w: float
    pv_wh: float
    import_wh: float
    export_wh: float
    charged_wh: float
    discharged_wh: float
    stored_wh: float


def _make(
    dev: DeviceConfig, site: SiteSim, variant: DeviceVariant, maps: dict[str, RegisterMap], profile_dir: Path
) -> SimulatedDevice:
    """The register face of ``dev``: a SunSpec variant, or the vendor map its config names."""
    if dev.protocol != "profile":
        return make_device(dev, site, variant)
    assert dev.profile is not None  # the schema requires it
    key = f"{dev.profile_dirs}:{dev.profile}"
    if key not in maps:
        maps[key] = load_register_map(dev.profile, profile_dir, first=dev.profile_dirs)
    return ProfileSimDevice(dev, site, maps[key])
