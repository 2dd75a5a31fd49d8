"""`sparcs run`: the controller, its scheduler and the API in one process; with a `simulation` section
also the simulated fleet (real time, :mod:`sparcs.demo`), so the demo runs on one machine. Stops cleanly
on Ctrl-C or SIGTERM; reloads the fleet file on SIGHUP (docs/operations.md "Reload").

Against real devices (no `simulation` section) nothing here imports the simulators: :mod:`sparcs.demo`
is imported only when the config has that section.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sparcs.config.schema import FleetConfig, LoggingConfig
from sparcs.controller.api import create_app
from sparcs.controller.api_server import TlsError, check_tls, server_config
from sparcs.controller.auth import create_token
from sparcs.controller.cycle import Clock, WallClock
from sparcs.controller.migrate import MigrationError
from sparcs.controller.planning import PriceFileError
from sparcs.controller.pool_server import PoolServer
from sparcs.controller.reload import Reloader
from sparcs.controller.scheduler import ControlScheduler
from sparcs.controller.store import Store
from sparcs.drivers.checks import check_devices
from sparcs.factory import build_controller

if TYPE_CHECKING:
    from sparcs.demo import DemoFleet

DEMO_TOKEN_NAME = "demo-operator"
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


async def run(
    cfg: FleetConfig,
    *,
    host: str,
    port: int,
    data_dir: Path,
    echo: Callable[[str], None],
    config_path: Path | None = None,
    on_logging: Callable[[LoggingConfig], None] | None = None,
    log_level: str = "warning",
    migrate_schema: bool = True,
) -> None:
    """Run until SIGINT or SIGTERM, then stop the scheduler, the API, the devices' connections and the fleet.

    An older store is upgraded first (``migrate_schema``), else refused naming `sparcs db upgrade`.
    ``config_path``: the fleet file, reloaded on SIGHUP and POST /api/v1/admin/reload
    (:mod:`sparcs.controller.reload`; ``on_logging`` applies a changed ``logging`` section);
    ``log_level``: uvicorn's."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(_sig: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    # From the start, Ctrl-C and SIGTERM only ask to stop; the clean-up below always runs. These
    # handlers are also in place before uvicorn installs its own, so that when uvicorn re-raises the
    # signal after its shutdown, this handler (not Python's default) receives it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    reloader: Reloader | None = None

    def on_hangup(_sig: int, _frame: object) -> None:
        """SIGHUP reloads the fleet file once the controller runs (before that it is only logged)."""
        if reloader is None:
            log.warning("SIGHUP ignored: the controller is still starting, or was not started from a file")
        else:
            loop.call_soon_threadsafe(reloader.reload_on_signal)

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
    ctl = None
    server_task: asyncio.Task[None] | None = None
    pool: PoolServer | None = None
    try:
        devices = check_devices(cfg)  # a wrong-kind profile is a line naming the device, not a traceback
        if devices.problems:
            raise RunError("\n".join(devices.problems))
        for note in devices.notes:
            echo(note)
        clock: Clock
        if cfg.simulation is not None:
            from sparcs.demo import start_demo_fleet  # the simulators: only for the demo

            try:
                fleet = await start_demo_fleet(cfg)
            except OSError as exc:
                raise RunError(str(exc)) from None
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
        try:
            server = uvicorn.Server(server_config(create_app(ctl, reloader), cfg.api, log_level))
        except TlsError as exc:
            sock.close()
            raise RunError(str(exc)) from None
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        sched = ControlScheduler(ctl)
        sched.start()
        if cfg.pool is not None:  # the SunSpec pool interface (docs/interfaces.md)
            pool = PoolServer(ctl, cfg.pool)
            try:
                pool_port = await pool.start()
            except (OSError, RuntimeError) as exc:
                raise RunError(
                    f"pool: cannot listen on {cfg.pool.host}:{cfg.pool.port}: {exc}; change pool.port"
                ) from None
            echo(f"SunSpec pool interface: {cfg.pool.host}:{pool_port}, units {sorted(pool.images)}")
        scheme = "https" if cfg.api.tls_cert_file is not None else "http"
        url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound_port}"
        n_dev = sum(len(s.devices) for s in cfg.sites)
        echo(f"SPARCS controller: {url}/  (dashboard; API: {url}/api/v1, docs: {url}/docs, metrics: {url}/metrics)")
        echo(f"fleet: {len(cfg.sites)} sites, {n_dev} devices" + (" (simulated, real time)" if fleet else ""))
        if fleet is not None and fleet.control is not None:
            echo(f"simulator control channel: {fleet.control.url}")
        if fleet is not None:
            token = demo_token(store)
            echo(f"demo operator token: {token}")
            echo(f'  curl -H "Authorization: Bearer {token}" {url}/api/v1/fleet')
        echo("Stop with Ctrl-C.")
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({server_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        server.should_exit = True
        await server_task
    finally:
        if pool is not None:
            await pool.stop()
        if sched is not None:
            await sched.stop()
        if server_task is not None and not server_task.done():
            server_task.cancel()
        if ctl is not None:
            await ctl.close()
        if fleet is not None:
            await fleet.stop()
        store.close()
        echo("stopped")
