"""The operator API in a process of its own, as `sparcs run` serves it (docs/architecture.md "The API
beside the control loop"), with the SunSpec pool interface (:mod:`sparcs.controller.pool_server`,
``pool`` section), the other outside way in.

:class:`ApiProcess` starts a child process (niced by ``api.nice``) that serves
:func:`~sparcs.controller.api.build_app` on the listening socket it is handed, and the pool
interface on its own port, both over the same read model and command port: reads from the
snapshot the control process publishes over the link (:mod:`sparcs.controller.api_link`),
history, alarms, audit and tokens from its own connection to the store, commands forwarded to the
control process. So a slow client, a large answer or a burst of requests costs the API process's
CPU and memory, never the control loop's time. The child stops when the link closes (the control
process stopped or died). uvicorn is configured by :func:`~sparcs.controller.api_server.server_config`
(TLS, log, connection bounds), as for an API in the control process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from sparcs.config.schema import FleetConfig, PoolConfig
from sparcs.controller.api import build_app
from sparcs.controller.api_link import PublishedControl, RemoteCommands, follow
from sparcs.controller.api_server import STOP_TIMEOUT_S, server_config
from sparcs.controller.auth import TokenBook
from sparcs.controller.heap import settle_heap
from sparcs.controller.logging_setup import configure_logging
from sparcs.controller.pool_server import PoolServer
from sparcs.controller.read_model import ControllerView
from sparcs.controller.store import Store

log = logging.getLogger("sparcs.api_process")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # the control process stops this one
        yield


def configure_log(cfg: FleetConfig, log_level: str | None, log_format: str | None) -> None:
    """The API process's log as the control process's: the command line's ``--log-level`` and
    ``--log-format`` (None: not given) over the fleet file's ``logging`` section, at start and after
    every reload (uvicorn's records follow the root logger's level)."""
    configure_logging(log_level or cfg.logging.level, log_format or cfg.logging.format)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Launch:
    """What the API process is started with: the running configuration, the data directory, the
    listening socket, its ends of the link (``down`` brings the control process's snapshots and
    answers, ``up`` takes commands to it), and the command line's ``--log-level`` and
    ``--log-format`` (None: not given)."""

    cfg: FleetConfig
    data_dir: Path
    listen: socket.socket
    down: socket.socket
    up: socket.socket
    log_level: str | None
    log_format: str | None


async def _serve(launch: Launch) -> None:
    cfg, data_dir, listen, down, up = launch.cfg, launch.data_dir, launch.listen, launch.down, launch.up
    log_level, log_format = launch.log_level, launch.log_format
    store = Store(cfg.storage.url, data_dir=data_dir, migrate_schema=False)  # the control process migrated it
    pool: PoolServer | str | None = None
    try:
        loop = asyncio.get_running_loop()
        _, writer = await asyncio.open_connection(sock=up)
        source = PublishedControl()
        commands = RemoteCommands(writer)
        view = ControllerView(cfg, store, source)
        app = build_app(view, commands, TokenBook(store, source.now), cfg.api)
        server = _Server(server_config(app, cfg.api))
        closed = asyncio.Event()

        def answer(call_id: int, payload: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(commands.answer, call_id, payload)

        def reconfigure(new: FleetConfig) -> None:
            view.reconfigure(new)
            configure_log(new, log_level, log_format)
            settle_heap()

        def configure(new: FleetConfig) -> None:  # a reload in the control process
            loop.call_soon_threadsafe(reconfigure, new)

        def gone() -> None:
            loop.call_soon_threadsafe(commands.disconnected)
            loop.call_soon_threadsafe(closed.set)

        threading.Thread(
            target=follow, args=(down, source, answer, gone, configure), name="api-link", daemon=True
        ).start()
        serving = asyncio.create_task(server.serve(sockets=[listen]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            pool = await _start_pool(view, commands, cfg.pool)
            settle_heap()
            commands.serving(pool)
        waiting = asyncio.create_task(closed.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        server.should_exit = True  # the link closed: the control process stopped or died
        await serving
    finally:
        if isinstance(pool, PoolServer):
            await pool.stop()
        store.close()


async def _start_pool(
    view: ControllerView, commands: RemoteCommands, cfg: PoolConfig | None
) -> PoolServer | str | None:
    """The SunSpec pool interface (``pool`` section; None without one), served beside the API;
    what stops it from listening as one line naming the field to change."""
    if cfg is None:
        return None
    pool = PoolServer(view, commands, cfg)
    try:
        await pool.start()
    except (OSError, RuntimeError) as exc:
        return f"pool: cannot listen on {cfg.host}:{cfg.port}: {exc}; change pool.port"
    return pool


def api_main(launch: Launch) -> None:
    """The API process: niced, deaf to Ctrl-C and SIGHUP (the control process stops it by closing
    the link, and reloads for it); its log has the control process's level and format
    (:func:`configure_log`), also after a reload that changes them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.nice(launch.cfg.api.nice)
    configure_log(launch.cfg, launch.log_level, launch.log_format)
    asyncio.run(_serve(launch))


class ApiProcess:
    """The control process's handle on its API process; ``log_level``, ``log_format``: the command
    line's options (None: the fleet file's ``logging`` section, also after a reload)."""

    def __init__(
        self,
        cfg: FleetConfig,
        data_dir: Path,
        listen: socket.socket,
        log_level: str | None = None,
        log_format: str | None = None,
    ):
        self.cfg, self.data_dir, self.listen = cfg, data_dir, listen
        self.log_level, self.log_format = log_level, log_format
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> tuple[socket.socket, socket.socket]:
        """Start the API process; returns the control process's ends of the link: (send, receive)."""
        send, down = socket.socketpair()
        receive, up = socket.socketpair()
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(
            target=api_main,
            args=(Launch(self.cfg, self.data_dir, self.listen, down, up, self.log_level, self.log_format),),
            name="sparcs-api",
            daemon=False,
        )
        self.process.start()
        down.close()
        up.close()
        return send, receive

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def exitcode(self) -> int | None:
        """The exit code of the API process that ended (negative: the signal that ended it), else None."""
        return None if self.process is None else self.process.exitcode

    async def stop(self) -> None:
        """Wait for the API process to end (the link is closed first by the caller); terminate it if it does not."""
        p = self.process
        if p is None:
            return
        await asyncio.to_thread(p.join, STOP_TIMEOUT_S + 5.0)
        if p.is_alive():
            log.warning("the API process did not stop; terminating it")
            p.terminate()
            await asyncio.to_thread(p.join, 5.0)
        if p.is_alive():
            p.kill()
            await asyncio.to_thread(p.join)
        self.process = None
