"""The run-time control switch of each device: controlled or monitor-only, set by an operator.

Effective control of a device = the fleet file's ``control`` AND this switch (docs/operations.md
"Control switch"). A device that is not controlled offers no flexibility (:mod:`~sparcs.controller.state`),
is not planned as controllable (:mod:`~sparcs.controller.planning`) and gets no setpoint or refresh
from the writer. The switch is stored with its audit entry (``device-control``) and read back on start.

Taking a device out of control releases it first: the writer sends it back to its installer
configuration (PV limit disabled, or the installer ceiling where that is below WMax; battery in its
own mode). That is a looser limit than a curtailment in force, which is the point: the operator
takes the device out of the controller's hands, and the installer's configuration is what it runs
on without one. A release is owed (``releasing``) until it is written and read back; while the
device does not answer, its revert timer returns it to that configuration on its own. The same
holds when a reload turns ``control`` from true to false, and after a restart for every device
switched to monitor-only (the previous process may have stopped before the release was written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sparcs.config.schema import DeviceConfig, FleetConfig
from sparcs.controller.store import DeviceControlRow, Store


class UnknownDevice(KeyError):
    """A device id the fleet file does not name."""


@dataclass(frozen=True)
class Switches:
    """The switches of every device at one moment, as the read model shows them (a copy: the API
    process reads it from the control process's snapshot)."""

    monitor_only: frozenset[str] = frozenset()
    releasing: frozenset[str] = frozenset()
    rows: dict[str, DeviceControlRow] = field(default_factory=dict)

    def controlled(self, dev: DeviceConfig) -> bool:
        """Effective control: the fleet file's ``control`` and not switched to monitor-only."""
        return dev.control and dev.id not in self.monitor_only

    def view(self, dev: DeviceConfig) -> dict[str, Any]:
        """The device's control as the API shows it: ``controlled`` (effective), ``config`` (the fleet
        file's ``control``), ``switch`` (``controlled`` or ``monitor-only``, who set it and when,
        Unix s), ``releasing`` (a release still owed)."""
        row = self.rows.get(dev.id)
        return {
            "controlled": self.controlled(dev),
            "config": dev.control,
            "switch": "monitor-only" if dev.id in self.monitor_only else "controlled",
            "switched_by": row.changed_by if row else None,
            "switched_at": row.changed_at if row else None,
            "releasing": dev.id in self.releasing,
        }


class DeviceControl:
    """The switch of every device of one controller; ``monitor_only`` is the live set the writer reads."""

    def __init__(self, store: Store, cfg: FleetConfig, clock: Callable[[], float]):
        self._store, self._cfg, self._clock = store, cfg, clock
        self.monitor_only: set[str] = set()
        self.releasing: set[str] = set()
        self._rows: dict[str, DeviceControlRow] = {}
        devices = self._devices()
        for row in store.device_controls():
            if row.device_id not in devices:
                continue  # a device no longer in the fleet file: its switch waits in the store
            self._rows[row.device_id] = row
            if not row.controlled:
                self.monitor_only.add(row.device_id)
                if devices[row.device_id].control:
                    self.releasing.add(row.device_id)

    def _devices(self) -> dict[str, DeviceConfig]:
        return {d.id: d for _s, d in self._cfg.devices()}

    def controlled(self, device_id: str) -> bool:
        """Effective control: the fleet file's ``control`` and not switched to monitor-only."""
        dev = self._devices().get(device_id)
        return dev is not None and dev.control and device_id not in self.monitor_only

    def switch(self, device_id: str, controlled: bool, who: str) -> dict[str, Any]:
        """Set the switch of ``device_id`` (stored and audited before it takes effect); returns its view.
        Raises :class:`UnknownDevice`."""
        dev = self._devices().get(device_id)
        if dev is None:
            raise UnknownDevice(device_id)
        now = self._clock()
        self._store.set_device_control(device_id, controlled, who=who, at=now)
        self._rows[device_id] = DeviceControlRow(device_id, controlled, now, who)
        if controlled:
            self.monitor_only.discard(device_id)
            self.releasing.discard(device_id)
        else:
            if dev.control and device_id not in self.monitor_only:
                self.releasing.add(device_id)  # it may hold a limit of ours: release it first
            self.monitor_only.add(device_id)
        return self.view(dev)

    def config_turned_off(self, device_id: str) -> None:
        """A reload turned the device's ``control`` from true to false: release it like a switch does."""
        self.releasing.add(device_id)

    def released(self, device_id: str) -> None:
        """The release of ``device_id`` was written and read back."""
        self.releasing.discard(device_id)

    def switches(self) -> Switches:
        """The switches now, copied (microseconds: only devices ever switched are held)."""
        return Switches(frozenset(self.monitor_only), frozenset(self.releasing), dict(self._rows))

    def view(self, dev: DeviceConfig) -> dict[str, Any]:
        """The device's control as the API shows it (:meth:`Switches.view`)."""
        return self.switches().view(dev)
