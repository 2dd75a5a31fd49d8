"""`sparcs bench load`: does API load delay control? Polls N simulated devices under `sparcs run` while
clients drive the API, and prints JSON (README.md "Command line"; docs/architecture.md "The API
beside the control loop").

The bench writes a generated fleet file (``simulation`` section: the simulators run in their own
process, as in the demo) and starts ``sparcs run`` on it as a user would: control process, API
process, fleet process. Then ``rounds`` times three phases of ``phase_s`` each (by default long
enough for :data:`MIN_POLLS` polls per kind over the rounds), alternating so that the machine's own
load hits each kind alike:

- ``unloaded``: no API traffic but the bench's monitor (one GET /api/v1/fleet every
  :data:`MONITOR_S`, which reads the data age);
- ``loaded``: ``clients`` closed-loop clients, each on its own kept-alive connection, cycling
  through GET /api/v1/devices, /api/v1/sites and /api/v1/fleet; and at the same time an open-loop
  stream of ``fleet_rate`` GET /api/v1/fleet a second;
- ``stream``: the open-loop stream alone (the goal "/fleet p99 ≤ 50 ms at 200 requests/s").

The closed-loop clients run in a child process niced like the API (``api.nice``) and in Linux's
idle scheduling class: on a deployment they are other machines, here they share the cores with the
controller and may take only what it leaves. The stream runs in a child process of its own at the
bench's priority, so that its latencies are the API's and not its own wait for a core
(:func:`clients_main`). Each client is a lean HTTP/1.1 keep-alive
connection (:class:`Keepalive`), so what is measured is the API, not the client's own CPU. A
stream request's latency counts from the moment it was due, so a client that falls behind shows
as latency, not as fewer requests.

Per kind of phase, from the control process's metrics (deltas over the phases, each from the moment
its clients run): polls and the poll cycle's
p50/p99 (read from the histogram's buckets as Prometheus' ``histogram_quantile`` does) and mean,
Modbus timeouts (every device is healthy, so every timeout is a false one), failed writes; from
the alarms, ``write:`` alarms raised in the phase; from the monitor, the largest data age seen; from
/proc (:mod:`sparcs.proc_cpu`), per process (control, API, fleet, clients) the cores used and the
time spent runnable but waiting for a core, so that a slower poll tells more work from contention.
The dispatch interval is a day (one plan at start-up), so a solve does not land in one phase and
not the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sparcs.config.schema import ApiConfig
from sparcs.drivers.bench import BenchError, free_port_range, trim_fleet
from sparcs.proc_cpu import CpuUse, children, cpu_use, niceness
from sparcs.simulators.fleetgen import synthetic_fleet

ROUTES = ("/api/v1/devices", "/api/v1/sites", "/api/v1/fleet")
STREAM = "fleet_stream"
STREAM_CONNECTIONS = 64
"""The most connections the open-loop stream keeps; a request due while all are busy waits (and is late)."""
MONITOR_S = 0.25
START_TIMEOUT_S = 600.0
WARMUP_TIMEOUT_S = 600.0
DISPATCH_INTERVAL_S = 86_400.0
REQUEST_TIMEOUT_S = 30.0
CLIENT_START_TIMEOUT_S = 120.0
DRAIN_S = 10.0
"""Requests still unanswered this long after a phase are given up and counted as errors (s)."""
POLL_HISTOGRAM = "sparcs_poll_cycle_duration_seconds"
MIN_POLLS = 30
"""Polls per kind of phase (over all rounds) the default phase length gives: fewer, and the p99 is the
largest poll, one slow poll deciding the goal."""


def phase_length_s(poll_interval_s: float, rounds: int, polls: int = MIN_POLLS) -> float:
    """The shortest phase (s) in which ``rounds`` phases of a kind see at least ``polls`` polls in all,
    one poll every ``poll_interval_s``, plus one interval for the poll a phase cuts at its start."""
    return poll_interval_s * (math.ceil(polls / rounds) + 1)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when there are none."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile from cumulative histogram ``buckets`` (upper bound → count, +Inf included),
    interpolated linearly inside its bucket as Prometheus' ``histogram_quantile``; None without samples."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound, as Prometheus answers
            return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
        lower, below = upper, count
    return lower


def bench_fleet(devices: int, poll_interval_s: float, seed: int) -> dict[str, Any]:
    """A generated fleet of ``devices`` devices on free consecutive ports, simulated in real time."""
    fleet = trim_fleet(synthetic_fleet(devices, seed, port_start=free_port_range(devices)), devices)
    fleet["simulation"] = {**fleet.get("simulation", {}), "speed": 1.0, "seed": seed}
    fleet["dispatch"] = {"poll_interval_s": poll_interval_s, "dispatch_interval_s": DISPATCH_INTERVAL_S}
    return fleet


# -- the controller under test --------------------------------------------------------------------


class Controlled:
    """`sparcs run` on a fleet file, as a user starts it; its output goes to files in ``work``."""

    def __init__(self, config: Path, work: Path):
        self.out, self.err = work / "run.out", work / "run.err"
        self._files = (self.out.open("w"), self.err.open("w"))
        cmd = [sys.executable, "-m", "sparcs", "run", "--config", str(config), "--port", "0"]
        self.proc = subprocess.Popen(
            [*cmd, "--data-dir", str(work / "data")], stdout=self._files[0], stderr=self._files[1], cwd=work
        )
        self.url = ""
        self.token = ""

    async def started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.out.read_text()
            if "Stop with Ctrl-C." in text:
                url = re.search(r"SPARCS controller: (http://\S+)/", text)
                token = re.search(r"demo operator token: (\S+)", text)
                if url is None or token is None:
                    raise BenchError(f"sparcs run printed no URL or token: {text[-500:]}")
                self.url, self.token = url.group(1), token.group(1)
                return
            if self.proc.poll() is not None:
                raise BenchError(f"sparcs run ended with code {self.proc.returncode}: {self.err.read_text()[-800:]}")
            await asyncio.sleep(0.2)
        raise BenchError(f"sparcs run did not start within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in self._files:
            f.close()


def scrape(text: str) -> dict[str, Any]:
    """The figures the bench follows, from the control process's metrics."""
    out: dict[str, Any] = {"buckets": {}, "count": 0.0, "sum": 0.0, "timeouts": 0.0, "write_failures": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{POLL_HISTOGRAM}_bucket":
                out["buckets"][float(s.labels["le"])] = s.value
            elif s.name == f"{POLL_HISTOGRAM}_count":
                out["count"] = s.value
            elif s.name == f"{POLL_HISTOGRAM}_sum":
                out["sum"] = s.value
            elif s.name == "sparcs_modbus_errors_total" and s.labels.get("kind") == "timeout":
                out["timeouts"] = s.value
            elif s.name == "sparcs_setpoint_writes_total" and s.labels.get("action") == "failed":
                out["write_failures"] = s.value
    return out


# -- the clients --------------------------------------------------------------------------------


def _summary(latencies_ms: list[float], errors: int, elapsed_s: float) -> dict[str, Any]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "requests": len(latencies_ms),
        "rate_rps": round(len(latencies_ms) / elapsed_s, 1) if elapsed_s > 0 else None,
        "p50_ms": ms(percentile(latencies_ms, 0.5)),
        "p99_ms": ms(percentile(latencies_ms, 0.99)),
        "max_ms": ms(max(latencies_ms) if latencies_ms else None),
        "errors": errors,
    }


@dataclass
class Samples:
    """What the clients saw per route: latencies of the answered requests (ms), and errors; and the
    clients' own CPU use while they ran."""

    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    elapsed_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: CpuUse = field(default_factory=CpuUse)

    def add(self, other: Samples) -> None:
        self.cpu += other.cpu
        for key, values in other.latencies_ms.items():
            self.latencies_ms[key].extend(values)
            self.elapsed_s[key] += other.elapsed_s[key]
        for key, n in other.errors.items():
            self.errors[key] += n

    def summary(self) -> dict[str, Any]:
        keys = sorted(set(self.latencies_ms) | set(self.errors))
        return {k: _summary(self.latencies_ms[k], self.errors[k], self.elapsed_s[k]) for k in keys}


class _Unanswered(Exception):
    """A request failed before any byte of its answer arrived."""


class Keepalive:
    """One kept-alive HTTP/1.1 connection of the bench's clients, on asyncio streams: GET a path, read
    the whole answer (Content-Length or chunked), return its status. A general client costs more CPU
    per request than the API's /fleet route itself (httpx ~10 ms against ~1 ms here, the machine
    shared with the API): at 200 requests/s it would measure its own backlog, not the API's.
    A connection the server closed while idle (``api.keep_alive_s``) is opened again before use; a
    request on a reused connection that fails before any byte of its answer (the server closed it
    while the request was on its way) is sent once more on a new one, as HTTP clients do with
    idempotent requests (RFC 9112 section 9.3.1)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self._head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """The status of GET ``path``, its body read; raises OSError or ValueError (closing the connection)."""
        reused = self._reader is not None and not self._reader.at_eof()
        try:
            return await self._get(path)
        except _Unanswered as exc:
            self.close()
            if not reused:
                raise OSError(f"GET {path}: {exc.__cause__!r}") from None
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise OSError(f"GET {path}: {exc!r}") from None
        return await self.get(path)  # the server closed it while idle, the request on its way: once more, new

    async def _get(self, path: str) -> int:
        if self._reader is None or self._writer is None or self._reader.at_eof() or self._writer.is_closing():
            self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        try:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            raise _Unanswered from exc
        except OSError as exc:
            raise _Unanswered from exc
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        if fields.get("connection") == "close":
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _drive(base_url: str, token: str, clients: int, rate: float, duration_s: float) -> Samples:
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    got = Samples()
    latencies, errors = got.latencies_ms, got.errors
    t0 = time.monotonic()
    end = t0 + duration_s

    async def one(conn: Keepalive, route: str, key: str, due: float) -> None:
        try:
            ok = await asyncio.wait_for(conn.get(route), REQUEST_TIMEOUT_S) == 200
        except (OSError, TimeoutError):
            conn.close()
            ok = False
        latencies[key].append((time.monotonic() - due) * 1000.0)
        if not ok:
            errors[key] += 1

    async def closed_loop(i: int) -> None:
        conn = Keepalive(host, port, token)
        k = i
        try:
            while time.monotonic() < end:
                route = ROUTES[k % len(ROUTES)]
                k += 1
                try:
                    left_s = end + DRAIN_S - time.monotonic()
                    await asyncio.wait_for(one(conn, route, route, time.monotonic()), left_s)
                except TimeoutError:
                    errors[route] += 1  # unanswered a grace period after the phase
        finally:
            conn.close()

    async def stream() -> None:
        if rate <= 0:
            return
        idle: asyncio.LifoQueue[Keepalive] = asyncio.LifoQueue()  # the last used on top
        opened: list[Keepalive] = []

        async def request(due: float) -> None:
            if idle.empty() and len(opened) < STREAM_CONNECTIONS:
                opened.append(Keepalive(host, port, token))
                idle.put_nowait(opened[-1])
            conn = await idle.get()  # beyond STREAM_CONNECTIONS a request waits its turn, late
            try:
                await one(conn, "/api/v1/fleet", STREAM, due)
            finally:
                idle.put_nowait(conn)

        running: set[asyncio.Task[None]] = set()
        k = 0
        try:
            while (due := t0 + k / rate) < end:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                task = asyncio.create_task(request(due))
                running.add(task)
                task.add_done_callback(running.discard)
                k += 1
            if running:  # what is still unanswered a grace period after the phase counts as an error
                _, late = await asyncio.wait(running, timeout=DRAIN_S)
                for task in late:
                    task.cancel()
                errors[STREAM] += len(late)
        finally:
            for conn in opened:
                conn.close()

    await asyncio.gather(stream(), *(closed_loop(i) for i in range(clients)))
    for key in set(latencies) | set(errors):
        got.elapsed_s[key] = duration_s
    return got


def idle_class() -> bool:
    """Put this process in Linux's SCHED_IDLE class: it runs only on a core nothing else wants, and any
    other process that wakes takes the core from it at once (a niced process keeps the core to the end
    of its time slice). False where the system refuses it or has no such class (the niceness stays)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


def clients_main(
    base_url: str, token: str, clients: int, rate: float, duration_s: float, nice: int | None, out: Connection
) -> None:
    """A load process, deaf to Ctrl-C: ``clients`` closed-loop clients and a stream of ``rate`` a second.
    With ``nice`` (the closed-loop clients) niced by it and in the idle class (:func:`idle_class`):
    they stand for other machines and may take only what control leaves. Without (the /fleet stream,
    ~0.06 of a core) at the bench's own priority: the stream measures latency, and starved behind
    the closed-loop clients or anything else on the machine it would measure its own wait, not the
    API's (stalls of ~1 s in an idle-class stream while other work ran). Sends "go" as it starts,
    then what its clients saw (:class:`Samples`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice is not None:
        os.nice(nice)
        idle_class()
    out.send("go")
    before = cpu_use(os.getpid())
    samples = asyncio.run(_drive(base_url, token, clients, rate, duration_s))
    samples.cpu = cpu_use(os.getpid()) - before
    out.send(samples)
    out.close()


# -- the phases ---------------------------------------------------------------------------------


def controller_cpu(pid: int) -> dict[str, CpuUse]:
    """CPU use so far of `sparcs run`'s processes: ``control`` (process ``pid``), ``api`` (its children
    niced below it: the API process, ``api.nice`` on top of whatever niceness `sparcs run` was started
    with), ``fleet`` (its other children: the simulators and the idle solver worker)."""
    roles = {"control": cpu_use(pid), "api": CpuUse(), "fleet": CpuUse()}
    own = niceness(pid)
    for child in children(pid):
        nice = niceness(child)
        role = "api" if own is not None and nice is not None and nice > own else "fleet"
        roles[role] += cpu_use(child)
    return roles


class Phase:
    """Measures phases against one controller: the metrics before and after, the data age seen, the
    clients' figures, the CPU use of `sparcs run`'s processes (``pid``: the control process). ``http``
    is the monitor's client; the clients use ``base_url`` and ``token``."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str, nice: int, pid: int):
        self.http, self.base_url, self.token, self.nice, self.pid = http, base_url, token, nice, pid
        self.clients_idle = False
        """Whether the last phase's clients ran in the idle class (:func:`idle_class`)."""

    async def metrics(self) -> dict[str, Any]:
        r = await self.http.get("/metrics")
        r.raise_for_status()
        return scrape(r.text)

    async def monitor(self, until: float) -> list[float]:
        """The data age GET /api/v1/fleet shows, every :data:`MONITOR_S` until ``until`` (monotonic s)."""
        ages = []
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await self.http.get("/api/v1/fleet")
                age = r.json().get("data_age_s") if r.status_code == 200 else None
                if age is not None:
                    ages.append(float(age))
            await asyncio.sleep(MONITOR_S)
        return ages

    async def write_alarms(self, since_s: float) -> int:
        r = await self.http.get("/api/v1/alarms", params={"limit": 1000})
        r.raise_for_status()
        raised = [a for a in r.json() if a["source"].startswith("write:")]
        return sum(1 for a in raised if dt.datetime.fromisoformat(a["raised_at"]).timestamp() >= since_s)

    async def run(self, duration_s: float, *, clients: int, rate: float) -> Measured:
        """One phase of ``duration_s`` with ``clients`` closed-loop clients and a stream of ``rate`` a second.
        The control figures are taken over the ``duration_s`` the clients run, from the moment they start."""
        loaders: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        ctx = multiprocessing.get_context("spawn")
        for n, r, nice in ((clients, 0.0, self.nice), (0, rate, None)):  # closed-loop clients, the stream
            if not (n or r):
                continue
            answer, theirs = ctx.Pipe(duplex=False)
            loader = ctx.Process(
                target=clients_main, args=(self.base_url, self.token, n, r, duration_s, nice, theirs), daemon=True
            )
            loader.start()
            theirs.close()
            loaders.append((loader, answer))
            if not await asyncio.to_thread(answer.poll, CLIENT_START_TIMEOUT_S) or answer.recv() != "go":
                raise BenchError(f"the API clients did not start within {CLIENT_START_TIMEOUT_S:g} s")
            if n and loader.pid is not None:
                self.clients_idle = os.sched_getscheduler(loader.pid) == os.SCHED_IDLE
        before = await self.metrics()
        cpu_before = controller_cpu(self.pid)
        started_at = time.time()
        ages = await self.monitor(time.monotonic() + duration_s)
        cpu = {role: use - cpu_before[role] for role, use in controller_cpu(self.pid).items()}
        after = await self.metrics()
        alarms = await self.write_alarms(started_at)
        samples = Samples()
        for ended, answer in loaders:
            if not await asyncio.to_thread(answer.poll, DRAIN_S + CLIENT_START_TIMEOUT_S):
                raise BenchError("the API clients did not report")
            samples.add(answer.recv())
            await asyncio.to_thread(ended.join, 30.0)
            if ended.is_alive():
                ended.kill()
        return Measured(
            polls=after["count"] - before["count"],
            poll_sum_s=after["sum"] - before["sum"],
            buckets={le: after["buckets"].get(le, 0.0) - before["buckets"].get(le, 0.0) for le in after["buckets"]},
            ages=ages,
            timeouts=after["timeouts"] - before["timeouts"],
            write_failures=after["write_failures"] - before["write_failures"],
            write_alarms=alarms,
            samples=samples,
            cpu={**cpu, "clients": samples.cpu},
            seconds=duration_s,
            load_avg=[os.getloadavg()[0]],
        )


@dataclass
class Measured:
    """One phase's (or several like phases') figures: control from the metrics, the monitor's data
    ages, the alarms raised, the clients' samples."""

    polls: float = 0.0
    poll_sum_s: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    ages: list[float] = field(default_factory=list)
    timeouts: float = 0.0
    write_failures: float = 0.0
    write_alarms: int = 0
    samples: Samples = field(default_factory=Samples)
    cpu: dict[str, CpuUse] = field(default_factory=dict)
    """CPU use per process role (``control``, ``api``, ``fleet``, ``clients``) over the phases."""
    seconds: float = 0.0
    load_avg: list[float] = field(default_factory=list)
    """The machine's 1-minute load average at the end of each phase."""

    def add(self, other: Measured) -> None:
        for role, use in other.cpu.items():
            self.cpu[role] = self.cpu.get(role, CpuUse()) + use
        self.seconds += other.seconds
        self.load_avg += other.load_avg
        self.polls += other.polls
        self.poll_sum_s += other.poll_sum_s
        for le, n in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + n
        self.ages += other.ages
        self.timeouts += other.timeouts
        self.write_failures += other.write_failures
        self.write_alarms += other.write_alarms
        self.samples.add(other.samples)

    def figures(self) -> dict[str, Any]:
        def rounded(v: float | None, digits: int = 3) -> float | None:
            return None if v is None else round(v, digits)

        return {
            "polls": int(self.polls),
            "poll_cycle_p50_s": rounded(bucket_quantile(0.5, self.buckets)),
            "poll_cycle_p99_s": rounded(bucket_quantile(0.99, self.buckets)),
            "poll_cycle_mean_s": rounded(self.poll_sum_s / self.polls if self.polls else None),
            "data_age_max_s": rounded(max(self.ages) if self.ages else None, 2),
            "data_age_samples": len(self.ages),
            "modbus_timeouts": int(self.timeouts),
            "write_failures": int(self.write_failures),
            "write_alarms": self.write_alarms,
            "cpu": self.cpu_figures(),
            "load_avg_1m_max": rounded(max(self.load_avg) if self.load_avg else None, 2),
            "api": self.samples.summary(),
        }

    def cpu_figures(self) -> dict[str, dict[str, float | None]]:
        """Per process role: cores used (CPU s per s of phase), run-queue delay per s, and both per poll."""

        def per(v: float, n: float) -> float | None:
            return round(v / n, 4) if n else None

        return {
            role: {
                "cores": per(use.cpu_s, self.seconds),
                "wait_per_s": per(use.wait_s, self.seconds),
                "cpu_per_poll_s": per(use.cpu_s, self.polls),
                "wait_per_poll_s": per(use.wait_s, self.polls),
            }
            for role, use in self.cpu.items()
        }


async def _warm_up(http: httpx.AsyncClient, poll_interval_s: float) -> None:
    """Until every device answered, a plan is in force and /readyz says ready; then two more polls."""
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
            ready = (await http.get("/readyz")).status_code == 200
            now = (await http.get("/api/v1/fleet")).json()["now"]
            plan = (await http.get("/api/v1/plan")).json()["plan"]
            if ready and now and now["online"] == now["total"] and plan is not None:
                await asyncio.sleep(2 * poll_interval_s)
                return
        await asyncio.sleep(1.0)
    raise BenchError(f"the fleet was not online with a plan within {WARMUP_TIMEOUT_S:g} s")


async def run_load_bench(
    devices: int,
    clients: int = 32,
    *,
    poll_interval_s: float = 5.0,
    phase_s: float | None = None,
    rounds: int = 3,
    fleet_rate: float = 200.0,
    seed: int = 7,
) -> dict[str, Any]:
    """``rounds`` of the three phases against `sparcs run` on ``devices`` simulated devices; the JSON result.
    ``phase_s`` None: long enough for :data:`MIN_POLLS` polls per kind of phase (:func:`phase_length_s`)."""
    phase_s = phase_length_s(poll_interval_s, rounds) if phase_s is None else phase_s
    fleet = bench_fleet(devices, poll_interval_s, seed)
    nice = ApiConfig().nice
    with tempfile.TemporaryDirectory(prefix="sparcs-bench-load-") as tmp:
        work = Path(tmp)
        path = work / "fleet.yaml"
        path.write_text(yaml.safe_dump(fleet, sort_keys=False), encoding="utf-8")
        run = Controlled(path, work)
        try:
            await run.started()
            headers = {"Authorization": f"Bearer {run.token}"}
            async with httpx.AsyncClient(base_url=run.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
                await _warm_up(http, poll_interval_s)
                phase = Phase(http, run.url, run.token, nice, run.proc.pid)
                kinds = {"unloaded": (0, 0.0), "loaded": (clients, fleet_rate), "stream": (0, fleet_rate)}
                measured = {kind: Measured() for kind in kinds}
                for _ in range(rounds):  # alternating, so that the machine's own load hits every kind alike
                    for kind, (n, rate) in kinds.items():
                        measured[kind].add(await phase.run(phase_s, clients=n, rate=rate))
        finally:
            run.stop()
    return summarise(
        devices=devices,
        sites=len(fleet["sites"]),
        clients=clients,
        poll_interval_s=poll_interval_s,
        phase_s=phase_s,
        rounds=rounds,
        fleet_rate=fleet_rate,
        nice=nice,
        clients_idle=phase.clients_idle,
        phases={kind: m.figures() for kind, m in measured.items()},
    )


def summarise(
    *,
    devices: int,
    sites: int,
    clients: int,
    poll_interval_s: float,
    phase_s: float,
    rounds: int,
    fleet_rate: float,
    nice: int,
    clients_idle: bool,
    phases: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The bench's JSON: its settings, every phase, the headline figures and whether each goal holds."""
    unloaded, loaded, stream = phases["unloaded"], phases["loaded"], phases["stream"]
    p99_u, p99_l = unloaded["poll_cycle_p99_s"], loaded["poll_cycle_p99_s"]
    ratio = round(p99_l / p99_u, 3) if p99_u and p99_l is not None else None
    ages = [p["data_age_max_s"] for p in phases.values() if p["data_age_max_s"] is not None]
    age_max = max(ages) if ages else None
    timeouts = sum(p["modbus_timeouts"] for p in phases.values())
    alarms = sum(p["write_alarms"] for p in phases.values())
    fleet_alone = stream["api"].get(STREAM, {})
    api = {route: loaded["api"].get(route, _summary([], 0, 0.0)) for route in ROUTES}
    api[STREAM] = loaded["api"].get(STREAM, _summary([], 0, 0.0))
    return {
        "devices": devices,
        "sites": sites,
        "clients": clients,
        "poll_interval_s": poll_interval_s,
        "dispatch_interval_s": DISPATCH_INTERVAL_S,
        "phase_s": phase_s,
        "rounds": rounds,
        "fleet_rate_rps": fleet_rate,
        "client_nice": nice,
        "clients_idle_class": clients_idle,
        "polls_per_phase": {name: p["polls"] for name, p in phases.items()},
        "polls_enough_for_p99": all(p["polls"] >= MIN_POLLS for p in phases.values()),
        "poll_cycle_p50_s_unloaded": unloaded["poll_cycle_p50_s"],
        "poll_cycle_p99_s_unloaded": p99_u,
        "poll_cycle_p50_s_loaded": loaded["poll_cycle_p50_s"],
        "poll_cycle_p99_s_loaded": p99_l,
        "poll_cycle_p99_ratio": ratio,
        "data_age_max_s": age_max,
        "modbus_timeouts": timeouts,
        "write_failures": sum(p["write_failures"] for p in phases.values()),
        "write_alarms": alarms,
        "api": api,
        "fleet_alone": fleet_alone,
        "phases": {name: {k: v for k, v in p.items() if k != "api"} for name, p in phases.items()},
        "goals": {
            "poll_p99_loaded_within_1_5x_unloaded": ratio is not None and ratio <= 1.5,
            "data_age_within_2_poll_intervals": age_max is not None and age_max <= 2 * poll_interval_s,
            "no_false_modbus_timeouts": timeouts == 0,
            "no_write_alarms": alarms == 0,
            "fleet_p99_within_50_ms_at_rate": (fleet_alone.get("p99_ms") or math.inf) <= 50.0,
        },
    }
