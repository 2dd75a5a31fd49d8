"""Wiring: one controller from a fleet config, a store and a clock, with the real drivers.

The one place that assembles poller, writer, planner and :class:`~sparcs.controller.cycle.Controller`:
`sparcs run` uses it with the production planner, the twin (:mod:`sparcs.twin.replay`) with its
strategy's planner. It imports no simulator: the devices behind ``cfg`` are real or simulated alike.

With a ``broker`` section the sites of its edges are reached over MQTT (docs/edges.md): the central's
poller and writer for them are an :class:`~sparcs.edge.central.EdgeHub`'s, beside the Modbus ones of
the directly polled sites; :func:`build_edge` builds the controller an edge runs for its sites.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sparcs.config.schema import FleetConfig
from sparcs.controller.cycle import Clock, Controller, Planner, Poller, Writer
from sparcs.controller.device_control import DeviceControl
from sparcs.controller.metrics import Metrics
from sparcs.controller.planning import LOAD_HISTORY_S, FleetPlanner
from sparcs.controller.prices import PriceSource
from sparcs.controller.store import Store
from sparcs.controller.weather import weather_service
from sparcs.drivers.poller import FleetPoller
from sparcs.drivers.writer import SetpointWriter
from sparcs.edge.central import EdgeHub
from sparcs.edge.follow import FollowPlanner
from sparcs.edge.link import Credential, read_password
from sparcs.edge.node import AckingWriter, EdgeNode
from sparcs.edge.outbox import DB_FILE, Outbox
from sparcs.edge.transport import MixedPoller, MixedWriter
from sparcs.optimizer.solver import PlanningWorker


def build_controller(
    cfg: FleetConfig,
    store: Store,
    clock: Clock,
    *,
    planner: Planner | None = None,
    worker: PlanningWorker | None = None,
) -> Controller:
    """A controller for ``cfg``'s devices on ``clock``.

    ``planner``: the planner to use; default the production planner
    (:class:`~sparcs.controller.planning.FleetPlanner` with ``worker``, whose solver process starts on
    the first dispatch unless started before, and the weather forecast ``cfg.forecast`` names).
    Give one of the two, not both.
    """
    if planner is not None and worker is not None:
        raise ValueError("give a planner or a worker for the production planner, not both")
    edge_sites = {sid for e in cfg.broker.edges for sid in e.sites} if cfg.broker is not None else set()
    direct = [(s, d) for s, d in cfg.devices() if s.id not in edge_sites]
    modbus = FleetPoller(direct, cfg.dispatch, clock.now)
    device_control = DeviceControl(store, cfg, clock.now)
    poller: Poller = modbus
    writer: Writer = SetpointWriter(modbus, cfg.dispatch, clock.now, monitor_only=device_control.monitor_only)
    prices = PriceSource(cfg.market)  # one source for the planner and the export guard
    hub = None
    if cfg.broker is not None and edge_sites:
        b = cfg.broker
        cred = Credential(b.username, read_password(b.password_file, "broker.password_file"), f"sparcs-{b.username}")
        hub = EdgeHub(cfg, store, clock, cred)
        edge_devices = {d.id for s, d in cfg.devices() if s.id in edge_sites}
        poller = MixedPoller(modbus, hub.poller, edge_devices)
        writer = MixedWriter(writer, hub.writer, edge_devices)
    ctl = Controller(
        cfg,
        store,
        clock,
        poller=poller,
        writer=writer,
        planner=planner
        if planner is not None
        else FleetPlanner(
            cfg,
            worker,
            weather=weather_service(cfg),
            prices=prices,
            load_history=partial(store.load_quarters, clock.now() - LOAD_HISTORY_S, clock.now()),
        ),
        device_control=device_control,
        metrics=Metrics(),
        prices=prices,
        edge_sites=frozenset(edge_sites),
    )
    if hub is not None:
        hub.attach(ctl)
    return ctl


def build_edge(
    cfg: FleetConfig, edge_id: str, store: Store, clock: Clock, data_dir: Path, *, sites: list[str] | None = None
) -> EdgeNode:
    """The edge ``edge_id`` of ``cfg.broker``: the production controller of its sites (or of ``sites``,
    a part of them) with the Modbus poller and writer, following the central's plans.

    Raises KeyError naming an unknown edge, ValueError naming a site that is not the edge's, and
    :class:`~sparcs.edge.link.CredentialError` for an unreadable password file.
    """
    if cfg.broker is None:
        raise ValueError("the fleet file has no broker section: an edge needs one (docs/edges.md)")
    edge = cfg.broker.edge(edge_id)
    chosen = sites or edge.sites
    for sid in chosen:
        if sid not in edge.sites:
            raise ValueError(f"site '{sid}' is not behind edge '{edge_id}' (broker.edges lists its sites)")
    local = cfg.model_copy(update={"sites": [s for s in cfg.sites if s.id in chosen]})
    cred = Credential(edge.id, read_password(edge.password_file, f"broker.edges[{edge.id}].password_file"), edge.id)
    modbus = FleetPoller(local.devices(), local.dispatch, clock.now)
    device_control = DeviceControl(store, local, clock.now)
    writer = AckingWriter(SetpointWriter(modbus, local.dispatch, clock.now, monitor_only=device_control.monitor_only))
    planner = FollowPlanner()
    ctl = Controller(
        local,
        store,
        clock,
        poller=modbus,
        writer=writer,
        planner=planner,
        device_control=device_control,
        metrics=Metrics(),
    )
    return EdgeNode(ctl, planner, writer, Outbox(data_dir / DB_FILE), cfg.broker, edge.id, cred)
