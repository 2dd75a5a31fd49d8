"""The twin's fleet behind edges: a Mosquitto (TLS, one credential per edge, the ACL), the fleet
file's edges on the twin's stepped clock, and broker outages from the scenario (docs/edges.md).

Each poll of the replay runs every edge's cycle first (its Modbus poll of the simulated sites, the
export guard, the writes), waits until the central has their telemetry (while the broker is up),
then the central's cycle. A ``broker_outage`` action stops the broker process for its duration of
sim time; the edges go on with their stored plans meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from sparcs.config.schema import FleetConfig
from sparcs.controller.cycle import Clock, Controller
from sparcs.controller.store import Store
from sparcs.edge.central import EdgeHub
from sparcs.edge.mosquitto import Mosquitto, write_broker_files
from sparcs.edge.node import EdgeNode
from sparcs.factory import build_edge

log = logging.getLogger("sparcs.twin.edges")

TELEMETRY_WAIT_S = 10.0
CONNECT_WAIT_S = 30.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class EdgeRig:
    """Broker and edges of one replay; :meth:`prepare` first, then :meth:`start` with the central."""

    def __init__(self, cfg: FleetConfig, folder: Path, clock: Clock):
        assert cfg.broker is not None
        self.folder, self.clock = folder, clock
        port = _free_port()
        passwords = {u: secrets.token_hex(12) for u in [cfg.broker.username, *(e.id for e in cfg.broker.edges)]}
        pw_dir = folder / "secrets"
        pw_dir.mkdir(parents=True, exist_ok=True)
        for user, pw in passwords.items():
            (pw_dir / user).write_text(pw)
        files = write_broker_files(folder / "broker", cfg.broker, passwords, port=port)
        broker = cfg.broker.model_copy(
            update={
                "host": "127.0.0.1",
                "port": port,
                "tls": True,
                "ca_file": files.ca,
                "password_file": pw_dir / cfg.broker.username,
                "edges": [e.model_copy(update={"password_file": pw_dir / e.id}) for e in cfg.broker.edges],
            }
        )
        self.cfg = cfg.model_copy(update={"broker": broker})
        self.broker = Mosquitto(files, port)
        self.edges: list[EdgeNode] = []
        self._stores: list[Store] = []
        self.back_at: float | None = None  # sim time the broker returns after an outage
        self.hub: EdgeHub | None = None

    async def start(self, central: Controller) -> None:
        """Start the broker, connect the central, then the edges."""
        self.broker.start()
        hub = central.writer.edge.hub  # type: ignore[attr-defined]
        assert isinstance(hub, EdgeHub)
        self.hub = hub
        hub.start()
        await _until(lambda: hub.connected, CONNECT_WAIT_S)
        assert self.cfg.broker is not None
        for e in self.cfg.broker.edges:
            store = Store(data_dir=self.folder / e.id)
            self._stores.append(store)
            node = build_edge(self.cfg, e.id, store, self.clock, self.folder / e.id)
            await node.start()
            self.edges.append(node)
        await _until(lambda: all(n.connected for n in self.edges), CONNECT_WAIT_S)

    def outage(self, now: float, duration_s: float) -> None:
        """Stop the broker now, for ``duration_s`` of sim time."""
        self.broker.stop()
        self.back_at = now + duration_s

    async def poll(self) -> None:
        """The edges' cycles of this poll, and their telemetry at the central while the broker is up."""
        now = self.clock.now()
        if self.back_at is not None and now >= self.back_at:
            self.broker.start()
            self.back_at = None
            await _until(lambda: all(n.connected for n in self.edges), CONNECT_WAIT_S)
        for n in self.edges:
            await n.cycle()
        if self.back_at is None and self.hub is not None:
            hub = self.hub
            devices = [d.id for n in self.edges if n.connected for s in n.ctl.cfg.sites for d in s.devices]

            def late() -> list[str]:
                return [d for d in devices if (t := hub.latest.get(d)) is None or t.read_at < now]

            if not await _until(lambda: not late(), TELEMETRY_WAIT_S):
                log.warning(
                    "twin: the central has no telemetry of this poll from %d edge devices after %g s (%s); "
                    "the central's cycle goes on without it",
                    len(late()),
                    TELEMETRY_WAIT_S,
                    ", ".join(late()[:5]),
                )

    async def close(self) -> None:
        for n in self.edges:
            await n.close()
        for s in self._stores:
            s.close()
        self.broker.stop()
