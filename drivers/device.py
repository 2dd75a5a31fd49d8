"""The one interface every device protocol implements, and the registry that builds devices by name.

The poller and the writer speak only to :class:`Device`; they never name a protocol. A protocol
(SunSpec, a vendor profile, an MQTT edge, a virtual device in a test) is a class that implements
:class:`Device` and one line that registers its factory under the name a fleet file's
``devices[].protocol`` uses::

    register_protocol("sunspec", SunSpecDevice.from_config)

A device owns its wire format: it polls into the raw SI telemetry values (the poller judges their
quality), and it turns a PV limit, a battery setpoint or a release into register writes plus one
read-back, as data (:class:`WritePlan`) the writer executes and checks. The writer keeps the
policy (clamping, skip-if-unchanged, refreshes, read-back check; docs/devices.md).
"""

from __future__ import annotations

import enum
import importlib
import importlib.metadata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from sparcs.config.register_map import FailSafe
from sparcs.config.schema import ConfigError, DeviceConfig
from sparcs.drivers.link import Link
from sparcs.drivers.telemetry import Reading

BUILTIN_PROTOCOLS = "sparcs.drivers.protocols"
"""The module whose import registers the protocols the drivers ship (sunspec, profile)."""

PLUGIN_GROUP = "sparcs.protocols"
"""Entry points of installed packages whose modules register further protocols when loaded."""

SetpointKind = Literal["pv", "battery"]


class Unknown(enum.Enum):
    """The latest poll cannot tell which setpoint is in force (control not polled, device rebooted)."""

    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN
InForce = float | None | Literal[Unknown.UNKNOWN]
"""A setpoint in force in W, None when released (the installer configuration), or UNKNOWN."""


@dataclass(frozen=True)
class RegisterWrite:
    """A run of holding registers to write, and which of them (indices into ``values``) must read back."""

    addr: int
    values: tuple[int, ...]
    check: tuple[int, ...]


ReadBack = Callable[[], Awaitable[tuple[dict[int, int], float | None]]]
"""One read after the writes: (the holding registers it saw, by protocol address; the setpoint in force
in W, None when released)."""


@dataclass(frozen=True)
class WritePlan:
    """What one setpoint costs on the wire: the writes in order, then one read-back."""

    writes: tuple[RegisterWrite, ...]
    read_back: ReadBack


class Device(Protocol):
    """One device of the fleet, whatever its protocol.

    Powers in W with the signs of
    docs/definitions.md "Signs"; percentages only on the wire.
    """

    @property
    def kind(self) -> str:
        """``pv_inverter``, ``battery`` or ``meter``."""
        ...

    async def poll(self) -> dict[str, float | None]:
        """Read the device once: the raw SI telemetry values by key (before quality); raises DeviceError."""
        ...

    def forget(self) -> None:
        """The device went stale: drop what was learnt about it (layout, scale factors); the next poll starts over."""
        ...

    def model_ids(self) -> list[int]:
        """The SunSpec model ids the device serves, for the telemetry (empty for other protocols)."""
        ...

    def pv_base_w(self, latest: Mapping[str, Reading]) -> float | None:
        """The W that 100 % of a PV limit means (docs/definitions.md "Reference bases"), or None if unknown.

        ``latest``: the values of the device's latest telemetry."""
        ...

    def in_force(self, kind: SetpointKind, latest: Mapping[str, Reading]) -> InForce:
        """The setpoint of ``kind`` the latest poll shows in force, None when released, UNKNOWN if it cannot tell."""
        ...

    async def pv_limit_writes(self, target_w: float | None, wmax_w: float, revert_s: int) -> WritePlan:
        """The writes that limit PV output to ``target_w`` (None: release) with a revert timer of ``revert_s``.

        ``wmax_w`` is :meth:`pv_base_w`; a ValueError or DeviceError means the limit cannot be written."""
        ...

    async def battery_writes(self, target_w: float | None, revert_s: int) -> WritePlan:
        """The writes that set battery power to ``target_w`` (> 0 discharge; None: release)."""
        ...

    async def write(self, addr: int, values: list[int]) -> None:
        """Write a run of holding registers."""
        ...

    async def read(self, addr: int, count: int) -> list[int]:
        """Read holding registers (the writer checks a written register the read-back did not reach)."""
        ...

    # Optional members, read through fail_safe_of() and can_stop_pv() (absent: no fail-safe, no stop):
    #   fail_safe: config.register_map.FailSafe  (revert_timer, watchdog with interval_s, or none)
    #   can_stop_pv: bool  (pv_limit_writes(0.0, ...) stops the inverter at 0 W)
    #   revert_left_s(kind) -> float | None  (what the device's own revert timer had left at the latest poll)
    #   roles: tuple[SetpointKind, ...]  (the setpoints it takes; absent: every role of its kind)


NO_FAIL_SAFE = FailSafe(kind="none", note="the device declares no fail-safe")


def fail_safe_of(device: Device) -> FailSafe:
    """What ``device`` does when the controller stops writing (docs/devices.md "Fail-safes").

    An optional member of :class:`Device` (``fail_safe``); a device without it counts as having
    none, so it is monitor-only unless its config accepts that (``accept_no_fail_safe``)."""
    fs = getattr(device, "fail_safe", None)
    return fs if isinstance(fs, FailSafe) else NO_FAIL_SAFE


def can_stop_pv(device: Device) -> bool:
    """True when ``pv_limit_writes(0.0, ...)`` stops the inverter at exactly 0 W (SunSpec 123 ``Conn`` = 0,
    a vendor's own stop). An optional member of :class:`Device` (``can_stop_pv``); absent = False: the
    writer then holds the device at its floor and reports the shortfall."""
    return bool(getattr(device, "can_stop_pv", False))


def revert_left_of(device: Device, kind: SetpointKind) -> float | None:
    """Seconds the device's own revert timer for ``kind`` had left at its latest poll (SunSpec 704
    ``WMaxLimPctRvrtRem`` / ``WSetRvrtRem``), or None where the device does not say. An optional member
    of :class:`Device` (``revert_left_s(kind)``)."""
    fn = getattr(device, "revert_left_s", None)
    left = fn(kind) if callable(fn) else None
    return float(left) if isinstance(left, int | float) else None


KIND_ROLES: dict[str, tuple[SetpointKind, ...]] = {
    "pv_inverter": ("pv",),
    "battery": ("battery",),
    "hybrid": ("pv", "battery"),
}
"""The setpoints a device kind takes: a hybrid both, its PV limit first."""


def roles_of(device: Device, kind: str) -> tuple[SetpointKind, ...]:
    """The setpoints ``device`` (of config kind ``kind``) takes: its optional member ``roles`` (a vendor
    profile without a control register for a role does not take it), else every role of its kind."""
    roles = getattr(device, "roles", None)
    every = KIND_ROLES.get(kind, ())
    return tuple(r for r in every if r in roles) if isinstance(roles, tuple) else every


LinkFor = Callable[[], Link]
"""The poller's shared Modbus TCP link to the device's endpoint, made on the first call."""

DeviceFactory = Callable[[DeviceConfig, LinkFor], Device]
"""Builds a device from its config entry; raises ValueError (e.g. ProfileError) for a config it cannot use."""

_REGISTRY: dict[str, DeviceFactory] = {}
_builtins_loaded = False


class UnknownProtocolError(ConfigError):
    """A device names a protocol nobody registered; the message names the field and the known protocols."""


def register_protocol(name: str, factory: DeviceFactory) -> None:
    """Make ``name`` a valid ``devices[].protocol``: the poller builds such devices with ``factory``."""
    known = _REGISTRY.get(name)
    if known is not None and known != factory:
        raise ValueError(f"protocol '{name}' is registered already ({known!r})")
    _REGISTRY[name] = factory


def known_protocols() -> list[str]:
    """The registered protocol names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def check_protocol(name: str, field: str) -> str | None:
    """None when ``name`` is a registered protocol, else the error line for ``field`` (its path in the file)."""
    if name in known_protocols():
        return None
    return f"{field}: unknown protocol '{name}'; known protocols: {', '.join(known_protocols())}"


def build_device(cfg: DeviceConfig, link_for: LinkFor, field: str = "protocol") -> Device:
    """The device of ``cfg`` from its protocol's factory; UnknownProtocolError for an unregistered name."""
    problem = check_protocol(cfg.protocol, field)
    if problem is not None:
        raise UnknownProtocolError("config", [problem])
    return _REGISTRY[cfg.protocol](cfg, link_for)


def _load_builtins() -> None:
    """Register the shipped protocols, and those of installed plug-ins (entry points ``sparcs.protocols``)."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module(BUILTIN_PROTOCOLS)
        for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            ep.load()  # the plug-in's module registers its protocol on import


def pv_limit_in_telemetry(latest: Mapping[str, Reading]) -> InForce:
    """The PV limit in force as the latest telemetry reports it (``pv_limit_w``; UNKNOWN unless good)."""
    r = latest.get("pv_limit_w")
    return r.value if r is not None and r.quality == "good" else UNKNOWN
