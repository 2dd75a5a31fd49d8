"""The `sparcs` command line: one console script, one sub-command per task (DESIGN.md "Command line").

Each command lives beside the code it drives and is registered here, so this module only wires
them up. Expected failures (a bad config, an unreachable device) print one line per problem to
stderr and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from config.schema import ConfigError, FleetConfig, load_config

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
    """Validate a fleet file and list every error with its path."""
    cfg = load_or_exit(file)
    n_dev = sum(len(s.devices) for s in cfg.sites)
    typer.echo(f"{file}: OK ({len(cfg.sites)} sites, {n_dev} devices)")


token_app = typer.Typer(no_args_is_help=True, help="API tokens: add (printed once), list, revoke.")
app.add_typer(token_app, name="token")
DataDir = Annotated[Path, typer.Option("--data-dir", help="where the SQLite store lives")]
TokenConfig = Annotated[Path | None, typer.Option("--config", help="fleet file whose storage.url to use")]


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="who the token is for (written to the audit log)")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin")] = "viewer",
    data_dir: DataDir = Path("data"),
    config: TokenConfig = None,
) -> None:
    """Create an API token; it is printed once, only its hash is stored."""
    from controller.tokens import add_token

    try:
        typer.echo(add_token(name, role, data_dir, config))
    except (ValueError, ConfigError) as exc:
        raise fail(str(exc)) from None


@token_app.command("list")
def token_list(data_dir: DataDir = Path("data"), config: TokenConfig = None) -> None:
    """List token names and roles (never the tokens)."""
    from controller.tokens import list_tokens

    for line in list_tokens(data_dir, config):
        typer.echo(line)


@token_app.command("revoke")
def token_revoke(name: str, data_dir: DataDir = Path("data"), config: TokenConfig = None) -> None:
    """Revoke a token by name."""
    from controller.tokens import revoke_token

    try:
        revoke_token(name, data_dir, config)
    except ValueError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"revoked '{name}'")


@app.command("simulate")
def simulate(
    config: Annotated[Path, typer.Option("--config", help="fleet YAML file")],
    speed: Annotated[float | None, typer.Option(help="sim seconds per wall second (default: the file's)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    stepped: Annotated[bool, typer.Option(help="hold the clock; step it with POST /clock/step")] = False,
) -> None:
    """Run the simulated fleet: print every endpoint and the control channel; stop with Ctrl-C."""
    from simulators.cli import SimulateError, run_simulate

    cfg = load_or_exit(config)
    try:
        run_simulate(cfg, speed=speed, as_json=json_out, stepped=stepped)
    except SimulateError as exc:
        raise fail(exc.lines) from None


def main() -> None:  # pragma: no cover - console-script entry point
    app()
