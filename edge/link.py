"""The MQTT connection of an edge or the central: TLS, one credential, MQTT 5, a persistent session.

aiomqtt (on paho-mqtt 2.x) is the client; this module only builds it from the ``broker`` section,
keeps it connected (reconnecting with a back-off), and names the broker's refusals in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sparcs.config.schema import BrokerConfig

log = logging.getLogger("sparcs.edge.link")

SESSION_EXPIRY_S = 86_400
"""How long the broker keeps a disconnected client's session and its QoS 1 messages."""
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0
"""The back-off between connection attempts doubles from the first to the last; each wait is drawn
between its half and its whole, so a fleet of edges that lost the broker at once does not come back
in lockstep (a storm of TLS handshakes that time out and are all retried together)."""
KEEPALIVE_S = 30
"""MQTT keep-alive: a connection silent this long is probed; the broker takes an edge that vanished
without a word as offline (its will message) after 1.5 times this."""
TIMEOUT_S = 30.0
"""How long a connection attempt waits for the broker's CONNACK (and an operation for its
acknowledgement, unless given): a broker taking thousands of TLS handshakes answers late."""
PENDING_CALLS_WARN = 100_000
MAX_INFLIGHT = 1000
"""QoS 1 messages in flight unacknowledged (paho's default is 20): a plan for every site, or an outbox
after a link loss, goes out without waiting a round trip per 20 messages."""


def share_property_tables() -> None:
    """Make every paho ``Properties`` share one copy of its lookup tables (idempotent).

    paho-mqtt 2.x builds, in ``Properties.__init__``, the same tables of property names, ids and
    types (two dicts of 27 entries and a list) for every instance, and its MQTT 5 read path builds
    one instance per message received: a fifth of the central's CPU at 10,000 edges (py-spy,
    docs/edges.md "Benchmark"). paho only reads those tables after ``__init__``; the instances
    built here hold the same tables as the original's, taken from one instance it built, so every
    property packs and unpacks as before."""
    if getattr(Properties.__init__, "shares_tables", False):
        return
    shared = {k: v for k, v in Properties(PacketTypes.PUBLISH).__dict__.items() if k != "packetType"}

    def __init__(self: Properties, packetType: int) -> None:
        self.packetType = packetType
        self.__dict__.update(shared)

    __init__.shares_tables = True  # type: ignore[attr-defined]
    Properties.__init__ = __init__  # type: ignore[method-assign]


share_property_tables()


CLOSE_WAIT_S = 3.0
"""How long closing a link waits for its task to end: aiomqtt's clean disconnect waits for the
broker's answer up to the client's timeout (30 s), which a broker that stopped answering never sends."""


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it at most :data:`CLOSE_WAIT_S` (then it is cancelled again, which
    ends a disconnect still waiting for the broker)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, CLOSE_WAIT_S)


class CredentialError(Exception):
    """A credential that cannot be read; names the file and what to do."""


def read_password(path: Path | None, who: str) -> str | None:
    """The password in ``path`` (first line), None without a file."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise CredentialError(f"{who}: cannot read the broker password from {path}: {exc}") from None


@dataclass(frozen=True)
class Credential:
    username: str
    password: str | None
    client_id: str


def tls_context(broker: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS context that trusts ``broker.ca_file`` (else the system's CAs); None without TLS."""
    if not broker.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    return props


def message_expiry(seconds: float) -> Properties:
    """PUBLISH properties that let the broker drop the message (retained or queued) after ``seconds``."""
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = max(1, int(seconds))
    return props


def client(
    broker: BrokerConfig, cred: Credential, *, will: aiomqtt.Will | None = None, tls: ssl.SSLContext | None = None
) -> aiomqtt.Client:
    """An MQTT 5 client with a persistent session (clean start off, session kept a day)."""
    c = aiomqtt.Client(
        broker.host,
        broker.port,
        username=cred.username,
        password=cred.password,
        identifier=cred.client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        clean_start=False,
        properties=session_properties(),
        tls_context=tls if tls is not None else tls_context(broker),
        keepalive=KEEPALIVE_S,
        timeout=TIMEOUT_S,
        max_queued_outgoing_messages=None,
        max_inflight_messages=MAX_INFLIGHT,
    )
    c.pending_calls_threshold = PENDING_CALLS_WARN  # a plan for every site is published at once
    return c


def refusal(exc: aiomqtt.MqttError) -> str:
    """The broker's refusal in words (bad credential, not authorised) or the connection error."""
    text = str(exc)
    low = text.lower()
    if "bad user name or password" in low or "not authorized" in low or "code:134" in low or "code:135" in low:
        return f"the broker refused the credential ({text}); check the username and password file"
    return text


async def keep_connected(
    make: Callable[[], aiomqtt.Client],
    session: Callable[[aiomqtt.Client], Awaitable[None]],
    *,
    on_state: Callable[[bool, str | None], None],
    stop: asyncio.Event,
) -> None:
    """Connect, run ``session`` until the connection drops, and connect again with a jittered back-off
    (:data:`RECONNECT_MAX_S`), until ``stop`` is set. ``on_state(connected, error)`` is told of every
    change. A session that fails for another reason than the connection (its store, a fault in the
    code) is logged and reported the same way and the link comes back: an edge left unattended must
    not stay silent while it looks connected. Such failures back off from one to the next, however
    quickly the broker answers."""
    delay = RECONNECT_MIN_S
    faults = 0
    while not stop.is_set():
        try:
            async with make() as c:
                delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2**faults)
                on_state(True, None)
                await session(c)
        except aiomqtt.MqttError as exc:
            faults = 0
            on_state(False, refusal(exc))
            log.info("broker connection: %s; again in %.1f s", refusal(exc), delay)
        except Exception as exc:  # the supervisor of a long-lived link: reported, then retried
            faults += 1
            delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2**faults)
            on_state(False, f"the session failed: {exc!r}")
            log.exception("broker session failed; connecting again in %.1f s", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(delay / 2, delay))
        delay = min(RECONNECT_MAX_S, delay * 2)
