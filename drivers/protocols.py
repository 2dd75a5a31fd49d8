"""The protocols the drivers ship, one registration line each (docs/devices.md "Adding a protocol").

:mod:`drivers.device` imports this module the first time a protocol is looked up; the poller and
the writer never import a protocol module themselves.
"""

from __future__ import annotations

from sparcs.drivers.device import register_protocol
from sparcs.drivers.profile_device import ProfileDevice
from sparcs.drivers.sunspec_device import SunSpecDevice

register_protocol("sunspec", SunSpecDevice.from_config)
register_protocol("profile", ProfileDevice.from_config)
