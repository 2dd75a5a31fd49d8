"""The composition root keeps the simulators out of production: `sparcs run` against real devices and
the controller package never import ``sparcs.simulators`` (nor the controller the twin).

Each check runs in a fresh interpreter, so that what another test imported cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.controller.conftest import small_fleet_data

FORBIDDEN = ("sparcs.simulators", "sparcs.twin")


def fresh_interpreter(code: str, *args: str) -> dict:
    """Run ``code`` in a new Python; it prints one JSON object as its last line, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


PRODUCTION = """
import json, sys
from pathlib import Path

import sparcs.cli, sparcs.factory, sparcs.run
from sparcs.config.schema import validate_config
from sparcs.controller.cycle import WallClock
from sparcs.controller.store import Store

cfg = validate_config(json.loads(sys.argv[1]))
store = Store(cfg.storage.url, data_dir=Path(sys.argv[2]))
ctl = sparcs.factory.build_controller(cfg, store, WallClock())
store.close()
print(json.dumps({
    "controller": type(ctl).__name__,
    "devices": len(cfg.devices()),
    "loaded": sorted(m for m in sys.modules if m.startswith(("sparcs.simulators", "sparcs.twin", "sparcs.demo"))),
}))
"""


def test_the_production_path_does_not_import_the_simulators(tmp_path):
    data = small_fleet_data(2)
    del data["simulation"]  # real devices: nobody needs to answer, the controller is only built
    got = fresh_interpreter(PRODUCTION, json.dumps(data, default=str), str(tmp_path / "data"))
    assert got["controller"] == "Controller" and got["devices"] > 0
    assert got["loaded"] == []


CONTROLLER = """
import importlib, json, pkgutil, sys

import sparcs.controller

names = [m.name for m in pkgutil.walk_packages(sparcs.controller.__path__, "sparcs.controller.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "modules": names,
    "loaded": sorted(m for m in sys.modules if m.startswith(("sparcs.simulators", "sparcs.twin"))),
}))
"""


def test_no_controller_module_imports_the_simulators_or_the_twin():
    got = fresh_interpreter(CONTROLLER)
    assert {"sparcs.controller.cycle", "sparcs.controller.api", "sparcs.controller.dashboard"} <= set(got["modules"])
    assert got["loaded"] == []


@pytest.mark.parametrize("forbidden", FORBIDDEN)
def test_the_check_sees_an_import_of_the_simulators(forbidden):
    """The probe itself can fail: a module that imports a forbidden package shows up in the list."""
    code = CONTROLLER.replace("import sparcs.controller\n", f"import sparcs.controller\nimport {forbidden}\n")
    assert forbidden in fresh_interpreter(code)["loaded"]


async def test_the_api_socket_makes_asyncio_set_tcp_nodelay_on_every_connection():
    """Without TCP_NODELAY each keep-alive response waited ~40 ms for the client's delayed ACK."""
    import asyncio
    import socket

    from sparcs.run import _listen

    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    listening = _listen("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
    try:
        _reader, writer = await asyncio.open_connection(*listening.getsockname())
        assert await asyncio.wait_for(accepted, 5.0) == 1
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
