"""How the API is served: the uvicorn settings of `sparcs run` in one place (TLS, logging, connections).

HTTPS when ``api.tls_cert_file`` and ``api.tls_key_file`` are set (PEM files; the key must match the
certificate); the files are checked before the server starts, so a wrong path or a key that does
not match is one line naming the field, not a traceback. uvicorn writes its records through the
log SPARCS configured (:mod:`~sparcs.controller.logging_setup`: ``log_config=None``), without an
access log. Idle kept-alive connections close after ``api.keep_alive_s``; beyond
``api.max_connections`` connections or requests in progress new requests get 503
(docs/architecture.md "The API beside the control loop"). docs/security.md "TLS".
"""

from __future__ import annotations

import ssl

import uvicorn
from fastapi import FastAPI

from sparcs.config.schema import ApiConfig

STOP_TIMEOUT_S = 10.0
"""How long the API has to finish its requests when it is stopped (s)."""


class TlsError(ValueError):
    """TLS files that cannot be used; the message names the field and what to do."""


def check_tls(api: ApiConfig) -> ssl.SSLContext | None:
    """The server's TLS context from the configured files, or None without TLS; raises TlsError."""
    if api.tls_cert_file is None or api.tls_key_file is None:
        return None
    for key, path in (("tls_cert_file", api.tls_cert_file), ("tls_key_file", api.tls_key_file)):
        if not path.is_file():
            raise TlsError(f"api.{key}: {path} is not a readable file; give the PEM file's path")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(api.tls_cert_file), str(api.tls_key_file))
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"api.tls_cert_file/api.tls_key_file: cannot load {api.tls_cert_file} with {api.tls_key_file}: {exc}; "
            "give a PEM certificate and its matching private key"
        ) from None
    return ctx


def server_config(app: FastAPI, api: ApiConfig) -> uvicorn.Config:
    """The uvicorn settings of the API: TLS from ``api`` (checked first, TlsError), the process's
    logging (uvicorn's loggers keep no level of their own, so a reload's level reaches them), the
    connection bounds of ``api``."""
    check_tls(api)
    tls = api.tls_cert_file is not None and api.tls_key_file is not None
    return uvicorn.Config(
        app,
        log_level=None,
        log_config=None,
        lifespan="off",
        access_log=False,
        server_header=False,
        ssl_certfile=str(api.tls_cert_file) if tls else None,
        ssl_keyfile=str(api.tls_key_file) if tls else None,
        timeout_keep_alive=api.keep_alive_s,  # type: ignore[arg-type]  # uvicorn takes any number of seconds
        limit_concurrency=api.max_connections,
        timeout_graceful_shutdown=int(STOP_TIMEOUT_S),
    )
