"""Fleet poller: every device of the fleet once per ``poll_once``, none able to stall the others.

One ``Link`` (a reused pymodbus connection) per endpoint; the unit ids behind one gateway are
polled one after another over it, so a silent unit costs its neighbours at most one timeout.
Endpoints are polled concurrently up to ``max_concurrency``; a failing device backs off
exponentially (it is skipped, not waited for: 0, 1, 3, 7, … polls) but is probed again at least every
``dispatch.max_backoff_s``, so a device that answers again is online with that poll; it turns stale
after ``stale_after_polls`` failed polls, or at once while it never answered (a device not read
yet is never online and gets no writes). A value that could not be read is missing, never the
previous one reused.

Tiered polling (``dispatch.device_poll_interval_s``, docs/devices.md "Tiered polling"): a device of
a slower tier is read every n-th poll (its phase spread over the n polls by its position in the
fleet, so every poll reads about the same number of devices), and also at the poll after a write
to it (:meth:`FleetPoller.read_next`: the writer confirms a setpoint by the next reading), while it
has no good reading, and while it fails (the back-off rules above). Between its reads its telemetry
is that of its latest read, with that read's ``read_at``: a value not read is never made up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sparcs.config.schema import DeviceConfig, DispatchConfig, SiteConfig
from sparcs.drivers.device import Device, build_device
from sparcs.drivers.errors import DeviceError, DeviceUnreachableError
from sparcs.drivers.link import Link, raise_open_file_limit
from sparcs.drivers.telemetry import Bounds, CounterWatch, Telemetry, judge, mark_frozen, missing_values

log = logging.getLogger(__name__)

# The first poll (connect, discover, read nameplates: ~15 requests a device) is spread over
# STAGGER_S_PER_LINK × links (at least STAGGER_MIN_S, at most half a poll interval), so a fleet
# restart does not hit every device, gateway and the network at the same instant.
STAGGER_MIN_S = 0.5
STAGGER_S_PER_LINK = 0.005


@dataclass
class DeviceState:
    """What the poller keeps per device between polls; ``driver`` is the device, whatever its protocol."""

    site: SiteConfig
    cfg: DeviceConfig
    driver: Device
    bounds: Bounds
    failed_polls: int = 0  # consecutive polls without data (attempted or skipped)
    attempt_failures: int = 0  # consecutive attempts that failed: the back-off exponent
    next_attempt_at: float = 0.0
    last_good_at: float | None = None
    watches: dict[str, CounterWatch] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    every: int = 1  # read at every ``every``-th poll (tiered polling)
    phase: int = 0  # ... at the polls whose count leaves this remainder
    read_next: bool = False  # written since its latest read: read at the next poll, whatever its tier

    def due(self, poll: int) -> bool:
        """Whether poll number ``poll`` reads this device (before the back-off rules)."""
        return (
            self.every == 1
            or self.read_next
            or self.failed_polls > 0
            or self.last_good_at is None
            or poll % self.every == self.phase
        )


def _bounds(site: SiteConfig) -> Bounds:
    b = site.battery
    return Bounds(
        pv_rating_w=site.pv.rating_w,
        battery_power_w=max(b.max_charge_w, b.max_discharge_w) if b else site.pv.rating_w,
        grid_limit_w=site.grid.connection_limit_w,
    )


class FleetPoller:
    """Polls a fleet of Modbus TCP devices; ``poll_once`` never raises for device faults."""

    def __init__(
        self,
        devices: list[tuple[SiteConfig, DeviceConfig]],
        settings: DispatchConfig,
        clock: Callable[[], float],
    ):
        raise_open_file_limit()
        self.settings, self.clock = settings, clock
        self.links: dict[tuple[str, int], Link] = {}
        self.devices: dict[str, DeviceState] = {}
        self._by_link: dict[tuple[str, int], list[DeviceState]] = {}
        in_tier: dict[str, int] = {}
        for site, dev in devices:
            field = f"sites[{site.id}].devices[{dev.id}].protocol"
            driver = build_device(dev, functools.partial(self._link, dev), field)
            every = settings.polls_between_reads(dev.kind)
            phase = in_tier.get(dev.kind, 0) % every
            in_tier[dev.kind] = in_tier.get(dev.kind, 0) + 1
            state = DeviceState(site, dev, driver, _bounds(site), every=every, phase=phase)
            self.devices[dev.id] = state
            self._by_link.setdefault(dev.endpoint, []).append(state)
        self._sem = asyncio.Semaphore(settings.max_concurrency)
        self._started = False
        self._polls = 0  # polls started: tiered devices are read at the polls of their phase

    def _link(self, dev: DeviceConfig) -> Link:
        """The one connection of ``dev``'s endpoint, shared by the unit ids behind it."""
        link = self.links.get(dev.endpoint)
        if link is None:
            link = self.links[dev.endpoint] = Link(dev.host, dev.port, self.settings.modbus_timeout_s)
        return link

    def state(self, device_id: str) -> DeviceState:
        """The device ``device_id`` with its config, site and latest telemetry; KeyError names an unknown id."""
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"unknown device '{device_id}'") from None

    def read_next(self, device_id: str) -> None:
        """Read ``device_id`` at the next poll whatever its tier (after a write, to confirm it)."""
        self.devices[device_id].read_next = True

    async def poll_once(self) -> dict[str, Telemetry]:
        """Poll every device due (all of them without tiers); returns device id → its latest telemetry."""
        stagger = not self._started
        self._started = True
        poll, self._polls = self._polls, self._polls + 1
        due = [
            (i, states)
            for i, group in enumerate(self._by_link.values())
            if (states := [s for s in group if s.due(poll)])
        ]
        n = len(self._by_link)
        window = min(max(STAGGER_MIN_S, STAGGER_S_PER_LINK * n), self.settings.poll_interval_s / 2)
        await asyncio.gather(
            *(self._poll_link(states, window * i / n if stagger and n > 1 else 0.0) for i, states in due)
        )
        return {dev_id: s.telemetry for dev_id, s in self.devices.items() if s.telemetry is not None}

    async def _poll_link(self, states: list[DeviceState], delay_s: float) -> None:
        """The devices behind one connection, one after another (a gateway answers one request at a time)."""
        if delay_s:
            await asyncio.sleep(delay_s)
        async with self._sem:
            for s in states:
                s.read_next = False
                await self._poll_device(s)

    async def _poll_device(self, s: DeviceState) -> None:
        now = self.clock()
        if now < s.next_attempt_at:
            self._failed(s, now, s.telemetry.error if s.telemetry else "backing off", attempted=False)
            return
        try:
            raw = await self._read_with_retry(s)
        except DeviceError as exc:
            self._failed(s, self.clock(), str(exc), attempted=True)
            return
        except Exception as exc:  # fault barrier: a device answering nonsense must not stop the fleet's poll
            log.exception("device %s: unexpected failure while polling", s.cfg.id, extra={"device": s.cfg.id})
            self._failed(s, self.clock(), f"unexpected {type(exc).__name__}: {exc}", attempted=True)
            return
        t = self.clock()
        device_time = raw.pop("device_time_s", None)
        if device_time is not None:  # the device's own clock, ahead of ours by (docs/devices.md "Device clocks")
            raw["clock_offset_s"] = device_time - t
        values = mark_frozen(
            s.cfg.kind, judge(s.cfg.kind, raw, s.bounds), s.watches, t, self.settings.stale_after_polls
        )
        s.failed_polls = s.attempt_failures = 0
        s.next_attempt_at = 0.0
        s.last_good_at = t
        s.telemetry = Telemetry(
            device_id=s.cfg.id,
            site_id=s.site.id,
            kind=s.cfg.kind,
            read_at=t,
            status="online",
            values=values,
            last_good_at=t,
            error=None,
            models=s.driver.model_ids(),
        )

    async def _read_with_retry(self, s: DeviceState) -> dict[str, float | None]:
        """One poll with at most one retry, and only after a lost connection (a restart, an idle drop).

        A timeout is not retried: a silent device would cost its gateway neighbours a second timeout.
        """
        try:
            return await s.driver.poll()
        except DeviceUnreachableError:
            pass
        return await s.driver.poll()

    def _backoff_s(self, failures: int) -> float:
        """How long to wait after ``failures`` failed attempts in a row before the next one.

        k failures: skip the next 2^(k-1) - 1 polls, but never so many that the next attempt falls
        more than ``max_backoff_s`` after this one (at least the next poll is tried). The half
        interval absorbs clock jitter: the attempt lands on a poll, not just after it.
        """
        interval = self.settings.poll_interval_s
        cap_polls = max(1, math.floor(self.settings.max_backoff_s / interval + 1e-9))
        polls = min(2 ** min(failures - 1, 30), cap_polls)
        return interval * (polls - 0.5)

    def _failed(self, s: DeviceState, now: float, error: str | None, attempted: bool) -> None:
        s.failed_polls += 1
        if attempted:
            s.attempt_failures += 1
            s.next_attempt_at = now + self._backoff_s(s.attempt_failures)
        # A device that never answered is not online: nothing it reports is known yet.
        stale = s.failed_polls >= self.settings.stale_after_polls or s.last_good_at is None
        if stale:
            s.driver.forget()  # it may come back changed (restart, firmware update): discover again
        s.watches.clear()
        s.telemetry = Telemetry(
            device_id=s.cfg.id,
            site_id=s.site.id,
            kind=s.cfg.kind,
            read_at=now,
            status="stale" if stale else "online",
            values=missing_values(s.cfg.kind),
            last_good_at=s.last_good_at,
            error=error,
            models=s.driver.model_ids(),
        )

    async def close(self) -> None:
        """Close every connection."""
        for link in self.links.values():
            link.drop()
