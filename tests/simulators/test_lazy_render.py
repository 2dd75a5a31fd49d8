"""A device that publishes only the models a request reaches (``lazy``) answers every request as one that
renders its whole image: the same registers for every read, the same result for every write (the
registers a read does not reach may differ in between: nothing shows them)."""

from __future__ import annotations

import random

from sparcs.config.schema import validate_config
from sparcs.simulators.clock import SimClock
from sparcs.simulators.devices import SunSpecSimDevice
from sparcs.simulators.fleet import FleetHost

from .conftest import SUMMER_NOON_S, variant_fleet


def _hosts() -> tuple[FleetHost, FleetHost]:
    cfg = validate_config(variant_fleet())
    lazy = FleetHost(cfg, clock=SimClock(SUMMER_NOON_S, stepped=True), faults="scheduled")
    whole = FleetHost(cfg, clock=SimClock(SUMMER_NOON_S, stepped=True), faults="runtime")
    return lazy, whole


def _requests(device: SunSpecSimDevice, rng: random.Random) -> list[tuple[int, int, list[int] | None]]:
    """A poll's worth of ``(address, count, values)``: reads of each model, of runs across models and of
    random spans; writes of writable points (raw values in and out of range)."""
    image = device.image
    end = image.base + len(image.registers)
    out: list[tuple[int, int, list[int] | None]] = []
    for addr in image.model_addresses.values():
        length = image.registers[addr - image.base + 1] + 2
        out.append((addr, min(length, 125), None))
    for _ in range(6):
        first = rng.randrange(image.base, end - 1)
        out.append((first, rng.randint(1, min(125, end - first)), None))
    for mid, name in rng.sample(sorted(device.writable), k=min(3, len(device.writable))):
        p = image.point(mid, name)
        out.append((p.address, p.size, [rng.choice([0, 1, 3, 50, 500, 1000, 0xFFFF]) for _ in range(p.size)]))
    rng.shuffle(out)
    return out


async def test_lazy_devices_answer_as_whole_renders_over_polls_and_writes():
    lazy, whole = _hosts()
    assert all(d.lazy for d in lazy.devices.values() if isinstance(d, SunSpecSimDevice))
    assert not any(getattr(d, "lazy", False) for d in whole.devices.values())
    regs = {
        host: {dev_id: [0] * (len(d.image.registers) + 1) for dev_id, d in host.devices.items()}
        for host in (lazy, whole)
    }
    hooks = {host: {dev_id: host._hook(d) for dev_id, d in host.devices.items()} for host in (lazy, whole)}
    rng = random.Random(18)
    reads = writes = 0
    for _ in range(30):
        for dev_id, device in lazy.devices.items():
            if not isinstance(device, SunSpecSimDevice):
                continue
            base = device.image.base
            for address, count, values in _requests(device, rng):
                got = []
                for host in (lazy, whole):
                    r = regs[host][dev_id]
                    fc = 3 if values is None else (6 if len(values) == 1 else 16)
                    sent = None if values is None else list(values)
                    result = await hooks[host][dev_id](fc, base, address, count, r, sent)
                    if result is None and sent is not None:
                        r[address - base : address - base + count] = sent  # pymodbus stores a write after the hook
                    # a read answers with the registers; a write only with its result
                    got.append((result, r[address - base : address - base + count] if sent is None else None))
                assert got[0] == got[1], (dev_id, address, count, values)
                reads += values is None
                writes += values is not None and got[0][0] is None
        await lazy.step(10.0)
        await whole.step(10.0)
    assert reads > 1000 and writes > 50  # both paths were exercised, writes taken as well as refused


def test_controls_are_published_as_put_publishes_them():
    """The writable points' fast path gives put()'s registers for any value (halves of a scale step,
    out of range, negative, whole numbers)."""
    host = FleetHost(validate_config(variant_fleet()), clock=SimClock(SUMMER_NOON_S, stepped=True))
    rng = random.Random(7)
    checked = 0
    for device in host.devices.values():
        if not isinstance(device, SunSpecSimDevice):
            continue
        for _ in range(40):
            for (mid, _name), w in device.writable.items():
                unit = device._unit_for(mid)
                assert unit is not None
                pick = rng.choice(["uniform", "half", "out", "whole"])
                value = {
                    "uniform": rng.uniform(w.lo, w.hi),
                    "half": round(rng.uniform(w.lo, w.hi) * 20) / 20 + 0.05,
                    "out": rng.choice([w.lo - 7.5, w.hi * 3 + 1]),
                    "whole": float(rng.randint(int(w.lo), int(min(w.hi, 1e6)))),
                }[pick]
                setattr(unit.controls, w.field, round(value) if w.integer else value)
            device.site.version += 1
            device.render(None)
            published = list(device.image.registers)
            for (mid, name), w in device.writable.items():
                unit = device._unit_for(mid)
                device.put(mid, name, getattr(unit.controls, w.field))
            assert device.image.registers == published, device.id
            checked += 1
    assert checked > 100
