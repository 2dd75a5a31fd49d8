"""The `sparcs` command line: one console script, one sub-command per task (README.md "Command line").

Each command lives beside the code it drives and is registered here, so this module only wires
them up. Expected failures (a bad config, an unreachable device) print one line per problem to
stderr and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from sparcs.config.schema import ConfigError, FleetConfig, LoggingConfig, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SPARCS swarm-plant controller")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON.")
app.add_typer(bench_app, name="bench")


def fail(lines: list[str] | str, code: int = 2) -> typer.Exit:
    """Print an expected failure to stderr, one line per problem, and return the Exit to raise."""
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def load_or_exit(path: Path) -> FleetConfig:
    """Load a fleet file or exit with one line per error, each naming its path in the file."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail([f"{exc.source}: {line}" for line in exc.errors]) from None


@app.command("check-config")
def check_config(file: Annotated[Path, typer.Argument(help="fleet YAML file")]) -> None:
    """Validate a fleet file and its devices (protocols, vendor profiles and their kinds, fail-safes).

    Every error names its path; a device without a fail-safe is reported as monitor-only, with what
    to write to control it anyway (docs/devices.md "Fail-safes")."""
    from sparcs.drivers.checks import check_devices

    cfg = load_or_exit(file)
    report = check_devices(cfg)
    if report.problems:
        raise fail([f"{file}: {line}" for line in report.problems])
    for note in report.notes:
        typer.echo(f"{file}: {note}")
    n_dev = sum(len(s.devices) for s in cfg.sites)
    typer.echo(f"{file}: OK ({len(cfg.sites)} sites, {n_dev} devices)")


token_app = typer.Typer(no_args_is_help=True, help="API tokens: add and rotate (printed once), list, revoke.")
app.add_typer(token_app, name="token")
DataDir = Annotated[Path, typer.Option("--data-dir", help="where the SQLite store lives")]
TokenConfig = Annotated[Path | None, typer.Option("--config", help="fleet file whose storage.url to use")]
ExpiresIn = Annotated[
    str | None, typer.Option("--expires-in", help="valid for this long, e.g. 90d, 12h, 30m; default: no expiry")
]


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="who the token is for (written to the audit log)")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin")] = "viewer",
    data_dir: DataDir = Path("data"),
    config: TokenConfig = None,
    expires_in: ExpiresIn = None,
) -> None:
    """Create an API token; it is printed once, only its hash is stored; audited as cli:<user>."""
    from sparcs.controller.tokens import add_token

    try:
        typer.echo(add_token(name, role, data_dir, config, expires_in))
    except (ValueError, ConfigError) as exc:
        raise fail(str(exc)) from None


@token_app.command("rotate")
def token_rotate(
    name: Annotated[str, typer.Argument(help="the token to give a new secret (same role)")],
    data_dir: DataDir = Path("data"),
    config: TokenConfig = None,
    expires_in: ExpiresIn = None,
) -> None:
    """Replace a token's secret (the old one stops working at once); the new one is printed once."""
    from sparcs.controller.tokens import rotate_token

    try:
        typer.echo(rotate_token(name, data_dir, config, expires_in))
    except (ValueError, ConfigError) as exc:
        raise fail(str(exc)) from None


@token_app.command("list")
def token_list(data_dir: DataDir = Path("data"), config: TokenConfig = None) -> None:
    """List token names, roles, creation and expiry (never the tokens)."""
    from sparcs.controller.tokens import list_tokens

    for line in list_tokens(data_dir, config):
        typer.echo(line)


@token_app.command("revoke")
def token_revoke(name: str, data_dir: DataDir = Path("data"), config: TokenConfig = None) -> None:
    """Revoke a token by name; audited as cli:<user>."""
    from sparcs.controller.tokens import revoke_token

    try:
        revoke_token(name, data_dir, config)
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"revoked '{name}'")


db_app = typer.Typer(no_args_is_help=True, help="The store's schema: current revision, upgrade, downgrade.")
app.add_typer(db_app, name="db")
StoreConfig = Annotated[Path | None, typer.Option("--config", help="fleet file whose storage.url to use")]


def _store_command(action: Callable[[], str]) -> None:
    """Run a store maintenance action; expected failures are one line on stderr, exit status 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from sparcs.controller.backup import BackupError
    from sparcs.controller.migrate import MigrationError

    try:
        typer.echo(action())
    except (MigrationError, BackupError, ConfigError) as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise fail(f"store: {str(exc).splitlines()[0]}") from None


@db_app.command("current")
def db_current(data_dir: DataDir = Path("data"), config: StoreConfig = None) -> None:
    """The store's schema revision and this program's newest."""
    from sparcs.controller import store_cli

    _store_command(lambda: store_cli.db_current(data_dir, config))


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    data_dir: DataDir = Path("data"),
    config: StoreConfig = None,
) -> None:
    """Upgrade the store's schema (default: to this program's newest); `sparcs run` does it on start."""
    from sparcs.controller import store_cli

    _store_command(lambda: store_cli.db_upgrade(data_dir, config, revision))


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision; default one back")] = "-1",
    data_dir: DataDir = Path("data"),
    config: StoreConfig = None,
) -> None:
    """Downgrade the store's schema one revision (before going back to the previous release)."""
    from sparcs.controller import store_cli

    _store_command(lambda: store_cli.db_downgrade(data_dir, config, revision))


@app.command("backup")
def backup(
    dest: Annotated[Path, typer.Argument(help="backup file to write (SQLite file, or pg_dump archive)")],
    data_dir: DataDir = Path("data"),
    config: StoreConfig = None,
) -> None:
    """Back the store up, safe while the controller runs (SQLite online backup; pg_dump)."""
    from sparcs.controller import store_cli

    _store_command(lambda: store_cli.backup(dest, data_dir, config))


@app.command("restore")
def restore(
    src: Annotated[Path, typer.Argument(help="a file `sparcs backup` wrote")],
    data_dir: DataDir = Path("data"),
    config: StoreConfig = None,
) -> None:
    """Replace the store with a backup; stop the controller first."""
    from sparcs.controller import store_cli

    _store_command(lambda: store_cli.restore(src, data_dir, config))


opendata_app = typer.Typer(no_args_is_help=True, help="Open data for the city's portal (docs/open-data.md).")
app.add_typer(opendata_app, name="opendata")


@opendata_app.command("export")
def opendata_export(
    config: Annotated[Path, typer.Option("--config", help="fleet file (open_data and storage sections)")],
    date: Annotated[str, typer.Option("--date", help="Europe/Berlin day, YYYY-MM-DD")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the files into")],
    data_dir: DataDir = Path("data"),
) -> None:
    """Write one day's open data as CSV and JSON with DCAT-AP.de metadata (JSON-LD), published
    quarter-hours only; prints one line per file."""
    import datetime as dt
    import time

    from sparcs.controller.open_data_export import export_day
    from sparcs.controller.open_data_reader import OpenDataReader
    from sparcs.controller.store import Store

    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise fail(f"--date: '{date}' is not a day; write YYYY-MM-DD, e.g. 2026-06-21") from None
    cfg = load_or_exit(config)

    def run() -> str:
        store = Store(cfg.storage.url, data_dir=data_dir, migrate_schema=False)
        try:
            done = export_day(cfg, OpenDataReader(cfg, store, time.time), day, out)
        finally:
            store.close()
        return "\n".join([*(str(p) for p in done.files), f"{done.rows} rows"])

    _store_command(run)


@bench_app.command("store")
def bench_store(
    sites: Annotated[int, typer.Option(min=1, max=54, help="demo sites to run (simulated)")] = 54,
    hours: Annotated[float, typer.Option(min=0.1, max=24.0, help="simulated hours of history")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="one line of JSON")] = False,
) -> None:
    """Bytes of history per site and day, this schema against the 0.1.0 release's (docs/storage.md)."""
    import json

    from sparcs.twin.store_bench import store_bench

    result = store_bench(sites, hours)
    typer.echo(json.dumps(result) if json_out else json.dumps(result, indent=2))


@app.command("scan")
def scan(
    endpoint: Annotated[str, typer.Argument(help="HOST:PORT of the device or its gateway")],
    unit: Annotated[int, typer.Option(help="Modbus unit id")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    profile: Annotated[str | None, typer.Option(help="read with a vendor profile instead of SunSpec")] = None,
    timeout: Annotated[float, typer.Option(help="reply timeout in seconds")] = 2.0,
    snippet: Annotated[
        str | None, typer.Option("--snippet", help="print the fleet-file entry of the device, with this id")
    ] = None,
) -> None:
    """SunSpec discovery at every base address (40000, 0, 50000) and one read of a device: what each
    base gave, the models and decoded points with units; --snippet prints its fleet-file entry."""
    import asyncio
    import json

    from sparcs.drivers.errors import DeviceError
    from sparcs.drivers.profiles import ProfileError
    from sparcs.drivers.scan import config_snippet, format_scan, parse_endpoint, run_scan

    try:
        host, port = parse_endpoint(endpoint)
        report = asyncio.run(run_scan(host, port, unit, timeout, profile))
    except (ValueError, DeviceError, ProfileError) as exc:
        raise fail(f"{endpoint} unit {unit}: {exc}") from None
    if snippet is not None:
        typer.echo(config_snippet(report, snippet), nl=False)
        return
    typer.echo(json.dumps(report) if json_out else format_scan(report))


@bench_app.command("poll")
def bench_poll(
    devices: Annotated[int, typer.Option(min=1, help="simulated devices to poll")] = 100,
    cycles: Annotated[int, typer.Option(min=1, help="measured poll cycles")] = 10,
    silent: Annotated[float, typer.Option(min=0.0, max=0.9, help="fraction of devices that never reply")] = 0.0,
    concurrency: Annotated[int | None, typer.Option(help="endpoints polled at once (default 256)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the generated fleet")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="one line of JSON")] = False,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0.0, max=5000.0, help="reply delay of every device (field latency)")
    ] = 0.0,
) -> None:
    """Poll N simulated devices (served by a child process) beside a bare pymodbus loop; print JSON."""
    import asyncio
    import json

    from sparcs.drivers.bench import BenchError, free_port_range, run_poll_bench
    from sparcs.simulators.fleetgen import synthetic_fleet

    try:
        fleet = synthetic_fleet(devices, seed, port_start=free_port_range(devices))
        result = asyncio.run(run_poll_bench(fleet, devices, cycles, silent, concurrency, seed, latency_ms))
    except BenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("dispatch")
def bench_dispatch(
    sites: Annotated[int, typer.Option(min=1, max=100_000, help="synthetic sites to plan (96 quarter-hours)")] = 100,
    seed: Annotated[int, typer.Option(help="seed of the synthetic fleet")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="one line of JSON")] = False,
) -> None:
    """Plan N synthetic sites: build, solve, split-back times, peak memory, gap to the monolithic optimum."""
    import json

    from sparcs.optimizer.bench import dispatch_bench

    result = dispatch_bench(sites, seed)
    typer.echo(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("load")
def bench_load(
    devices: Annotated[int, typer.Option(min=1, max=20_000, help="simulated devices to poll")] = 1000,
    clients: Annotated[int, typer.Option(min=1, max=512, help="concurrent API clients in the loaded phase")] = 32,
    poll_interval: Annotated[float, typer.Option(min=0.5, max=60.0, help="dispatch.poll_interval_s")] = 5.0,
    phase_s: Annotated[
        float | None,
        typer.Option("--phase-s", min=1.0, help="seconds each phase lasts; default: 30 polls per kind of phase"),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, max=100, help="rounds of the three phases, alternating")] = 3,
    fleet_rate: Annotated[float, typer.Option(min=1.0, help="GET /api/v1/fleet a second in the stream")] = 200.0,
    seed: Annotated[int, typer.Option(help="seed of the generated fleet")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="one line of JSON")] = False,
) -> None:
    """`sparcs run` on N simulated devices, unloaded, under API load and under a /fleet stream; print JSON."""
    import asyncio
    import json

    from sparcs.bench_load import run_load_bench
    from sparcs.drivers.bench import BenchError

    try:
        result = asyncio.run(
            run_load_bench(
                devices,
                clients,
                poll_interval_s=poll_interval,
                phase_s=phase_s,
                rounds=rounds,
                fleet_rate=fleet_rate,
                seed=seed,
            )
        )
    except BenchError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(result) if json_out else json.dumps(result, indent=2))


LogLevel = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error; default: the file's logging.level")
]
LogFormat = Annotated[
    str | None, typer.Option("--log-format", help="text or json (one object per line); default: logging.format")
]


def setup_logging(cfg: FleetConfig, level: str | None, fmt: str | None) -> Callable[[LoggingConfig], None]:
    """Configure the log from the options, else the file's ``logging`` section (exit 2 naming a bad
    value); returns what a reload calls with a changed section (the options keep winning)."""
    from sparcs.controller.logging_setup import configure_logging

    try:
        chosen = LoggingConfig(level=level or cfg.logging.level, format=fmt or cfg.logging.format)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail([f"--log-{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_url=False)]) from None

    def apply(section: LoggingConfig) -> None:
        configure_logging(level or section.level, fmt or section.format)  # type: ignore[arg-type]

    configure_logging(chosen.level, chosen.format)
    return apply


@app.command("plan")
def plan_command(
    problem: Annotated[Path, typer.Option("--problem", help="JSON file of sites to plan (docs/plan.md)")],
    json_out: Annotated[bool, typer.Option("--json", help="the plan as JSON")] = False,
) -> None:
    """Plan sites described in a JSON file, without devices; print the plan and its scored cost."""
    import json

    from sparcs.optimizer.plan_file import PlanFileError, parse, plan_file

    try:
        data = json.loads(problem.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"{problem}: (file): cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"{problem}: (file): not valid JSON: {exc}") from None
    try:
        result = plan_file(parse(data))
    except PlanFileError as exc:
        raise fail([f"{problem}: {line}" for line in exc.errors]) from None
    if json_out:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"cost {result['cost_eur']:.4f} EUR (objective {result['objective_eur']:.4f} EUR, {result['method']})")
    for s in result["sites"]:
        typer.echo(f"site {s['id']}: cost {s['cost_eur']:.4f} EUR")
        typer.echo("  period                     grid_w  battery_w       pv_w     soc")
        for k, t in enumerate(s["periods"]):
            soc = "" if s["soc"] is None else f"{s['soc'][k]:7.4f}"
            typer.echo(f"  {t}  {s['grid_w'][k]:9.1f}  {s['battery_w'][k]:9.1f}  {s['pv_w'][k]:9.1f}  {soc}")


@app.command("simulate")
def simulate(
    config: Annotated[Path, typer.Option("--config", help="fleet YAML file")],
    speed: Annotated[float | None, typer.Option(help="sim seconds per wall second (default: the file's)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    stepped: Annotated[bool, typer.Option(help="hold the clock; step it with POST /clock/step")] = False,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run the simulated fleet: print every endpoint and the control channel; stop with Ctrl-C."""
    from sparcs.simulators.cli import SimulateError, run_simulate

    cfg = load_or_exit(config)
    setup_logging(cfg, log_level, log_format)
    try:
        run_simulate(cfg, speed=speed, as_json=json_out, stepped=stepped)
    except SimulateError as exc:
        raise fail(exc.lines) from None


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", help="fleet YAML file")],
    host: Annotated[str | None, typer.Option("--host", help="API address; default: api.host")] = None,
    port: Annotated[int | None, typer.Option("--port", help="API port; default: api.port")] = None,
    data_dir: DataDir = Path("data"),
    log_level: LogLevel = None,
    log_format: LogFormat = None,
    no_migrate: Annotated[
        bool, typer.Option("--no-migrate", help="refuse an older store instead of upgrading it (`sparcs db upgrade`)")
    ] = False,
) -> None:
    """The controller and its API; with a `simulation` section also the simulated fleet (the demo).
    SIGHUP reloads the fleet file."""
    import asyncio
    import sys

    from sparcs.run import RunError
    from sparcs.run import run as serve

    def echo(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()  # the URL and token must show at once, also through a pipe

    cfg = load_or_exit(config)
    on_logging = setup_logging(cfg, log_level, log_format)
    try:
        asyncio.run(
            serve(
                cfg,
                host=host or cfg.api.host,
                port=cfg.api.port if port is None else port,
                data_dir=data_dir,
                echo=echo,
                config_path=config,
                on_logging=on_logging,
                log_level=log_level,
                log_format=log_format,
                migrate_schema=not no_migrate,
            )
        )
    except RunError as exc:
        raise fail(str(exc)) from None


@app.command("edge")
def edge(
    config: Annotated[Path, typer.Option("--config", help="fleet YAML file with a broker section")],
    site: Annotated[list[str] | None, typer.Option("--site", help="a site of this edge (repeat); default: all")] = None,
    edge_id: Annotated[str | None, typer.Option("--edge", help="edge id in broker.edges; default: the sites'")] = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """An edge gateway: polls its sites' devices, keeps their limits, follows the central's plans (docs/edges.md)."""
    import asyncio
    import logging
    import sys

    from sparcs.edge_run import EdgeRunError, choose_edge, run_edge

    def echo(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    cfg = load_or_exit(config)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        chosen = choose_edge(cfg, edge_id, site or [])
        asyncio.run(run_edge(cfg, chosen, site or [], data_dir, echo))
    except EdgeRunError as exc:
        raise fail(str(exc)) from None


@bench_app.command("edges")
def bench_edges(
    sites: Annotated[int, typer.Option(min=1, max=20_000, help="sites, each behind its own edge")] = 100,
    light: Annotated[bool, typer.Option("--light", help="synthetic telemetry without Modbus")] = False,
    poll_interval: Annotated[float, typer.Option(min=1.0, max=60.0, help="edge poll interval, s")] = 10.0,
    duration: Annotated[float, typer.Option(min=10.0, max=3600.0, help="measured window, s")] = 60.0,
    workers: Annotated[int, typer.Option(min=1, max=32, help="processes the edges run in")] = 4,
    json_out: Annotated[bool, typer.Option("--json", help="one line of JSON")] = False,
) -> None:
    """N edges, one Mosquitto (TLS, ACL), one central: telemetry age, plan fan-out, central CPU, broker load."""
    import asyncio
    import json

    from sparcs.edge.mosquitto import BrokerError
    from sparcs.edge_bench import run_edge_bench

    try:
        result = asyncio.run(run_edge_bench(sites, light, poll_interval, duration, workers))
    except BrokerError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(result) if json_out else json.dumps(result, indent=2))


@app.command("twin")
def twin(
    config: Annotated[Path, typer.Option("--config", help="fleet YAML file")],
    date: Annotated[str, typer.Option("--date", help="Europe/Berlin day to replay, YYYY-MM-DD")],
    scenario: Annotated[Path | None, typer.Option("--scenario", help="scenario YAML (config/scenarios/)")] = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option("--strategy", help="optimizer, self-consumption, none, perfect-foresight (repeat)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="folder for report.json, plots, summary.md, report.html")] = Path(
        "twin-out"
    ),
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=8, help="strategies replayed at once")] = 1,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    history: Annotated[
        Path | None, typer.Option("--history", help="replay the day the controller recorded in this data directory")
    ] = None,
    store: Annotated[str | None, typer.Option("--store", help="replay the day recorded in this store URL")] = None,
    recorded_strategy: Annotated[
        str, typer.Option("--recorded-strategy", help="the strategy that ran that day (scored by the fidelity figure)")
    ] = "optimizer",
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Replay a day against the simulated fleet on a stepped clock, once per strategy; write KPIs and plots.

    With --history or --store the simulators serve the day the controller recorded (docs/twin.md)."""
    from sparcs.twin.history import HistorySource
    from sparcs.twin.run import TwinError, parse_day, run_twin
    from sparcs.twin.strategies import STRATEGIES

    cfg = load_or_exit(config)
    setup_logging(cfg, log_level, log_format)
    source = None
    if history is not None or store is not None:
        if history is not None and store is not None:
            raise fail("--history and --store: give one of them (a data directory or a store URL)")
        if recorded_strategy not in STRATEGIES:
            raise fail(f"--recorded-strategy: unknown '{recorded_strategy}'; choose from {', '.join(STRATEGIES)}")
        source = HistorySource(data_dir=history, url=store, strategy=recorded_strategy)
    try:
        run_twin(cfg, parse_day(date), scenario, strategy or [], out, jobs=jobs, progress=progress, history=source)
    except TwinError as exc:
        raise fail(exc.lines) from None
    typer.echo(f"report: {out / 'report.json'}  summary: {out / 'summary.md'}  page: {out / 'report.html'}")


def main() -> None:  # pragma: no cover - console-script entry point
    app()
