"""`sparcs token add/list/revoke`: the token is printed once, only its hash is stored, errors are one line."""

from __future__ import annotations

from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.controller.auth import authenticate, sha256_hex
from sparcs.controller.store import Store

runner = CliRunner()


def test_token_add_list_revoke(tmp_path):
    data = str(tmp_path / "d")
    out = runner.invoke(app, ["token", "add", "alice", "--role", "operator", "--data-dir", data])
    assert out.exit_code == 0, out.output
    token = out.output.strip()
    assert token.startswith("sparcs_") and len(token) > 40

    store = Store(data_dir=tmp_path / "d")
    rows = store.list_tokens()
    assert [(r.name, r.role) for r in rows] == [("alice", "operator")]
    assert rows[0].token_sha256 == sha256_hex(token) and token not in rows[0].token_sha256
    assert authenticate(store, token).role == "operator"

    listed = runner.invoke(app, ["token", "list", "--data-dir", data])
    assert listed.exit_code == 0 and listed.output.startswith("alice\toperator\t") and token not in listed.output

    again = runner.invoke(app, ["token", "add", "alice", "--data-dir", data])
    assert again.exit_code == 2 and "exists already" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["token", "add", "bob", "--role", "root", "--data-dir", data])
    assert bad.exit_code == 2 and "role 'root' is not one of viewer, operator, admin" in bad.output

    assert runner.invoke(app, ["token", "revoke", "alice", "--data-dir", data]).exit_code == 0
    assert authenticate(store, token) is None
    gone = runner.invoke(app, ["token", "revoke", "alice", "--data-dir", data])
    assert gone.exit_code == 2 and "no token named 'alice'" in gone.output
    store.close()
