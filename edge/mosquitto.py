"""Mosquitto for the edges: its ACL and password file from the ``broker`` section, TLS certificates,
and a broker process for tests, the edge demo and ``sparcs bench edges`` (docs/edges.md "Security").

The ACL gives each edge (username = edge id) write access to its own sites' telemetry, ack and
alarm topics and its own state topic (a ``pattern`` on ``%u``), read access to its own sites' plan
and commands, and nothing else; the central reads everything under ``sparcs/v1/`` and writes plans
and commands. Certificates are made with the ``openssl`` command line; passwords are hashed with
``mosquitto_passwd``.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sparcs.config.schema import BrokerConfig
from sparcs.edge import messages as m


class BrokerError(Exception):
    """The broker could not be set up or started; says what is missing."""


def acl_text(broker: BrokerConfig) -> str:
    """The Mosquitto ACL of ``broker``'s central and edges."""
    lines = [
        "# SPARCS edge ACL (docs/edges.md): each edge its own sites, the central all of them.",
        f"pattern write {m.EDGE_ROOT}/%u/state",
        "",
        f"user {broker.username}",
        f"topic read {m.ROOT}/#",
        "topic read $SYS/broker/#",
        *(f"topic write {m.ROOT}/+/{k}" for k in m.TO_EDGE),
    ]
    for e in broker.edges:
        lines += ["", f"user {e.id}"]
        for sid in e.sites:
            lines += [f"topic write {m.site_topic(sid, k)}" for k in m.FROM_EDGE]
            lines += [f"topic read {m.site_topic(sid, k)}" for k in m.TO_EDGE]
    return "\n".join(lines) + "\n"


def write_password_file(path: Path, passwords: dict[str, str]) -> None:
    """A Mosquitto password file with the (hashed) ``passwords`` of each username."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise BrokerError("mosquitto_passwd not found; install the Debian package mosquitto")
    path.write_text("".join(f"{u}:{p}\n" for u, p in passwords.items()), encoding="utf-8")
    path.chmod(0o600)
    subprocess.run([tool, "-U", str(path)], check=True, capture_output=True)


def make_certs(folder: Path, *, days: int = 30) -> tuple[Path, Path, Path]:
    """A CA and a broker certificate for 127.0.0.1 / localhost signed by it: (ca.crt, server.crt, server.key)."""
    if shutil.which("openssl") is None:
        raise BrokerError("openssl not found; install the Debian package openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", str(days),
        "-subj", "/CN=SPARCS test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(crt),
        "-days", str(days), "-extfile", str(ext))  # fmt: skip
    return ca, crt, key


@dataclass
class BrokerFiles:
    folder: Path
    conf: Path
    ca: Path | None


def write_broker_files(
    folder: Path,
    broker: BrokerConfig,
    passwords: dict[str, str],
    *,
    port: int,
    tls: bool = True,
    sys_interval_s: int = 10,
) -> BrokerFiles:
    """Certificates (with ``tls``), password file, ACL and mosquitto.conf for one loopback listener
    (``$SYS`` statistics every ``sys_interval_s``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "acl").write_text(acl_text(broker), encoding="utf-8")
    write_password_file(folder / "passwd", passwords)
    (folder / "data").mkdir(exist_ok=True)
    lines = [
        f"user {getpass.getuser()}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {folder / 'passwd'}",
        f"acl_file {folder / 'acl'}",
        "persistence true",
        f"persistence_location {folder / 'data'}/",
        "autosave_interval 5",
        # The central's queue while it is away: an hour of a 1,000-site fleet at a 10 s poll.
        "max_queued_messages 400000",
        "max_inflight_messages 1000",
        f"sys_interval {sys_interval_s}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        f"listener {port} 127.0.0.1",
    ]
    ca = None
    if tls:
        ca, crt, key = make_certs(folder / "certs")
        lines += [f"cafile {ca}", f"certfile {crt}", f"keyfile {key}", "tls_version tlsv1.2"]
    conf = folder / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return BrokerFiles(folder, conf, ca)


class Mosquitto:
    """A mosquitto process on a loopback port; :meth:`stop` and :meth:`start` again keep its
    persistence (retained messages, queued QoS 1 messages of persistent sessions)."""

    def __init__(self, files: BrokerFiles, port: int):
        self.files, self.port = files, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = files.folder / "mosquitto.log"

    def start(self, timeout_s: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise BrokerError("mosquitto not found; install the Debian package mosquitto")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.files.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited at start: {self.log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")

    def stop(self) -> None:
        """Stop it (SIGTERM: it saves its persistence file), waiting for the exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raise_fd_limit(want: int = 65_536) -> None:
    """Many edges mean many sockets: raise this process's open-file limit as far as allowed."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, want) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
