"""`sparcs run`: the controller and its scheduler in this process (the control process), the operator
API and the SunSpec pool interface in a niced process of its own (:mod:`sparcs.controller.api_process`)
that reads the snapshot this one publishes and forwards commands to it; with a `simulation`
section also the simulated fleet in a third process (real time, :mod:`sparcs.demo`), so the demo
runs on one machine. A slow client,
a large answer or a burst of API or pool requests never delays polling, the export guard or the writer
(docs/architecture.md "The API beside the control loop"); an API process that ends is started again
while control goes on. Stops cleanly on Ctrl-C or SIGTERM; reloads the fleet file on SIGHUP
(docs/operations.md "Reload").

Against real devices (no `simulation` section) nothing here imports the simulators: :mod:`sparcs.demo`
is imported only when the config has that section.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sparcs.config.schema import FleetConfig, LoggingConfig
from sparcs.controller.api_link import ApiLink
from sparcs.controller.api_process import ApiProcess
from sparcs.controller.api_server import TlsError, check_tls
from sparcs.controller.auth import create_token
from sparcs.controller.cycle import Clock, Controller, WallClock
from sparcs.controller.heap import settle_heap
from sparcs.controller.migrate import MigrationError
from sparcs.controller.planning import PriceFileError
from sparcs.controller.reload import Reloader
from sparcs.controller.scheduler import ControlScheduler
from sparcs.controller.store import Store
from sparcs.drivers.checks import check_devices
from sparcs.factory import build_controller

if TYPE_CHECKING:
    from sparcs.demo import DemoFleet

DEMO_TOKEN_NAME = "demo-operator"
API_START_TIMEOUT_S = 60.0
"""How long `sparcs run` waits for its API process to serve before it starts the control loop anyway (s)."""
API_WATCH_S = 1.0
"""How often `sparcs run` checks that its API process runs (s); one that ended is started again."""
log = logging.getLogger("sparcs.run")


class RunError(Exception):
    """A start-up problem the user can fix (a port in use, an unreadable store); one line, no traceback."""


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket. Made with ``IPPROTO_TCP`` so that asyncio sets TCP_NODELAY on every
    connection it accepts (it does so only for sockets of that protocol): without it each keep-alive
    response waits ~40 ms for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunError(f"api: cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def demo_token(store: Store) -> str:
    """A fresh operator token for the demo (the previous demo token is revoked)."""
    store.revoke_token(DEMO_TOKEN_NAME)
    return create_token(store, DEMO_TOKEN_NAME, "operator", time.time())


async def _start_api(
    api: ApiProcess, ctl: Controller, reloader: Reloader | None, on_signal: Callable[[int, object], None]
) -> ApiLink:
    """Start the API process with Ctrl-C ignored (a disposition it inherits, like the solver's) and link it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        send, receive = api.start()
    finally:
        signal.signal(signal.SIGINT, on_signal)
    link = ApiLink(ctl, send, receive, reloader)
    await link.start()
    if not await link.ready(API_START_TIMEOUT_S):
        log.warning("the API process has not started serving after %.0f s", API_START_TIMEOUT_S)
    return link


async def run(
    cfg: FleetConfig,
    *,
    host: str,
    port: int,
    data_dir: Path,
    echo: Callable[[str], None],
    config_path: Path | None = None,
    on_logging: Callable[[LoggingConfig], None] | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    migrate_schema: bool = True,
) -> None:
    """Run until SIGINT or SIGTERM, then stop the scheduler, the API, the devices' connections and the fleet.

    An older store is upgraded first (``migrate_schema``), else refused naming `sparcs db upgrade`.
    ``config_path``: the fleet file, reloaded on SIGHUP and POST /api/v1/admin/reload
    (:mod:`sparcs.controller.reload`; ``on_logging`` applies a changed ``logging`` section);
    ``log_level``, ``log_format``: the command line's options for the API process's log (uvicorn's
    records included; None: the fleet file's ``logging`` section, also after a reload)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(_sig: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    # From the start, Ctrl-C and SIGTERM only ask to stop; the clean-up below always runs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    reloader: Reloader | None = None

    def on_hangup(_sig: int, _frame: object) -> None:
        """SIGHUP reloads the fleet file once the controller runs (before that it is only logged)."""
        if reloader is None:
            log.warning("SIGHUP ignored: the controller is still starting, or was not started from a file")
        else:
            loop.call_soon_threadsafe(reload_on_signal)

    def reload_on_signal() -> None:
        """Reload, then send the running configuration to the API process (it holds a copy)."""
        if reloader is not None:
            reloader.reload_on_signal()
        if link is not None:
            link.reloaded()

    signal.signal(signal.SIGHUP, on_hangup)

    try:
        check_tls(cfg.api)  # before anything starts: a wrong certificate path is one line
    except TlsError as exc:
        raise RunError(str(exc)) from None
    try:
        store = Store(cfg.storage.url, data_dir=data_dir, migrate_schema=migrate_schema)
    except MigrationError as exc:
        raise RunError(f"store: {exc}") from None
    except SQLAlchemyError as exc:
        where = make_url(cfg.storage.url).render_as_string(hide_password=True) if cfg.storage.url else data_dir
        raise RunError(f"store: cannot open {where}: {str(exc).splitlines()[0]}") from None
    fleet: DemoFleet | None = None
    sched: ControlScheduler | None = None
    ctl: Controller | None = None
    api: ApiProcess | None = None
    link: ApiLink | None = None
    sock: socket.socket | None = None
    try:
        devices = check_devices(cfg)  # a wrong-kind profile is a line naming the device, not a traceback
        if devices.problems:
            raise RunError("\n".join(devices.problems))
        for note in devices.notes:
            echo(note)
        clock: Clock
        if cfg.simulation is not None:
            from sparcs.demo import start_demo_fleet  # the simulators: only for the demo

            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the fleet process ignores Ctrl-C from the start
            try:
                fleet = await start_demo_fleet(cfg)
            except OSError as exc:
                raise RunError(str(exc)) from None
            finally:
                signal.signal(signal.SIGINT, on_signal)
            cfg, clock = fleet.config, fleet.clock
        else:
            clock = WallClock()
        try:
            ctl = build_controller(cfg, store, clock)
        except PriceFileError as exc:
            raise RunError(str(exc)) from None
        sock = _listen(host, port)
        bound_port = sock.getsockname()[1]
        # The solver process is started with Ctrl-C ignored, a disposition it inherits: a Ctrl-C in
        # the terminal reaches the whole process group, and this process stops the solver itself.
        # (A Ctrl-C during these seconds of start-up is ignored here too.)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            await asyncio.to_thread(ctl.planner.start)
        finally:
            signal.signal(signal.SIGINT, on_signal)
        reloader = Reloader(ctl, config_path, on_logging) if config_path is not None else None
        api = ApiProcess(cfg, data_dir, sock, log_level, log_format)
        link = await _start_api(api, ctl, reloader, on_signal)
        settle_heap()  # the fleet is held for good from here (sparcs.controller.heap)
        sched = ControlScheduler(ctl)
        sched.start()
        if cfg.pool is not None and link.pool is not None:  # served by the API process (docs/interfaces.md)
            if "error" in link.pool:
                raise RunError(str(link.pool["error"]))
            echo(f"SunSpec pool interface: {cfg.pool.host}:{link.pool['port']}, units {link.pool['units']}")
        scheme = "https" if cfg.api.tls_cert_file is not None else "http"
        url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound_port}"
        n_dev = sum(len(s.devices) for s in cfg.sites)
        echo(f"SPARCS controller: {url}/  (dashboard; API: {url}/api/v1, docs: {url}/docs, metrics: {url}/metrics)")
        echo(f"fleet: {len(cfg.sites)} sites, {n_dev} devices" + (" (simulated, real time)" if fleet else ""))
        if fleet is not None and fleet.control_url is not None:
            echo(f"simulator control channel: {fleet.control_url}")
        if fleet is not None:
            token = demo_token(store)
            echo(f"demo operator token: {token}")
            echo(f'  curl -H "Authorization: Bearer {token}" {url}/api/v1/fleet')
        echo("Stop with Ctrl-C.")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), API_WATCH_S)
            if not stop.is_set() and not api.alive():  # control goes on; the API comes back
                log.error("the API process ended (exit code %s); starting it again", api.exitcode())
                await link.close()
                link = await _start_api(api, ctl, reloader, on_signal)
    finally:
        if sched is not None:
            await sched.stop()
        if link is not None:
            await link.close()  # the API process stops when its link closes
        if api is not None:
            await api.stop()
        if sock is not None:
            sock.close()
        if ctl is not None:
            await ctl.close()
        if fleet is not None:
            await fleet.stop()
        store.close()
        echo("stopped")
