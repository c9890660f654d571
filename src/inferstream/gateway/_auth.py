"""Who may call: API keys with scopes and rate limits, and the refusal to listen beyond loopback without one.

Keys come from ``gateway.token`` (one key with every scope), ``gateway.keys`` and the
TOML file ``gateway.keys_file`` (``[[keys]]`` tables, read again when the file changes:
keys rotate without a restart). When any is set, every route but the probes
(``/healthz``, ``/v2/health/*``) and the schema needs ``Authorization: Bearer <key>``,
compared in constant time, with the scope its router asks (``produce``, ``predict``,
``read``; ``admin`` has them all): 401 without a known key, 403 without the scope, 429
with ``Retry-After`` over the key's rate. Without keys the gateway listens on loopback
only, unless ``gateway.allow_insecure``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from inferstream.config import ApiKey, Scope, Settings
from inferstream.errors import ConfigError
from inferstream.gateway._body import Scope as AsgiScope
from inferstream.gateway._body import header
from inferstream.gateway._errors import ApiError
from inferstream.metrics import is_loopback

log = logging.getLogger("inferstream.gateway")

Dependency = Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]
#: A router's dependency for a scope: ``Depends(state.authorize("predict"))``.
Authorize = Callable[[Scope], Dependency]

_RELOAD_EVERY_S = 1.0
UNAUTHORIZED = "send the gateway's token or one of its API keys as `Authorization: Bearer <token>`"
_KEYS = TypeAdapter(list[ApiKey])


def check_exposure(settings: Settings, host: str) -> bool:
    """Refuse to listen beyond loopback without a token; True when the gateway will do so anyway.

    ConfigError when ``host`` is not a loopback address, ``gateway.token`` is not set and
    ``gateway.allow_insecure`` is off. Nothing here touches the network.
    """
    gateway = settings.gateway
    if gateway.token is not None or gateway.keys or gateway.keys_file is not None or is_loopback(host):
        return False
    if not settings.gateway.allow_insecure:
        raise ConfigError(
            f"the gateway would listen on {host} with no token: anyone who can reach it could predict, "
            "produce events and read every prediction. Set a token (INFERSTREAM_GATEWAY__TOKEN, or "
            "gateway.token in the config file), listen on 127.0.0.1, or pass --insecure-no-token "
            "(gateway.allow_insecure = true) to serve it open anyway"
        )
    return True


def warn_if_open(settings: Settings, host: str) -> None:
    """:func:`check_exposure`, logging a loud warning when the gateway will listen open beyond loopback."""
    if check_exposure(settings, host):
        log.warning(
            "INSECURE: the gateway listens on %s with no token (gateway.allow_insecure): anyone who can "
            "reach it can predict, produce events and read every prediction; set INFERSTREAM_GATEWAY__TOKEN",
            host,
        )


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class KeyRing:
    """The gateway's keys: which one a request carries, its scopes and its rate (thread-safe)."""

    settings: Settings
    _keys: list[tuple[ApiKey, bytes]] = field(default_factory=list)
    _file_state: tuple[float, int] | None = None
    _checked: float = 0.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._keys = self._load()

    @property
    def open(self) -> bool:
        """No key at all: every request is let through (loopback, or allow_insecure)."""
        return not self._keys and self.settings.gateway.keys_file is None

    def _load(self) -> list[tuple[ApiKey, bytes]]:
        gateway = self.settings.gateway
        keys = list(gateway.keys)
        if gateway.token is not None:
            keys.append(ApiKey(name="token", secret=gateway.token, scopes=["admin"]))
        if gateway.keys_file is not None:
            keys += _read_keys(gateway.keys_file)
        return [(key, _digest(key)) for key in keys]

    def _reload(self, now: float) -> None:
        path = self.settings.gateway.keys_file
        if path is None or now - self._checked < _RELOAD_EVERY_S:
            return
        self._checked = now
        try:
            stat = path.stat()
        except OSError:
            return  # gone for a moment (a rotation writing it): keep the keys we have
        state = (stat.st_mtime, stat.st_size)
        if state == self._file_state:
            return
        try:
            self._keys = self._load()
        except ConfigError as exc:
            log.error("%s; the keys read before stay in use", exc)
        else:
            log.warning("gateway keys read from %s: %s", path, ", ".join(key.name for key, _ in self._keys))
        self._file_state = state

    def check(self, token: str | None, scope: Scope) -> ApiKey | None:
        """The key a token is, if it may do ``scope`` now; raises 401, 403 or 429 otherwise."""
        now = time.monotonic()
        with self._lock:
            self._reload(now)
            if self.open:
                return None
            digest = hashlib.sha256((token or "").encode()).digest()
            found = None
            for key, expected in self._keys:  # every key compared, in constant time each
                if secrets.compare_digest(digest, expected) and found is None:
                    found = key
            if found is None:
                raise ApiError(401, "unauthorized", UNAUTHORIZED)
            if scope not in found.scopes and "admin" not in found.scopes:
                raise ApiError(
                    403, "forbidden", f"key {found.name!r} may not {scope} (its scopes: {', '.join(found.scopes)})"
                )
            if found.rate_per_s is not None:
                self._spend(found, found.rate_per_s, now)
            return found

    def _spend(self, key: ApiKey, rate: float, now: float) -> None:
        burst = float(key.burst or max(1, math.ceil(rate)))
        bucket = self._buckets.setdefault(key.name, _Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / rate
            raise ApiError(
                429,
                "rate_limited",
                f"key {key.name!r} is over its rate of {rate:g} requests/s: retry after {wait:.2f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        bucket.tokens -= 1


def _digest(key: ApiKey) -> bytes:
    if key.sha256 is not None:
        return bytes.fromhex(key.sha256)
    assert key.secret is not None
    return hashlib.sha256(key.secret.get_secret_value().encode()).digest()


def _read_keys(path: Path) -> list[ApiKey]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"gateway keys file {path}: {exc}") from None
    try:
        return _KEYS.validate_python(data.get("keys", []))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"gateway keys file {path}: {problems}") from None


def token_of(request: AsgiScope) -> str | None:
    """The bearer token of an ASGI request, read as FastAPI's ``HTTPBearer`` reads it (None if there is none)."""
    value = header(request, b"authorization")
    if value is None:
        return None
    scheme, _, credentials = value.partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def bearer(ring: KeyRing) -> Authorize:
    """A FastAPI dependency factory: ``authorize(scope)`` answers 401/403/429 unless the request may."""

    def authorize(scope: Scope) -> Dependency:
        # async: a sync dependency would cost every request a hop to a worker thread (the check
        # is a hash and a dict lookup; the keys file is looked at every few seconds at most).
        async def check(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
        ) -> None:
            ring.check(credentials.credentials if credentials is not None else None, scope)

        return check

    return authorize


__all__ = ["Authorize", "KeyRing", "bearer", "check_exposure", "is_loopback", "token_of", "warn_if_open"]
