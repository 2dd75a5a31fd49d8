"""The link between the control process and the API process of `sparcs run` (docs/architecture.md
"The API beside the control loop"): two local stream sockets, one each way, length-prefixed frames.

Control → API (pickled; both ends are this program, over a socket pair nobody else holds): the
:class:`~sparcs.controller.read_model.ControlSnapshot` with the rendered metrics after every poll,
dispatch and command, its plan only when it is a new one (a plan is most of a snapshot's bytes, at
1,000 devices megabytes of arrays, and changes once per dispatch, not per poll), its fleet state
only when it is a new one (once per poll, not again for the writes that follow) and with the
devices' telemetry in pickles of :data:`TELEMETRY_CHUNK` devices each; a heartbeat every
:data:`HEARTBEAT_S` while nothing else is sent; the answer to each command; after a reload of the
fleet file (by the API or SIGHUP), the running configuration, ahead of the next snapshot. API →
control (JSON, checked again on arrival): operator commands, a device's control switch, a reload,
and the counts of commands the API refused.

The control end (:class:`ApiLink`) never waits for the API process: snapshots are conflated (a
slow reader gets the latest, never a queue of old ones), the sender alone waits for the socket,
and a command is answered after the snapshot that shows it, so a client that reads after its
command was acknowledged sees it. The API end reads in a thread of its own (:func:`follow`), so a
new snapshot is taken in however busy the API's event loop is. Unpickling holds the interpreter
lock throughout (a state of 1,000 devices: ~25 ms, GIL-bound C code that never yields), so that
thread unpickles the telemetry one chunk at a time and yields between chunks: a request the event
loop is serving waits about a chunk, not a whole state (GET /api/v1/fleet's p99 at 200 requests/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import pickle
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ValidationError

from sparcs.config.schema import FleetConfig
from sparcs.controller.command_port import ControlUnavailable, switch_control
from sparcs.controller.commands import Command, CommandError, CommandRequest
from sparcs.controller.cycle import Controller
from sparcs.controller.device_control import UnknownDevice
from sparcs.controller.logging_setup import request_id
from sparcs.controller.operations import KIND
from sparcs.controller.plan import Plan
from sparcs.controller.read_model import ControlSnapshot, take_snapshot
from sparcs.controller.reload import Reloader
from sparcs.controller.state import FleetState
from sparcs.drivers.telemetry import Telemetry

if TYPE_CHECKING:
    from sparcs.controller.pool_server import PoolServer

log = logging.getLogger("sparcs.api_link")

HEADER = struct.Struct("!I")
_NOTHING = object()
WATCH_S = 0.25
"""How often the control end looks for a new poll, plan or setpoints to publish (s)."""
HEARTBEAT_S = 1.0
"""The control loop says it is alive at least this often (s)."""
LOOP_SILENT_S = 10.0
"""A control loop not heard from for this long is reported by /healthz and /readyz (s)."""
COMMAND_TIMEOUT_S = 10.0
"""How long the API waits for the control process to answer a command (s)."""
MAX_COMMAND_FRAME = 1 << 20
"""The largest frame the control end reads (a command is at most the API's body limit, 64 KiB)."""
REFUSED_FLUSH_S = 1.0
"""The API sends its counts of refused commands at most this often (s)."""
NOT_CONNECTED = "the control process is not connected; try again when /readyz answers 200"
TELEMETRY_CHUNK = 50
"""Devices per telemetry pickle sent to the API process: ~1 ms to unpickle, the longest the API's
event loop waits for the link's thread."""
REQUESTS: dict[str, type[BaseModel]] = {kind: cast(type[BaseModel], model) for model, kind in KIND.items()}


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, limit: int | None = None) -> bytes | None:
    """The next frame's payload, or None at the end of the stream. Raises ValueError over ``limit`` bytes."""
    try:
        (n,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if limit is not None and n > limit:
            raise ValueError(f"frame of {n} bytes over the limit of {limit}")
        return await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def read_frame_blocking(stream: io.BufferedIOBase) -> bytes | None:
    """The next frame's payload from a blocking stream, or None at its end."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    payload = stream.read(n)
    return payload if len(payload) == n else None


def split_state(state: FleetState | None) -> tuple[FleetState | None, list[bytes]]:
    """The fleet state without its telemetry, and the telemetry as pickles of :data:`TELEMETRY_CHUNK` devices."""
    if state is None:
        return None, []
    items = list(state.telemetry.items())
    chunks = [
        pickle.dumps(dict(items[i : i + TELEMETRY_CHUNK]), protocol=5) for i in range(0, len(items), TELEMETRY_CHUNK)
    ]
    return dataclasses.replace(state, telemetry={}), chunks


def join_state(bare: FleetState | None, chunks: list[bytes]) -> FleetState | None:
    """:func:`split_state` undone, yielding the interpreter lock after each chunk."""
    if bare is None:
        return None
    telemetry: dict[str, Telemetry] = {}
    for chunk in chunks:
        telemetry.update(pickle.loads(chunk))
        time.sleep(0)  # lets a thread that waits for the lock (the event loop's) take it
    return dataclasses.replace(bare, telemetry=telemetry)


def clock_offset_s(ctl: Controller) -> float:
    """The controller's clock minus the wall clock (s): 0 in production, the sim clock's lead in a demo."""
    return ctl.clock.now() - time.time()


# -- the control process's end ------------------------------------------------------------------


class ApiLink:
    """The control process's end: publishes the read model's snapshot, answers commands through the
    controller's :class:`~sparcs.controller.operations.Operations`, its device switches and its
    ``reloader`` (None: not started from a file)."""

    def __init__(self, ctl: Controller, send: socket.socket, receive: socket.socket, reloader: Reloader | None = None):
        self.ctl, self._send_sock, self._receive_sock, self._reloader = ctl, send, receive, reloader
        self._config_due = False
        self._latest: ControlSnapshot | None = None
        self._replies: deque[tuple[str, int, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._seen: tuple[object, ...] = ()
        self._plan_sent: object = _NOTHING  # the plan the API end holds
        self._state_sent: object = _NOTHING  # the fleet state the API end holds
        self._sent_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.pool: dict[str, Any] | None = None
        """How the API process serves the pool interface, once it serves: ``port`` and ``units``, or
        ``error``; None without a ``pool`` section."""

    async def start(self) -> None:
        _, writer = await asyncio.open_connection(sock=self._send_sock)
        reader, back = await asyncio.open_connection(sock=self._receive_sock)
        self._writers = [writer, back]
        self.publish()
        for coro in (self._send(writer), self._receive(reader), self._watch()):
            self._tasks.append(asyncio.create_task(coro))

    async def ready(self, timeout_s: float) -> bool:
        """Wait until the API process serves (True), or ``timeout_s`` passed (False)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self._ready.is_set()

    def publish(self) -> None:
        """Send the controller's state as it is now (conflated with any snapshot not yet sent)."""
        self._latest = take_snapshot(self.ctl)
        self._seen = self._marks()
        self._wake.set()

    def reloaded(self) -> None:
        """The fleet file was reloaded: send the running configuration ahead of the next snapshot."""
        self._config_due = True
        self.publish()

    def _marks(self) -> tuple[object, ...]:
        c = self.ctl
        return (c.state, c.plan, c.setpoints, c.last_poll_s, c.last_dispatch_s, c.store_ok)

    async def _watch(self) -> None:
        """Publish after every poll, plan and write; beat while nothing changes."""
        while True:
            await asyncio.sleep(WATCH_S)
            marks = self._marks()
            if len(marks) != len(self._seen) or any(a is not b for a, b in zip(marks, self._seen, strict=True)):
                self.publish()
            elif time.monotonic() - self._sent_at >= HEARTBEAT_S:
                self._wake.set()

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                offset = clock_offset_s(self.ctl)
                out = []
                if self._config_due:
                    self._config_due = False
                    out.append(pickle.dumps(("config", self.ctl.cfg), protocol=5))
                if self._latest is not None:
                    snap, self._latest = self._latest, None
                    if snap.plan is not self._plan_sent:
                        out.append(pickle.dumps(("plan", snap.plan), protocol=5))
                        self._plan_sent = snap.plan
                    if snap.state is not self._state_sent:
                        out.append(pickle.dumps(("state", *split_state(snap.state)), protocol=5))
                        self._state_sent = snap.state
                    bare = dataclasses.replace(snap, plan=None, state=None)  # the API end puts in those it holds
                    out.append(pickle.dumps(("snapshot", bare, self.ctl.metrics.render(), offset), protocol=5))
                elif not self._replies:
                    out.append(pickle.dumps(("alive", offset)))
                while self._replies:
                    out.append(pickle.dumps(self._replies.popleft()))
                writer.writelines(frame(p) for p in out)
                self._sent_at = time.monotonic()
                await writer.drain()  # only this task waits for a slow reader
        except ConnectionError:
            log.warning("the API process closed its link")

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                payload = await read_frame(reader, MAX_COMMAND_FRAME)
            except ValueError as exc:
                log.error("API link: %s; link closed", exc)
                return
            if payload is None:
                return
            try:
                msg = json.loads(payload)
                op = msg["op"]
            except (ValueError, KeyError, TypeError):
                log.error("API link: a frame that is not a command; ignored")
                continue
            if op == "ready":
                pool = msg.get("pool")
                self.pool = pool if isinstance(pool, dict) else None
                self._ready.set()
            elif op == "refused":
                try:
                    for kind, result, n in msg.get("counts", []):
                        self.ctl.operations.refused(str(kind), str(result), int(n))
                except (ValueError, TypeError):
                    log.error("API link: malformed counts of refused commands; ignored")
            else:
                answer = self._command(op, msg)
                self.publish()  # the snapshot that shows the command goes out before its answer
                self._replies.append(("reply", int(msg.get("id", 0)), answer))
                self._wake.set()

    def _command(self, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Do one operation; what it logs carries the id of the API request that sent it."""
        rid = msg.get("request")
        token = request_id.set(rid if isinstance(rid, str) else None)
        try:
            return self._operate(op, msg)
        finally:
            request_id.reset(token)

    def _operate(self, op: str, msg: dict[str, Any]) -> dict[str, Any]:
        ops = self.ctl.operations
        try:
            who = str(msg["who"])
            if op == "submit":
                request = cast(CommandRequest, REQUESTS[msg["kind"]].model_validate(msg["body"]))
                return {"command": ops.submit(request, who).as_dict()}
            if op == "cancel":
                return {"cancelled": ops.cancel(int(msg["command_id"]), who)}
            if op == "resume":
                return {"resumed": ops.resume(who)}
            if op == "dispatch_now":
                return {"requested": ops.dispatch_now(who)}
            if op == "switch_control":
                device_id = str(msg["device_id"])
                try:
                    return {"control": switch_control(self.ctl, device_id, bool(msg["controlled"]), who)}
                except UnknownDevice:
                    return {"unknown_device": device_id}
            if op == "reload":
                if self._reloader is None:
                    return {"report": None}
                report = self._reloader.reload(who)
                self._config_due = True  # the config goes out ahead of the snapshot that precedes the answer
                return {"report": report.as_dict()}
            return {"failed": f"unknown operation '{op}'"}
        except CommandError as exc:
            return {"error": {"field": exc.field, "message": exc.message}}
        except (KeyError, ValueError, TypeError, ValidationError) as exc:
            log.error("API link: malformed %s: %s", op, exc)
            return {"failed": f"malformed {op}"}
        except Exception:  # a bug or a store failure: logged here, the API answers 503
            log.exception("operator command %s failed", op)
            return {"failed": f"{op} failed in the control process; see its log"}

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        for w in self._writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        self._writers.clear()


# -- the API process's end ----------------------------------------------------------------------


EMPTY = ControlSnapshot(
    taken_s=0.0,
    state=None,
    plan=None,
    commands=(),
    guard_w={},
    setpoints={},
    last_poll_s=None,
    last_dispatch_s=None,
    store_ok=True,
)


class PublishedControl:
    """The API process's :class:`~sparcs.controller.read_model.ControlSource`: the latest snapshot and
    metrics the control process published, its clock, and whether its loop is heard from."""

    def __init__(self) -> None:
        self._snap = EMPTY
        self._plan: Plan | None = None
        self._state: FleetState | None = None
        self._metrics = b""
        self._offset_s = 0.0
        self._heard = time.monotonic()
        self.connected = False

    def receive(self, msg: tuple[Any, ...]) -> None:
        """Take a plan, a fleet state (joined), a snapshot (without its plan and state: the last ones
        sent are its) or a heartbeat from the control process."""
        if msg[0] == "plan":
            self._plan = msg[1]
        elif msg[0] == "state":
            self._state = msg[1]
        elif msg[0] == "snapshot":
            _, snap, self._metrics, self._offset_s = msg
            self._snap = dataclasses.replace(snap, plan=self._plan, state=self._state)
        elif msg[0] == "alive":
            self._offset_s = msg[1]
        self._heard = time.monotonic()
        self.connected = True

    def snapshot(self) -> ControlSnapshot:
        return self._snap

    def now(self) -> float:
        return time.time() + self._offset_s

    def metrics_text(self) -> bytes:
        return self._metrics

    def loop_problems(self) -> list[str]:
        if not self.connected:
            return ["control process: not connected"]
        silent = time.monotonic() - self._heard
        if silent > LOOP_SILENT_S:
            return [f"control loop: not heard from for {silent:.0f} s"]
        return []


class RemoteCommands:
    """The API process's :class:`~sparcs.controller.command_port.CommandPort`: each command goes to the
    control process and its answer comes back (or :class:`ControlUnavailable` after
    :data:`COMMAND_TIMEOUT_S`)."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._refused: Counter[tuple[str, str]] = Counter()
        self._flush: asyncio.TimerHandle | None = None
        self.connected = True

    def _send(self, msg: dict[str, Any]) -> None:
        self._writer.write(frame(json.dumps(msg).encode()))

    def serving(self, pool: PoolServer | str | None = None) -> None:
        """Tell the control process that the API serves, and how the pool interface does: its port
        and units, or why it does not listen (None: there is no ``pool`` section)."""
        msg: dict[str, Any] = {"op": "ready"}
        if isinstance(pool, str):
            msg["pool"] = {"error": pool}
        elif pool is not None:
            msg["pool"] = {"port": pool.port, "units": sorted(pool.images)}
        self._send(msg)

    async def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not self.connected:
            raise ControlUnavailable(NOT_CONNECTED)
        self._next += 1
        msg["id"] = self._next
        msg["request"] = request_id.get()  # the control process logs under the API request's id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = fut
        try:
            self._send(msg)
            await self._writer.drain()
            answer = await asyncio.wait_for(fut, COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise ControlUnavailable(
                f"the control process did not answer within {COMMAND_TIMEOUT_S:g} s; the command may still "
                "take effect: check GET /api/v1/commands and /api/v1/audit before sending it again"
            ) from None
        except ConnectionError:
            raise ControlUnavailable(NOT_CONNECTED) from None
        finally:
            self._pending.pop(msg["id"], None)
        if "error" in answer:
            raise CommandError(answer["error"]["field"], answer["error"]["message"])
        if "failed" in answer:
            raise ControlUnavailable(answer["failed"])
        if "unknown_device" in answer:
            raise UnknownDevice(answer["unknown_device"])
        return answer

    def answer(self, call_id: int, payload: dict[str, Any]) -> None:
        fut = self._pending.get(call_id)
        if fut is not None and not fut.done():
            fut.set_result(payload)

    def disconnected(self) -> None:
        self.connected = False
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ControlUnavailable("the control process went away before it answered"))

    async def submit(self, request: CommandRequest, who: str) -> Command:
        body = request.model_dump(mode="json")
        answer = await self._call({"op": "submit", "kind": KIND[type(request)], "body": body, "who": who})
        return Command(**answer["command"])

    async def cancel(self, command_id: int, who: str) -> list[int] | None:
        answer = await self._call({"op": "cancel", "command_id": command_id, "who": who})
        cancelled: list[int] | None = answer["cancelled"]
        return cancelled

    async def resume(self, who: str) -> list[int]:
        resumed: list[int] = (await self._call({"op": "resume", "who": who}))["resumed"]
        return resumed

    async def dispatch_now(self, who: str) -> bool:
        return bool((await self._call({"op": "dispatch_now", "who": who}))["requested"])

    async def switch_control(self, device_id: str, controlled: bool, who: str) -> dict[str, Any]:
        msg = {"op": "switch_control", "device_id": device_id, "controlled": controlled, "who": who}
        control: dict[str, Any] = (await self._call(msg))["control"]
        return control

    async def reload(self, who: str) -> dict[str, Any] | None:
        report: dict[str, Any] | None = (await self._call({"op": "reload", "who": who}))["report"]
        return report

    def refused(self, kind: str, result: str) -> None:
        """Count a refused command; the counts go to the control process within :data:`REFUSED_FLUSH_S`."""
        self._refused[(kind, result)] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(REFUSED_FLUSH_S, self._send_refused)

    def _send_refused(self) -> None:
        self._flush = None
        counts = [[k, r, n] for (k, r), n in self._refused.items()]
        self._refused.clear()
        if counts and self.connected:
            self._send({"op": "refused", "counts": counts})


def follow(
    sock: socket.socket,
    source: PublishedControl,
    answer: Callable[[int, dict[str, Any]], None],
    closed: Callable[[], None],
    configure: Callable[[FleetConfig], None],
) -> None:
    """Apply what the control process sends until it closes the link (run in a thread of its own).

    ``answer(call_id, payload)`` hands a command's answer to the event loop (thread-safely); a
    snapshot is taken in before the answer that follows it. ``configure(cfg)`` hands a reloaded
    configuration on (thread-safely too, before the answers that follow it). ``closed()`` when the
    link ends.
    """
    with sock.makefile("rb") as stream:
        while (payload := read_frame_blocking(stream)) is not None:
            msg = pickle.loads(payload)
            if msg[0] == "reply":
                answer(msg[1], msg[2])
            elif msg[0] == "config":
                configure(msg[1])
            elif msg[0] == "state":
                source.receive(("state", join_state(msg[1], msg[2])))
            else:
                source.receive(msg)
    source.connected = False
    closed()
