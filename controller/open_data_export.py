"""`sparcs opendata export`: one Europe/Berlin day of the open data as files for an open-data portal
(docs/open-data.md "Files"): a CSV and a JSON file with the same values, and their DCAT-AP.de
metadata as JSON-LD (``dcat:Dataset`` with one ``dcat:Distribution`` per file: size, SHA-256, media
type, licence; the CSV's columns as a CSVW table schema). Only quarter-hours published at the time
of the export are written (``open_data.delay_s``); the metadata states the span they cover.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparcs.config.schema import FleetConfig
from sparcs.controller.open_data import (
    LICENSE_NAME,
    LICENSE_URI,
    QUANTITIES,
    QUANTITY_KEYS,
    Area,
    AreaQuarter,
    berlin_day_span,
    iso,
)
from sparcs.controller.open_data_reader import OpenDataReader

CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "dcatde": "http://dcat-ap.de/def/dcatde/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "spdx": "http://spdx.org/rdf/terms#",
    "csvw": "http://www.w3.org/ns/csvw#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
MEDIA_TYPE = "https://www.iana.org/assignments/media-types/"
ENERGY_THEME = "http://publications.europa.eu/resource/authority/data-theme/ENER"
DAILY = "http://publications.europa.eu/resource/authority/frequency/DAILY"
AREA_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("area", "string", "the aggregate's id: district:ID, group:ID or other"),
    ("area_name", "string", "the aggregate's name"),
    ("area_kind", "string", "district, group or other"),
    ("start", "dateTime", "start of the quarter-hour (ISO 8601, UTC)"),
    ("end", "dateTime", "end of the quarter-hour (ISO 8601, UTC)"),
    ("sites", "integer", "sites with samples in the quarter-hour (at least open_data.k)"),
)
COLUMNS: tuple[tuple[str, str, str], ...] = AREA_COLUMNS + tuple(
    (q.key, "double", f"{q.name} ({q.unit_symbol}): {q.definition}") for q in QUANTITIES
)
"""The CSV's columns in order, and the keys of each JSON observation: (name, XSD datatype, meaning)."""


@dataclass(frozen=True)
class Exported:
    """What an export wrote: the files (data, then metadata) and the number of rows."""

    files: tuple[Path, ...]
    rows: int


def _row(a: Area, q: AreaQuarter) -> dict[str, Any]:
    return {
        "area": a.id,
        "area_name": a.name,
        "area_kind": a.kind,
        "start": iso(q.start_s),
        "end": iso(q.end_s),
        "sites": q.sites,
        **{k: q.values[k] for k in QUANTITY_KEYS},
    }


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c[0] for c in COLUMNS])
    for r in rows:
        w.writerow(["" if r[c[0]] is None else r[c[0]] for c in COLUMNS])
    return buf.getvalue().encode()


def _json(cfg: FleetConfig, areas: tuple[Area, ...], rows: list[dict[str, Any]], day: dt.date) -> bytes:
    doc = {
        "title": f"SPARCS swarm plant, {day.isoformat()}",
        "license": {"name": LICENSE_NAME, "uri": LICENSE_URI},
        "publisher": cfg.open_data.publisher,
        "day": day.isoformat(),
        "k": cfg.open_data.k,
        "areas": [
            {
                "id": a.id,
                "name": a.name,
                "kind": a.kind,
                "sites": len(a.sites),
                "centroid": None if a.lat is None else {"type": "Point", "coordinates": [a.lon, a.lat]},
            }
            for a in areas
        ],
        "quantities": [
            {
                "key": q.key,
                "name": q.name,
                "definition": q.definition,
                "unit": q.unit_symbol,
                "unit_uri": q.unit_definition,
            }
            for q in QUANTITIES
        ],
        "observations": rows,
    }
    return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode()


def _distribution(name: str, data: bytes, kind: str, media: str, base_url: str | None) -> dict[str, Any]:
    url = name if base_url is None else f"{base_url.rstrip('/')}/{name}"
    return {
        "@type": "dcat:Distribution",
        "dct:title": name,
        "dcat:accessURL": {"@id": url},
        "dcat:downloadURL": {"@id": url},
        "dct:format": {"@id": FILE_TYPE + kind},
        "dcat:mediaType": {"@id": MEDIA_TYPE + media},
        "dcat:byteSize": {"@value": str(len(data)), "@type": "xsd:nonNegativeInteger"},
        "spdx:checksum": {
            "@type": "spdx:Checksum",
            "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
            "spdx:checksumValue": hashlib.sha256(data).hexdigest(),
        },
        "dct:license": {"@id": LICENSE_URI},
    }


def metadata(
    cfg: FleetConfig, day: dt.date, files: dict[str, bytes], covered: tuple[float, float] | None, issued_s: float
) -> dict[str, Any]:
    """The DCAT-AP.de record of one day's files (``files``: name → bytes, the CSV first)."""
    start, end = berlin_day_span(day)
    od = cfg.open_data
    names = list(files)
    csv_dist = _distribution(names[0], files[names[0]], "CSV", "text/csv", od.base_url)
    csv_dist["csvw:tableSchema"] = {
        "csvw:column": [{"csvw:name": n, "csvw:datatype": t, "dct:description": d} for n, t, d in COLUMNS]
    }
    json_dist = _distribution(names[1], files[names[1]], "JSON", "application/json", od.base_url)
    record: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "dcat:Dataset",
        "dct:identifier": f"sparcs-open-data-{day.isoformat()}",
        "dct:title": f"SPARCS swarm plant: PV, feed-in, curtailment, batteries, flexibility per district, {day}",
        "dct:description": (
            "Quarter-hourly sums over at least "
            f"{od.k} sites per aggregate: PV produced, fed in, curtailed by cause, battery throughput, "
            "self-consumption share, flexibility offered. No household's data is published."
        ),
        "dct:issued": {"@value": iso(issued_s), "@type": "xsd:dateTime"},
        "dct:modified": {"@value": iso(issued_s), "@type": "xsd:dateTime"},
        "dct:publisher": {"@type": "foaf:Agent", "foaf:name": od.publisher},
        "dct:license": {"@id": LICENSE_URI},
        "dcatde:licenseAttributionByText": od.publisher,
        "dcat:theme": {"@id": ENERGY_THEME},
        "dcat:keyword": ["photovoltaics", "battery storage", "curtailment", "swarm power plant", "open data"],
        "dct:accrualPeriodicity": {"@id": DAILY},
        "dct:temporal": {
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": {"@value": iso(start), "@type": "xsd:dateTime"},
            "dcat:endDate": {"@value": iso(end), "@type": "xsd:dateTime"},
        },
        "dcat:temporalResolution": {"@value": "PT15M", "@type": "xsd:duration"},
        "dcat:distribution": [csv_dist, json_dist],
    }
    if covered is not None:
        record["dct:description"] += f" Covers {iso(covered[0])} to {iso(covered[1])} (published then)."
    return record


def export_day(cfg: FleetConfig, reader: OpenDataReader, day: dt.date, out: Path) -> Exported:
    """Write ``day``'s CSV, JSON and DCAT-AP.de metadata into ``out`` (made if missing)."""
    start, end = berlin_day_span(day)
    areas = reader.areas.published
    by_id = {a.id: a for a in areas}
    quarters = reader.quarters(start, end)
    rows = [_row(by_id[q.area_id], q) for q in quarters]
    stem = f"sparcs-open-data-{day.isoformat()}"
    files = {f"{stem}.csv": _csv(rows), f"{stem}.json": _json(cfg, areas, rows, day)}
    covered = (min(q.start_s for q in quarters), max(q.end_s for q in quarters)) if quarters else None
    meta = metadata(cfg, day, files, covered, reader.now())
    files[f"{stem}.dcat.jsonld"] = (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = out / name
        path.write_bytes(data)
        paths.append(path)
    return Exported(tuple(paths), len(rows))
