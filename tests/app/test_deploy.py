"""The deployment files in deploy/ fit the program: the systemd unit's and the container's command lines
are accepted by `sparcs run`, the unit reloads with SIGHUP, and the container copies every folder
the package installs from."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparcs.cli import app

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "sparcs.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"


def accepted(args: list[str]) -> None:
    """`sparcs` parses ``args`` (unknown options fail before --help is honoured)."""
    out = CliRunner().invoke(app, [*args, "--help"])
    assert out.exit_code == 0, (args, out.output)


def test_systemd_unit_runs_sparcs_with_known_options_and_reloads_with_sighup():
    text = UNIT.read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.+)$", text, flags=re.M)
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/bin/sparcs") and argv[1] == "run"
    accepted(argv[1:])
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, flags=re.M)
    assert re.search(r"^KillMode=mixed$", text, flags=re.M)  # the controller stops its solver itself
    if shutil.which("systemd-analyze"):
        res = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
        problems = [ln for ln in res.stderr.splitlines() if "is not executable" not in ln and ln.strip()]
        assert not problems, problems  # only the binary is missing on a machine without the install


def test_containerfile_installs_every_package_folder_and_runs_known_options():
    text = CONTAINERFILE.read_text()
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\w+) \1$", text, flags=re.M))
    missing = {f.split("/")[0] for f in folders} - copied
    assert not missing, f"deploy/Containerfile does not copy {missing}"
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, flags=re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.M)
    assert entry and cmd
    argv = json.loads(entry.group(1)) + json.loads(cmd.group(1))
    assert argv[:2] == ["sparcs", "run"]
    accepted(argv[1:])
    assert "STOPSIGNAL SIGTERM" in text and "USER sparcs" in text


@pytest.mark.parametrize("path", [UNIT, CONTAINERFILE])
def test_deploy_files_are_named_in_the_readme(path):
    assert f"deploy/{path.name}" in (ROOT / "README.md").read_text()
