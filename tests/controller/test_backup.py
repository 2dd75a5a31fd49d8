"""`sparcs backup` while a writer is busy on the store, and `sparcs restore`, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.controller import migrate
from sparcs.controller.store import Store
from tests.controller.conftest import small_fleet_data

ROOT = Path(__file__).resolve().parents[2]


def store_args(url: str, tmp_path: Path, name: str) -> list[str]:
    """The CLI options that point at ``url``: a data dir for SQLite, a fleet file's storage.url otherwise."""
    if url.startswith("sqlite"):
        return ["--data-dir", str(Path(url.removeprefix("sqlite:///")).parent)]
    data = small_fleet_data(1)
    data["storage"] = {"url": url}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return ["--config", str(path)]


def test_backup_while_writing_then_restore(store_url, tmp_path, request):
    Store(store_url).close()
    load = subprocess.Popen(
        [sys.executable, "-m", "tests.controller.store_load", store_url], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    acked: list[int] = []
    try:
        assert load.stdout is not None
        for line in load.stdout:
            acked.append(int(line.split()[0]))
            if len(acked) == 50:
                break
        dest = tmp_path / "backup.bin"
        done = CliRunner().invoke(app, ["backup", str(dest), *store_args(store_url, tmp_path, "live")])
        assert done.exit_code == 0, done.output
        assert "backed up" in done.output and dest.stat().st_size > 0
    finally:
        os.kill(load.pid, signal.SIGKILL)
        load.wait()
    # Restore into an empty store: what the backup holds is sound and whole (each command with its audit row).
    if store_url.startswith("sqlite"):
        target = f"sqlite:///{tmp_path / 'restored' / 'sparcs.db'}"
        (tmp_path / "restored").mkdir()
    else:
        target = request.getfixturevalue("pg_cluster").new_database()
    done = CliRunner().invoke(app, ["restore", str(dest), *store_args(target, tmp_path, "restored")])
    assert done.exit_code == 0, done.output
    restored = Store(target)
    try:
        assert restored.integrity_problems() == []
        ids = [c["id"] for c in restored.active_commands(0.0)]
        assert set(acked) <= set(ids) and ids == list(range(1, len(ids) + 1))  # a consistent prefix
        assert {a["params"]["command_id"] for a in restored.audit_log(limit=100_000)} == set(ids)
    finally:
        restored.close()


def test_restore_refuses_what_is_not_a_backup(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    done = CliRunner().invoke(app, ["restore", str(junk), "--data-dir", str(tmp_path / "data")])
    assert done.exit_code == 2 and "junk.db" in done.output and "Traceback" not in done.output
    missing = CliRunner().invoke(app, ["restore", str(tmp_path / "none.db"), "--data-dir", str(tmp_path / "data")])
    assert missing.exit_code == 2 and "no such backup file" in missing.output


def test_db_commands_upgrade_and_downgrade_one_revision(tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(Path(__file__).parent / "data" / "store-0.1.0.db", data_dir / "sparcs.db")
    run = CliRunner().invoke
    assert "revision 0001" in run(app, ["db", "current", "--data-dir", str(data_dir)]).output
    head = migrate.head_revision()
    below = migrate.script().get_revision(head).down_revision
    assert f"0001 -> {head}" in run(app, ["db", "upgrade", "--data-dir", str(data_dir)]).output
    assert "up to date" in run(app, ["db", "current", "--data-dir", str(data_dir)]).output
    assert f"{head} -> {below}" in run(app, ["db", "downgrade", "--data-dir", str(data_dir)]).output
    revision = below
    while revision != "0001":  # one revision at a time down to the oldest
        lower = migrate.script().get_revision(revision).down_revision
        assert f"{revision} -> {lower}" in run(app, ["db", "downgrade", "--data-dir", str(data_dir)]).output
        revision = lower
    down = run(app, ["db", "downgrade", "--data-dir", str(data_dir)])
    assert down.exit_code == 2 and "would delete every table" in down.output  # 0001 is the oldest
    assert "revision 0001" in run(app, ["db", "current", "--data-dir", str(data_dir)]).output


def test_run_with_no_migrate_refuses_an_older_store_naming_the_command(tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(Path(__file__).parent / "data" / "store-0.1.0.db", data_dir / "sparcs.db")
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump(small_fleet_data(1)))
    done = CliRunner().invoke(app, ["run", "--config", str(config), "--data-dir", str(data_dir), "--no-migrate"])
    assert done.exit_code == 2 and "run `sparcs db upgrade`" in done.output and "Traceback" not in done.output
    assert "revision 0001" in CliRunner().invoke(app, ["db", "current", "--data-dir", str(data_dir)]).output
