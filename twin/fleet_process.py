"""The twin's simulated fleet in a process of its own, stepped from the replay loop.

The simulators (:class:`simulators.fleet.FleetHost`, pymodbus servers and physics) and the
controller (pymodbus clients, state, planning) each cost about half of a replay's CPU; in one
process they would share one interpreter lock. Here the fleet host runs in a child process
(multiprocessing, spawn) with its own event loop, so the Modbus servers answer on one core while
the controller polls from another — still real Modbus TCP on loopback, still one stepped clock:
the child's :class:`simulators.clock.SimClock` only moves when the parent sends ``step``.

Protocol over a pipe (parent → child → parent): ``("step", seconds)`` → ``("ok", sample)``;
``("stop", None)`` → ``("ok", None)``; any failure → ``("error", text)``. A sample is the ground
truth of every site (see :func:`site_sample`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
from dataclasses import fields
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from sparcs.config.schema import FleetConfig

if TYPE_CHECKING:
    from sparcs.simulators.fleet import FleetHost

STARTUP_TIMEOUT_S = 120.0
STEP_TIMEOUT_S = 120.0

Sample = dict[str, Any]


class FleetProcessError(RuntimeError):
    """The simulated fleet's process failed; the message carries the child's error."""


def site_sample(host: FleetHost) -> Sample:
    """Ground truth of every site now: time, powers (W) and cumulative counters (Wh) per site id.

    The fields of :class:`simulators.fleet.SiteGroundTruth` (from ``FleetHost.site_ground_truth``):
    ``available_w`` is PV the arrays could deliver (after inverter clipping, before limits),
    ``stored_wh`` the energy in the battery cells (SoC × capacity).
    """
    sites: dict[str, dict[str, float]] = {}
    names: list[str] = []
    for site in host.config.sites:
        truth = host.site_ground_truth(site.id)
        names = names or [f.name for f in fields(truth) if f.name != "t"]  # flat floats: no asdict deep copy
        sites[site.id] = {k: getattr(truth, k) for k in names}
    return {"t": host.clock.now(), "sites": sites}


async def _serve(conn: Connection, cfg: FleetConfig, start_s: float) -> None:
    from sparcs.simulators.clock import SimClock
    from sparcs.simulators.fleet import FleetHost

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_cancelled)
    host = FleetHost(cfg, clock=SimClock(start_s, stepped=True), auto_ports=True, faults="scheduled")
    inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except EOFError:
            inbox.put_nowait(("stop", None))

    try:
        await host.start()
        conn.send(("ready", (host.config, site_sample(host))))
        loop.add_reader(conn.fileno(), readable)
        while True:
            kind, arg = await inbox.get()
            if kind == "stop":
                break
            await host.step(float(arg))
            conn.send(("ok", site_sample(host)))
    except Exception as exc:  # reported to the parent, which raises it with this text
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        await host.stop()
        with contextlib.suppress(OSError):
            conn.send(("ok", None))


def _quiet_cancelled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Connection tasks cancelled while the fleet shuts down are not errors."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def _child_main(conn: Connection, cfg: FleetConfig, start_s: float) -> None:
    asyncio.run(_serve(conn, cfg, start_s))


class FleetProcess:
    """A simulated fleet on a stepped clock in a child process (see the module docstring).

    ``config``: the fleet config with the bound loopback ports, after :meth:`start`.
    """

    def __init__(self, cfg: FleetConfig, start_s: float):
        self._cfg = cfg
        self._start_s = start_s
        self._ctx = mp.get_context("spawn")
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.config: FleetConfig | None = None
        self.now_s = start_s

    def _recv(self, timeout_s: float, what: str) -> Any:
        assert self._conn is not None
        if not self._conn.poll(timeout_s):
            raise FleetProcessError(f"simulated fleet did not answer '{what}' within {timeout_s:.0f} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            raise FleetProcessError(f"simulated fleet process ended during '{what}'") from None
        if kind == "error":
            raise FleetProcessError(f"simulated fleet failed during '{what}': {payload}")
        return payload

    async def start(self) -> Sample:
        """Start the child, bind every device's port; returns the first sample."""
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_child_main, args=(child, self._cfg, self._start_s), name="sparcs-twin-fleet", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        self.config, sample = await asyncio.to_thread(self._recv, STARTUP_TIMEOUT_S, "start")
        return sample

    async def step(self, seconds: float) -> Sample:
        """Advance the fleet's clock and physics by ``seconds``; returns the sample at the new time."""
        assert self._conn is not None
        self._conn.send(("step", seconds))
        sample = await asyncio.to_thread(self._recv, STEP_TIMEOUT_S, "step")
        self.now_s = sample["t"]
        return sample

    async def stop(self) -> None:
        """Stop the fleet (closing every port) and the child; safe to call twice."""
        if self._proc is None:
            return
        if self._conn is not None:
            with contextlib.suppress(OSError, FleetProcessError):
                self._conn.send(("stop", None))
                await asyncio.to_thread(self._recv, 30.0, "stop")
            self._conn.close()
        await asyncio.to_thread(self._proc.join, 10)
        if self._proc.is_alive():
            self._proc.kill()
            await asyncio.to_thread(self._proc.join)
        self._proc, self._conn = None, None
