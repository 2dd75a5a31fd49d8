"""SPARCS simulators: SunSpec Modbus TCP devices with physics, on a sim clock, with faults.

- :mod:`simulators.clock` — :class:`SimClock` (real time, accelerated, or stepped).
- :mod:`simulators.weather` — seeded clearness and load noise, pure functions of (seed, site, time).
- :mod:`simulators.physics` — ground truth PV potential and load (:func:`site_signals`, also the
  optimizer's perfect foresight), battery and ramp maths.
- :mod:`simulators.site` — one site's inverters, batteries and meter, their controls and timers.
- :mod:`simulators.registers` — register images from pysunspec2's model definitions.
- :mod:`simulators.devices` — the SunSpec face of each device kind and variant (phases, meter model).
- :mod:`simulators.profile_device` — devices that serve a vendor register map from config/profiles/.
- :mod:`simulators.proxy` — the TCP proxy that injects timing faults.
- :mod:`simulators.fleet` — :class:`FleetHost`: every device of a fleet in one process.
- :mod:`simulators.control` — the HTTP control channel; :mod:`simulators.cli` — ``sparcs simulate``.
- :mod:`simulators.fleetgen` — synthetic fleets of any size; :mod:`simulators.bench` — scale benchmark.
"""
