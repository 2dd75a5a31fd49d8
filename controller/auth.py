"""API tokens with roles: viewer reads, operator also commands, admin also manages tokens.

A token is ``secrets.token_urlsafe(32)``, shown once; only its SHA-256 is stored. Checking compares
the digest against every stored token with ``hmac.compare_digest`` so the time taken does not reveal
how much of a guess matched. A token may carry an expiry (Unix s); past it the token is refused with
a message that says so (:class:`Expired`), and ``rotate`` gives the same name and role a new secret.

:class:`TokenBook` is what the API's admin routes and the `sparcs token` commands use: the same
functions on one store and clock, each change audited under who made it (an admin token's name, or
``cli:<user>`` for the command line). It reads the stored tokens at most once per
:data:`TOKENS_HELD_S` to check a known token (a change through the book itself is seen at once; a
revocation or rotation by another process, such as `sparcs token revoke`, within that time), so a
burst of requests costs no store reads. :class:`SignInLimiter` counts failed sign-ins per client address
(docs/security.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sparcs.controller.store import Store, TokenRow

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
TOKEN_PREFIX = "sparcs_"
MAX_EXPIRES_IN_S = 10 * 366 * 86_400
"""The longest expiry a token can be given (about ten years); without one it never expires."""
TOKENS_HELD_S = 2.0
"""How long a :class:`TokenBook` checks requests against the tokens it last read from the store (s)."""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (written to the audit log) and its role."""

    name: str
    role: Role

    def may(self, needed: Role) -> bool:
        return _RANK[self.role] >= _RANK[needed]


@dataclass(frozen=True)
class Expired:
    """A token that was valid but whose expiry (Unix s) has passed."""

    name: str
    expired_at: float

    @property
    def message(self) -> str:
        at = dt.datetime.fromtimestamp(self.expired_at, dt.UTC).isoformat()
        return f"token '{self.name}' expired at {at}; ask an admin for a new one (sparcs token rotate {self.name})"


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"token name '{name}' must be 1-64 letters, digits, '-', '_' or '.'")


def expires_at(now_s: float, expires_in_s: float | None) -> float | None:
    """The expiry (Unix s) of a token made at ``now_s`` that lives ``expires_in_s`` (None: never)."""
    if expires_in_s is None:
        return None
    if not 0 < expires_in_s <= MAX_EXPIRES_IN_S or math.isnan(expires_in_s):
        raise ValueError(f"expiry must be more than 0 s and at most {MAX_EXPIRES_IN_S} s (about ten years)")
    return now_s + expires_in_s


def create_token(store: Store, name: str, role: str, at: float, expires_in_s: float | None = None) -> str:
    """Store a new token's hash under ``name`` and return the token (the only time it is visible)."""
    if role not in _RANK:
        raise ValueError(f"role '{role}' is not one of {', '.join(ROLES)}")
    _check_name(name)
    until = expires_at(at, expires_in_s)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(name, role, sha256_hex(token), at, until)
    return token


def check_token(store: Store, token: str, now_s: float) -> Principal | Expired | None:
    """The principal a presented token belongs to, :class:`Expired` if its expiry has passed, or None."""
    return match_token(store.list_tokens(), token, now_s)


def match_token(rows: list[TokenRow], token: str, now_s: float) -> Principal | Expired | None:
    """The principal of ``rows`` a presented token belongs to, :class:`Expired` if its expiry has
    passed (at ``now_s``, Unix s), or None."""
    digest = sha256_hex(token)
    found: TokenRow | None = None
    for row in rows:
        # No early exit: every token is compared so timing does not depend on which matched.
        if hmac.compare_digest(row.token_sha256, digest):
            found = row
    if found is None:
        return None
    if found.expires_at is not None and now_s >= found.expires_at:
        return Expired(found.name, found.expires_at)
    return Principal(found.name, found.role)  # type: ignore[arg-type]


class TokenBook:
    """The tokens of one store: authenticate a presented token, list, add, rotate and revoke; every
    change is written to the audit log under who made it. ``clock``: the controller's (Unix s, for
    expiry); ``monotonic``: for how long the tokens read are held (:data:`TOKENS_HELD_S`)."""

    def __init__(self, store: Store, clock: Callable[[], float], monotonic: Callable[[], float] = time.monotonic):
        self._store, self._clock, self._monotonic = store, clock, monotonic
        self._held: tuple[float, list[TokenRow]] | None = None

    def check(self, token: str) -> Principal | Expired | None:
        """The principal ``token`` belongs to, :class:`Expired`, or None (unknown or revoked), against
        the stored tokens as read at most :data:`TOKENS_HELD_S` ago (a token not among them is looked
        for in the store at once: a new one works at once, and failed sign-ins are limited per client
        address); expiry against the clock now."""
        now = self._monotonic()
        held = self._held
        if held is not None and now - held[0] < TOKENS_HELD_S:
            got = match_token(held[1], token, self._clock())
            if got is not None:
                return got
        self._held = (now, self._store.list_tokens())  # stale, or a token not among those held
        return match_token(self._held[1], token, self._clock())

    def live(self) -> list[TokenRow]:
        """Every stored token (hashes only), by name, expired ones included (``expires_at`` says)."""
        return self._store.list_tokens()

    def add(self, name: str, role: Role, who: str, expires_in_s: float | None = None) -> str:
        """Create a token for ``name`` with ``role``; returns it (the only time it is visible).
        Raises ValueError naming what is wrong (the name taken, the role unknown, the expiry)."""
        now = self._clock()
        token = create_token(self._store, name, role, now, expires_in_s)
        self._held = None
        params = {"name": name, "role": role, "expires_at": expires_at(now, expires_in_s)}
        self._store.audit_event(ts=now, who=who, action="token-add", params=params, result="ok")
        return token

    def rotate(self, name: str, who: str, expires_in_s: float | None = None) -> str | None:
        """Give the token ``name`` a new secret (the old one stops working at once) and a new expiry
        (None: never); returns the new token, or None (nothing audited) when there is no such token."""
        now = self._clock()
        until = expires_at(now, expires_in_s)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        if not self._store.rotate_token(name, sha256_hex(token), now, until):
            return None
        self._held = None
        params = {"name": name, "expires_at": until}
        self._store.audit_event(ts=now, who=who, action="token-rotate", params=params, result="ok")
        return token

    def revoke(self, name: str, who: str) -> bool:
        """Revoke the token ``name``; False (and nothing audited) when there is none."""
        now = self._clock()
        if not self._store.revoke_token(name):
            return False
        self._held = None
        self._store.audit_event(ts=now, who=who, action="token-revoke", params={"name": name}, result="ok")
        return True


class SignInLimiter:
    """Failed sign-ins per client address: after ``max_failures`` within ``window_s`` the address is
    refused (429) until the oldest of them leaves the window, whatever it presents.

    Memory is bounded: at most ``max_clients`` addresses are tracked; the one seen least recently
    is forgotten first. Times are the injected clock's (s).
    """

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float], max_clients: int = 10_000
    ) -> None:
        self.max_failures, self.window_s, self.clock, self.max_clients = max_failures, window_s, clock, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        seen = self._failures.get(client)
        if seen is None:
            return deque()
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if not seen:
            del self._failures[client]
        return seen

    def retry_after_s(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again, or None when it may now."""
        now = self.clock()
        seen = self._recent(client, now)
        if len(seen) < self.max_failures:
            return None
        return max(1, math.ceil(seen[0] + self.window_s - now))

    def failed(self, client: str) -> None:
        """Count one failed sign-in of ``client``."""
        now = self.clock()
        seen = self._failures.setdefault(client, deque())
        seen.append(now)
        while len(seen) > self.max_failures:
            seen.popleft()  # only the last max_failures matter for the window
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
