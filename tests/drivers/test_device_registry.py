"""The protocol registry: the poller builds devices by protocol name and refuses an unknown one clearly."""

from __future__ import annotations

import pytest

from sparcs.config.schema import ConfigError, DispatchConfig, validate_config
from sparcs.drivers.device import known_protocols, register_protocol
from sparcs.drivers.poller import FleetPoller

SITE = {"id": "s1", "location": {"lat": 51.34, "lon": 12.37}, "pv": {"kwp": 4.0}}


def _fleet(protocol: str) -> dict:
    return {"sites": [SITE | {"devices": [{"id": "pv1", "kind": "pv_inverter", "port": 1502, "protocol": protocol}]}]}


def test_the_shipped_protocols_are_registered() -> None:
    assert {"sunspec", "profile"} <= set(known_protocols())


def test_the_poller_names_the_field_and_the_known_protocols_for_an_unknown_one() -> None:
    with pytest.raises(ConfigError) as err:
        FleetPoller(validate_config(_fleet("modbus-rtu")).devices(), DispatchConfig(), lambda: 0.0)
    (line,) = err.value.errors
    known = ", ".join(known_protocols())
    assert line == f"sites[s1].devices[pv1].protocol: unknown protocol 'modbus-rtu'; known protocols: {known}"


def test_a_name_cannot_be_registered_twice_for_different_devices() -> None:
    with pytest.raises(ValueError, match="'sunspec' is registered already"):
        register_protocol("sunspec", lambda cfg, link_for: None)  # type: ignore[arg-type,return-value]
