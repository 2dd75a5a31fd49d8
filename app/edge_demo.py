"""`make demo-edges`: the demo fleet with some sites behind two edges, over a local Mosquitto.

Writes under ``--data-dir`` (default ``data/demo-edges``) a fleet file (the demo fleet with a
``broker`` section: the first three sites behind edge ``gw-1``, the next three behind ``gw-2``,
the rest polled directly), credentials, the ACL and TLS certificates; then starts Mosquitto on a
free loopback port, the central (``sparcs run``, which also serves the demo's simulated devices)
and the two edges (``sparcs edge``), each its own process. Ctrl-C stops them all (docs/edges.md).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sparcs.config.schema import CONFIG_DIR, validate_config
from sparcs.edge.mosquitto import Mosquitto, write_broker_files

EDGES = {"gw-1": slice(0, 3), "gw-2": slice(3, 6)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_demo(folder: Path) -> tuple[Path, Mosquitto]:
    """The demo fleet file with its broker section and the broker's files; returns (fleet file, broker)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    if data.get("market", {}).get("prices_csv"):
        data["market"]["prices_csv"] = str((CONFIG_DIR / data["market"]["prices_csv"]).resolve())
    port = _free_port()
    secrets_dir = folder / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    passwords = {u: secrets.token_hex(12) for u in ["central", *EDGES]}
    for user, pw in passwords.items():
        (secrets_dir / f"{user}.pw").write_text(pw + "\n", encoding="utf-8")
    ids = [s["id"] for s in data["sites"]]
    data["broker"] = {
        "port": port,
        "password_file": str(secrets_dir / "central.pw"),
        "edges": [
            {"id": e, "sites": ids[part], "password_file": str(secrets_dir / f"{e}.pw")} for e, part in EDGES.items()
        ],
    }
    broker_cfg = validate_config(data).broker
    assert broker_cfg is not None
    files = write_broker_files(folder / "broker", broker_cfg, passwords, port=port)
    data["broker"]["ca_file"] = str(files.ca)
    fleet = folder / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return fleet, Mosquitto(files, port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data/demo-edges"))
    ap.add_argument("--port", type=int, default=None, help="the central's API port (default: the demo's)")
    args = ap.parse_args()
    fleet, broker = write_demo(args.data_dir)
    broker.start()
    print(f"mosquitto: 127.0.0.1:{broker.port} (TLS, ACL {broker.files.folder / 'acl'})", flush=True)
    sparcs = [sys.executable, "-m", "sparcs"]
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        central = [*sparcs, "run", "--config", str(fleet), "--data-dir", str(args.data_dir / "central")]
        if args.port is not None:
            central += ["--port", str(args.port)]
        procs.append(subprocess.Popen(central, start_new_session=True))
        time.sleep(5)  # the central's simulated devices listen before the edges poll them
        for e in EDGES:
            edge = [*sparcs, "edge", "--config", str(fleet), "--edge", e, "--data-dir", str(args.data_dir)]
            procs.append(subprocess.Popen(edge, start_new_session=True))
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
        print("demo-edges stopped", flush=True)


if __name__ == "__main__":
    main()
