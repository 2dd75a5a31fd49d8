"""`sparcs opendata export`: a day's CSV and JSON and their DCAT-AP.de metadata; the files validate
against the metadata (byte size, SHA-256, media type, the CSV's columns and the JSON's keys as the
table schema states them), carry the Datenlizenz Deutschland – Namensnennung 2.0, and hold the same
values as the store's sums; bad arguments are one line naming them."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sparcs.cli import app
from sparcs.config.schema import validate_config
from sparcs.controller.open_data import LICENSE_URI, QUANTITY_KEYS
from sparcs.controller.store import Store
from tests.opendata.conftest import HOURS, START, demo_data, fill

SPARCS = [sys.executable, "-m", "sparcs"]
DAY = dt.date(2026, 6, 21)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = demo_data()
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    cfg = validate_config(data)
    store = Store(data_dir=tmp / "data")
    history = fill(store, cfg)
    store.close()
    args = ["opendata", "export", "--config", str(tmp / "fleet.yaml"), "--date", DAY.isoformat()]
    run = subprocess.run(
        [*SPARCS, *args, "--out", str(tmp / "out"), "--data-dir", str(tmp / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return tmp, cfg, history, run.stdout


def test_the_files_validate_against_their_metadata(exported):
    tmp, cfg, _, stdout = exported
    out = tmp / "out"
    meta = json.loads((out / f"sparcs-open-data-{DAY}.dcat.jsonld").read_text())
    assert meta["@type"] == "dcat:Dataset"
    assert meta["dct:license"] == {"@id": LICENSE_URI} == {"@id": "http://dcat-ap.de/def/licenses/dl-by-de/2.0"}
    assert meta["dct:publisher"]["foaf:name"] == cfg.open_data.publisher
    dists = meta["dcat:distribution"]
    assert [d["@type"] for d in dists] == ["dcat:Distribution"] * 2
    media = {}
    for d in dists:
        path = out / Path(d["dcat:downloadURL"]["@id"]).name
        data = path.read_bytes()
        assert int(d["dcat:byteSize"]["@value"]) == len(data)
        assert d["spdx:checksum"]["spdx:algorithm"]["@id"] == "spdx:checksumAlgorithm_sha256"
        assert d["spdx:checksum"]["spdx:checksumValue"] == hashlib.sha256(data).hexdigest()
        assert d["dct:license"] == {"@id": LICENSE_URI}
        media[d["dcat:mediaType"]["@id"].rsplit("/", 2)[-2:][1]] = (path, d)
        assert str(path) in stdout
    csv_path, csv_dist = media["csv"]
    columns = [c["csvw:name"] for c in csv_dist["csvw:tableSchema"]["csvw:column"]]
    types = {c["csvw:name"]: c["csvw:datatype"] for c in csv_dist["csvw:tableSchema"]["csvw:column"]}
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == columns
    for r in rows:
        for name, value in r.items():
            if types[name] == "double" and value != "":
                float(value)
            elif types[name] == "integer":
                assert int(value) >= cfg.open_data.k
            elif types[name] == "dateTime":
                assert dt.datetime.fromisoformat(value).utcoffset() is not None
    json_path, _ = media["json"]
    doc = json.loads(json_path.read_text())
    assert doc["license"]["uri"] == LICENSE_URI
    assert [list(o) for o in doc["observations"]] == [columns] * len(rows)
    assert len(rows) == len(doc["observations"]) == 10 * HOURS * 4 - 1
    assert f"{len(rows)} rows" in stdout


def test_the_files_hold_the_store_sums(exported):
    tmp, cfg, history, _ = exported
    doc = json.loads((tmp / "out" / f"sparcs-open-data-{DAY}.json").read_text())
    with (tmp / "out" / f"sparcs-open-data-{DAY}.csv").open() as f:
        rows = list(csv.DictReader(f))
    sites_of = {a["id"]: a for a in doc["areas"]}
    assert all(a["sites"] >= cfg.open_data.k for a in sites_of.values())
    for o, r in zip(doc["observations"], rows, strict=True):
        district = o["area"].removeprefix("district:")
        sites = frozenset(s.id for s in cfg.sites if s.district == district)
        want = history.expected(sites, dt.datetime.fromisoformat(o["start"]).timestamp())
        for key in QUANTITY_KEYS:
            assert o[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12)
            assert (float(r[key]) if r[key] else None) == o[key]  # the CSV holds the same numbers
    assert dt.datetime.fromisoformat(doc["observations"][0]["start"]).timestamp() == START


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "21.06.2026"], "--date: '21.06.2026' is not a day"),
        (["--date", "2026-06-21", "--config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_arguments_are_one_line_naming_them(tmp_path, args, message):
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(demo_data(), allow_unicode=True))
    base = ["opendata", "export", "--config", str(tmp_path / "fleet.yaml"), "--out", str(tmp_path / "o")]
    run = CliRunner().invoke(app, [*base, *args])
    assert run.exit_code == 2
    assert message in run.stderr and "Traceback" not in run.output
