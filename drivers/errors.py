"""Errors a device can cause. The poller turns them into quality; the CLI into one-line messages."""

from __future__ import annotations


class DeviceError(Exception):
    """A device did not answer usefully."""


class DeviceTimeoutError(DeviceError):
    """No reply within the timeout."""


class DeviceUnreachableError(DeviceError):
    """The TCP connection could not be made or was lost."""


class ModbusError(DeviceError):
    """The device answered with a Modbus exception."""

    def __init__(self, code: int, what: str):
        self.code = code
        super().__init__(f"Modbus exception {code} on {what}")
