"""`sparcs token add/list/revoke`: the token is printed once, only its hash is stored, errors are one line."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.controller.auth import check_token, sha256_hex
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
    assert check_token(store, token, time.time()).role == "operator"

    listed = runner.invoke(app, ["token", "list", "--data-dir", data])
    assert listed.exit_code == 0 and listed.output.startswith("alice\toperator\t") and token not in listed.output

    again = runner.invoke(app, ["token", "add", "alice", "--data-dir", data])
    assert again.exit_code == 2 and "exists already" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["token", "add", "bob", "--role", "root", "--data-dir", data])
    assert bad.exit_code == 2 and "role 'root' is not one of viewer, operator, admin" in bad.output

    assert runner.invoke(app, ["token", "revoke", "alice", "--data-dir", data]).exit_code == 0
    assert check_token(store, token, time.time()) is None
    gone = runner.invoke(app, ["token", "revoke", "alice", "--data-dir", data])
    assert gone.exit_code == 2 and "no token named 'alice'" in gone.output
    store.close()


def test_cli_token_changes_are_audited_as_cli_user_with_expiry_and_rotation(tmp_path, monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "mara")
    data = str(tmp_path / "d")
    out = runner.invoke(app, ["token", "add", "bob", "--role", "viewer", "--expires-in", "2h", "--data-dir", data])
    assert out.exit_code == 0, out.output
    first = out.output.strip()
    listed = runner.invoke(app, ["token", "list", "--data-dir", data]).output
    assert listed.startswith("bob\tviewer\t") and not listed.strip().endswith("never")

    rotated = runner.invoke(app, ["token", "rotate", "bob", "--data-dir", data])
    assert rotated.exit_code == 0, rotated.output
    second = rotated.output.strip()
    store = Store(data_dir=tmp_path / "d")
    assert second != first and check_token(store, first, time.time()) is None
    assert check_token(store, second, time.time()).name == "bob"
    assert runner.invoke(app, ["token", "list", "--data-dir", data]).output.strip().endswith("never")
    assert runner.invoke(app, ["token", "revoke", "bob", "--data-dir", data]).exit_code == 0

    audit = list(reversed(store.audit_log()))
    assert [(a["who"], a["action"], a["params"]["name"]) for a in audit] == [
        ("cli:mara", "token-add", "bob"),
        ("cli:mara", "token-rotate", "bob"),
        ("cli:mara", "token-revoke", "bob"),
    ]
    assert audit[0]["params"]["expires_at"] > audit[0]["ts"] + 7000
    store.close()

    bad = runner.invoke(app, ["token", "add", "eve", "--expires-in", "soon", "--data-dir", data])
    assert bad.exit_code == 2 and "--expires-in 'soon' must be a whole number with a unit" in bad.output
    nobody = runner.invoke(app, ["token", "rotate", "nobody", "--data-dir", data])
    assert nobody.exit_code == 2 and "no token named 'nobody'" in nobody.output
