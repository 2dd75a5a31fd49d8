"""A small asyncio Modbus TCP proxy in front of each endpoint: the timing faults live here.

pymodbus answers under the latest request's transaction id once its SimDevice hook returns, so a
hook must never sleep. Timing faults therefore act on whole
frames here, before the pymodbus server sees them:

- ``offline`` / a rebooting device on its own port: the listening socket is closed and open
  connections are dropped (connection refused); behind a shared gateway port the gateway answers
  that unit with exception 11 (gateway target failed to respond), as real gateways do;
- ``no_reply``: the request is swallowed and the client times out (only that unit on a gateway);
- ``slow``: the reply is held back for ``delay_s`` wall-clock seconds;
- exception codes pymodbus cannot return (e.g. 9) are answered here.

Frames are parsed by their MBAP header (transaction, protocol, length, unit) and forwarded, one at
a time per client connection, over a connection of the proxy's own to the pymodbus server.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

MBAP = struct.Struct(">HHHB")


@dataclass(frozen=True)
class FrameAction:
    """What to do with one request: forward (after ``delay_s``), drop, or answer an exception."""

    drop: bool = False
    delay_s: float = 0.0
    exception: int | None = None


FORWARD = FrameAction()


def exception_frame(tid: int, unit: int, function_code: int, code: int) -> bytes:
    return MBAP.pack(tid, 0, 3, unit) + bytes([(function_code | 0x80) & 0xFF, code & 0xFF])


class FaultProxy:
    """Listens on ``(host, port)`` and forwards Modbus TCP frames to ``backend_port``."""

    def __init__(
        self,
        host: str,
        port: int,
        backend_port: int,
        action_for: Callable[[int], FrameAction],
        pdu_action: Callable[[int, bytes], FrameAction | None] | None = None,
    ) -> None:
        """``action_for(unit)`` decides per unit; ``pdu_action(unit, pdu)``, when given and not None,
        per request (e.g. a device silent at one address range: ``sparcs scan`` must move on)."""
        self.host = host
        self.port = port
        self.backend_port = backend_port
        self.action_for = action_for
        self.pdu_action = pdu_action
        self._server: asyncio.Server | None = None
        self._listening = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._handlers: set[asyncio.Task] = set()

    @property
    def is_open(self) -> bool:
        return self._listening

    def _bind(self) -> socket.socket:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when proto says TCP
        # (else Nagle with delayed ACK holds small replies on a kept-alive connection back ~40 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(256)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def open(self) -> None:
        """Bind (port 0 = a free port, then kept) and start accepting."""
        if not self._listening:
            self._listening = True
            self._server = await asyncio.start_server(self._serve, sock=self._bind())

    def reopen(self) -> None:
        """Listen again at once: the socket binds now, the OS queues connections until accept runs."""
        if self._listening:
            return
        sock = self._bind()
        self._listening = True
        task = asyncio.get_running_loop().create_task(asyncio.start_server(self._serve, sock=sock))
        task.add_done_callback(self._opened)
        self._tasks.add(task)

    def _opened(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        server = task.result()
        if self._listening:
            self._server = server
        else:  # closed again before the accept loop started
            server.close()

    def close_port(self) -> None:
        """Stop listening and drop every open connection (a device that went away)."""
        self._listening = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        """Close the port and end every connection handler before returning, so none is left pending."""
        self.close_port()
        pending = list(self._tasks) + list(self._handlers)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, asyncio.Server):  # a reopen that finished before it was cancelled
                result.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                header = await reader.readexactly(MBAP.size)
                tid, _pid, length, unit = MBAP.unpack(header)
                if length < 2 or length > 260:
                    break
                pdu = await reader.readexactly(length - 1)
                by_pdu = self.pdu_action(unit, pdu) if self.pdu_action is not None else None
                action = by_pdu if by_pdu is not None else self.action_for(unit)
                if action.drop:
                    continue
                if action.delay_s > 0:
                    await asyncio.sleep(action.delay_s)
                if action.exception is not None:
                    writer.write(exception_frame(tid, unit, pdu[0], action.exception))
                    await writer.drain()
                    continue
                if backend is None:
                    backend = await asyncio.open_connection("127.0.0.1", self.backend_port)
                b_reader, b_writer = backend
                b_writer.write(header + pdu)
                reply_header = await b_reader.readexactly(MBAP.size)
                reply = await b_reader.readexactly(MBAP.unpack(reply_header)[2] - 1)
                writer.write(reply_header + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only stop() or loop shutdown cancel a handler. Ending normally matters: asyncio's stream
            # callback (Python 3.11) logs a cancelled handler task as an error with a traceback.
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            if backend is not None:
                backend[1].close()
