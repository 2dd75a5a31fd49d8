"""Security of the API over real HTTP: failed sign-ins limited per client (429 + Retry-After), token
expiry and rotation, security headers, /docs from local files only, HTTPS from certificate files."""

from __future__ import annotations

import re
import ssl
import subprocess
import time

import httpx
import pytest

from sparcs.config.schema import ApiConfig
from sparcs.controller.api_server import TlsError, check_tls
from sparcs.controller.auth import SignInLimiter, TokenBook, create_token
from tests.controller.serving import serving


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_failed_sign_ins_are_limited_per_client_address(tmp_path, small_cfg):
    small_cfg.api.signin_max_failures = 3
    small_cfg.api.signin_window_s = 1.0
    async with serving(small_cfg, tmp_path) as served:
        good = create_token(served.store, "v", "viewer", 0.0)
        async with httpx.AsyncClient(base_url=served.base_url) as http:
            for _ in range(3):
                r = await http.get("/api/v1/fleet", headers=bearer("sparcs_guess"))
                assert r.status_code == 401 and r.json()["error"] == "unknown or revoked token"
            blocked = await http.get("/api/v1/fleet", headers=bearer("sparcs_guess"))
            assert blocked.status_code == 429, blocked.text
            assert int(blocked.headers["Retry-After"]) >= 1
            assert "too many failed sign-ins from 127.0.0.1" in blocked.json()["error"]
            # While blocked, even the right token is refused: a guess that hits is not told apart.
            assert (await http.get("/api/v1/fleet", headers=bearer(good))).status_code == 429
            # A request without a token is no sign-in attempt and is not counted.
            assert (await http.get("/healthz")).status_code == 200
            deadline = time.monotonic() + 30
            while (await http.get("/api/v1/fleet", headers=bearer(good))).status_code == 429:
                assert time.monotonic() < deadline, "the block never lifted"
                time.sleep(0.2)
            assert (await http.get("/api/v1/fleet", headers=bearer(good))).status_code == 200


def test_sign_in_limiter_window_and_bounded_memory():
    now = [0.0]
    lim = SignInLimiter(2, 10.0, lambda: now[0], max_clients=3)
    lim.failed("a")
    assert lim.retry_after_s("a") is None
    now[0] = 4.0
    lim.failed("a")
    assert lim.retry_after_s("a") == 6  # until the first failure leaves the window
    now[0] = 10.5
    assert lim.retry_after_s("a") is None
    for c in ("b", "c", "d", "e"):
        lim.failed(c)
    assert len(lim._failures) == 3  # the least recently seen address is forgotten first


async def test_expired_token_is_401_saying_so_and_rotation_replaces_the_secret(tmp_path, small_cfg):
    async with serving(small_cfg, tmp_path) as served:
        admin = create_token(served.store, "root", "admin", time.time())
        old = create_token(served.store, "ops", "operator", time.time() - 7200, expires_in_s=3600)
        async with httpx.AsyncClient(base_url=served.base_url) as http:
            r = await http.get("/api/v1/fleet", headers=bearer(old))
            assert r.status_code == 401
            assert re.search(r"token 'ops' expired at \d{4}-\d\d-\d\dT.*sparcs token rotate ops", r.json()["error"])

            made = await http.post(
                "/api/v1/tokens", headers=bearer(admin), json={"name": "temp", "role": "viewer", "expires_in_s": 3600}
            )
            assert made.status_code == 201
            listed = {t["name"]: t for t in (await http.get("/api/v1/tokens", headers=bearer(admin))).json()}
            assert listed["temp"]["expires_at"] is not None and listed["root"]["expires_at"] is None
            too_long = await http.post(
                "/api/v1/tokens", headers=bearer(admin), json={"name": "x", "role": "viewer", "expires_in_s": 10**12}
            )
            assert too_long.status_code == 422 and too_long.json()["fields"][0]["field"] == "expires_in_s"

            rotated = await http.post("/api/v1/tokens/ops/rotate", headers=bearer(admin), json={"expires_in_s": 600})
            assert rotated.status_code == 201
            new = rotated.json()["token"]
            assert new != old
            session = await http.get("/api/v1/session", headers=bearer(new))
            assert session.json() == {"name": "ops", "role": "operator", "may_command": True}
            assert (await http.get("/api/v1/fleet", headers=bearer(old))).status_code == 401
            missing = await http.post("/api/v1/tokens/nobody/rotate", headers=bearer(admin), json={})
            assert missing.status_code == 404
            audit = (await http.get("/api/v1/audit", headers=bearer(admin))).json()
            rot = next(a for a in audit if a["action"] == "token-rotate")
            assert rot["who"] == "root" and rot["params"]["name"] == "ops"


def test_token_book_expiry_uses_its_clock(tmp_path, small_cfg):
    from sparcs.controller.store import Store

    store = Store(data_dir=tmp_path)
    now = [1000.0]
    book = TokenBook(store, lambda: now[0])
    token = book.add("t", "viewer", "test", expires_in_s=60)
    assert book.check(token).name == "t"
    now[0] = 1060.0
    assert book.check(token).expired_at == 1060.0
    with pytest.raises(ValueError, match="expiry must be more than 0 s"):
        book.add("u", "viewer", "test", expires_in_s=0)
    store.close()


async def test_security_headers_on_every_answer(tmp_path, small_cfg):
    async with serving(small_cfg, tmp_path) as served, httpx.AsyncClient(base_url=served.base_url) as http:
        for path in ("/healthz", "/api/v1/fleet", "/", "/docs", "/openapi.json"):
            r = await http.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path
            assert r.headers["x-frame-options"] == "DENY", path
            assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"]), path
            assert "server" not in r.headers, path
        api = await http.get("/api/v1/fleet")
        assert api.status_code == 401 and api.headers["cache-control"] == "no-store"
        page = await http.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]  # the dashboard's own kept
        # A write refused by the request limits (before any route) carries them too.
        refused = await http.post("/api/v1/commands/pause", json={})
        assert refused.status_code == 401 and refused.headers["x-frame-options"] == "DENY"


async def test_docs_page_and_everything_it_loads_are_served_locally(tmp_path, small_cfg):
    async with serving(small_cfg, tmp_path) as served, httpx.AsyncClient(base_url=served.base_url) as http:
        page = await http.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        assert not re.search(r"https?://", page.text), "the docs page names another origin"
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        refs += re.findall(r"url: '([^']+)'", page.text)  # the schema Swagger UI loads
        assert any(ref.endswith("swagger-ui-bundle.js") for ref in refs)
        assert any(ref.endswith("swagger-ui.css") for ref in refs)
        assert "/openapi.json" in refs
        for ref in refs:
            assert ref.startswith("/"), ref
            got = await http.get(ref)
            assert got.status_code == 200 and len(got.content) > 100, ref
        js = await http.get("/docs-assets/swagger-ui-bundle.js")
        assert "javascript" in js.headers["content-type"] and len(js.content) > 500_000
        csp = page.headers["content-security-policy"]
        assert "script-src 'self' 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert (await http.get("/redoc")).status_code == 404  # no page that would load a CDN


def self_signed(tmp_path) -> tuple:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_from_certificate_files(tmp_path, small_cfg):
    cert, key = self_signed(tmp_path)
    small_cfg.api = ApiConfig(tls_cert_file=cert, tls_key_file=key)
    async with serving(small_cfg, tmp_path) as served:
        assert served.base_url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=served.base_url, verify=trust) as http:
            r = await http.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            assert r.headers["strict-transport-security"].startswith("max-age=")
        plain = served.base_url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient() as http:
                await http.get(f"{plain}/healthz")  # no plain HTTP on the TLS port
        async with httpx.AsyncClient(base_url=served.base_url) as http:  # the system's trust: refused
            with pytest.raises(httpx.ConnectError):
                await http.get("/healthz")


def test_tls_files_that_cannot_be_used_are_one_line_naming_the_field(tmp_path, small_cfg):
    cert, key = self_signed(tmp_path)
    with pytest.raises(TlsError, match=r"api.tls_cert_file: .*missing.pem is not a readable file"):
        check_tls(ApiConfig(tls_cert_file=tmp_path / "missing.pem", tls_key_file=key))
    with pytest.raises(TlsError, match="give a PEM certificate and its matching private key"):
        check_tls(ApiConfig(tls_cert_file=cert, tls_key_file=cert))  # a certificate is no key
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        ApiConfig(tls_cert_file=cert)


def test_sparcs_run_with_a_missing_certificate_exits_2_with_one_line(tmp_path):
    import sys

    import yaml

    from tests.controller.conftest import small_fleet_data

    data = small_fleet_data(1)
    data["api"] = {"tls_cert_file": "tls/cert.pem", "tls_key_file": "tls/key.pem"}  # relative to the file
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [sys.executable, "-m", "sparcs", "run", "--config", str(path), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        f"api.tls_cert_file: {tmp_path / 'tls' / 'cert.pem'} is not a readable file; give the PEM file's path"
    )
    assert "Traceback" not in res.stderr
