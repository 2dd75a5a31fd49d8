"""`sparcs edge`: one edge gateway: the controller of its sites on the broker (docs/edges.md). Stops
cleanly on Ctrl-C or SIGTERM, saying offline to the central."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from sparcs.config.schema import FleetConfig
from sparcs.controller.cycle import WallClock
from sparcs.controller.heap import settle_heap
from sparcs.controller.store import Store
from sparcs.edge.link import CredentialError
from sparcs.factory import build_edge


class EdgeRunError(Exception):
    """A start-up problem the user can fix; one line, no traceback."""


def choose_edge(cfg: FleetConfig, edge_id: str | None, sites: list[str]) -> str:
    """The edge to run: ``edge_id``, else the one behind ``sites``, else the fleet's only edge."""
    if cfg.broker is None or not cfg.broker.edges:
        raise EdgeRunError("the fleet file has no broker.edges: an edge needs its entry there (docs/edges.md)")
    if edge_id is not None:
        if edge_id not in {e.id for e in cfg.broker.edges}:
            raise EdgeRunError(f"--edge: unknown edge '{edge_id}'; broker.edges lists the edges")
        return edge_id
    owners = {cfg.broker.edge_of(s).id if cfg.broker.edge_of(s) else None for s in sites}  # type: ignore[union-attr]
    if None in owners:
        bad = [s for s in sites if cfg.broker.edge_of(s) is None]
        raise EdgeRunError(f"--site: site '{bad[0]}' is not behind any edge in broker.edges")
    if len(owners) == 1:
        return str(owners.pop())
    if len(owners) > 1:
        raise EdgeRunError(f"--site: the sites are behind different edges ({', '.join(sorted(map(str, owners)))})")
    if len(cfg.broker.edges) == 1:
        return cfg.broker.edges[0].id
    raise EdgeRunError("several edges in broker.edges: name one with --edge or give its sites with --site")


async def run_edge(
    cfg: FleetConfig, edge_id: str, sites: list[str], data_dir: Path, echo: Callable[[str], None]
) -> None:
    """Run the edge until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    folder = data_dir / f"edge-{edge_id}"
    store = Store(data_dir=folder)
    try:
        try:
            node = build_edge(cfg, edge_id, store, WallClock(), folder, sites=sites or None)
        except (ValueError, KeyError, CredentialError) as exc:
            raise EdgeRunError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
        assert cfg.broker is not None
        echo(f"SPARCS edge {edge_id}: sites {', '.join(node.sites)}; broker {cfg.broker.host}:{cfg.broker.port}")
        echo("Stop with Ctrl-C.")
        settle_heap()  # the sites' configuration and drivers are held for good (sparcs.controller.heap)
        try:
            await node.run(stop)
        finally:
            await node.close()
    finally:
        store.close()
        echo("stopped")
