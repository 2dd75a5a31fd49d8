"""API tokens with roles: viewer reads, operator also commands, admin also manages tokens.

A token is ``secrets.token_urlsafe(32)``, shown once; only its SHA-256 is stored. Checking compares
the digest against every live token with ``hmac.compare_digest`` so the time taken does not reveal
how much of a guess matched. :class:`TokenBook` is what the API's admin routes use: the same
functions on one store and clock, each change audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sparcs.controller.store import Store, TokenRow

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
TOKEN_PREFIX = "sparcs_"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (written to the audit log) and its role."""

    name: str
    role: Role

    def may(self, needed: Role) -> bool:
        return _RANK[self.role] >= _RANK[needed]


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: Store, name: str, role: str, at: float) -> str:
    """Store a new token's hash under ``name`` and return the token (the only time it is visible)."""
    if role not in _RANK:
        raise ValueError(f"role '{role}' is not one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"token name '{name}' must be 1-64 letters, digits, '-', '_' or '.'")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(name, role, sha256_hex(token), at)
    return token


def authenticate(store: Store, token: str) -> Principal | None:
    """The principal a presented token belongs to, or None."""
    digest = sha256_hex(token)
    found: Principal | None = None
    for row in store.list_tokens():
        # No early exit: every live token is compared so timing does not depend on which matched.
        if hmac.compare_digest(row.token_sha256, digest):
            found = Principal(row.name, row.role)  # type: ignore[arg-type]
    return found


class TokenBook:
    """The tokens of one store: authenticate a presented token, list, add and revoke; every add and
    revoke is written to the audit log under the admin who made it."""

    def __init__(self, store: Store, clock: Callable[[], float]):
        self._store, self._clock = store, clock

    def authenticate(self, token: str) -> Principal | None:
        """The principal ``token`` belongs to, or None (unknown or revoked)."""
        return authenticate(self._store, token)

    def live(self) -> list[TokenRow]:
        """Every live token (hashes only), by name."""
        return self._store.list_tokens()

    def add(self, name: str, role: Role, who: str) -> str:
        """Create a token for ``name`` with ``role``; returns it (the only time it is visible).
        Raises ValueError naming what is wrong with the name (e.g. taken)."""
        now = self._clock()
        token = create_token(self._store, name, role, now)
        self._store.audit_event(ts=now, who=who, action="token-add", params={"name": name, "role": role}, result="ok")
        return token

    def revoke(self, name: str, who: str) -> bool:
        """Revoke the token ``name``; False (and nothing audited) when there is none."""
        now = self._clock()
        if not self._store.revoke_token(name):
            return False
        self._store.audit_event(ts=now, who=who, action="token-revoke", params={"name": name}, result="ok")
        return True
