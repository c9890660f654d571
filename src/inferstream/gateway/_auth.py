"""Who may call: the bearer token, and the refusal to listen beyond loopback without one.

When ``gateway.token`` is set, every route but the probes (``/healthz``,
``/v2/health/*``) and the schema needs ``Authorization: Bearer <token>``, compared in
constant time. Without a token the gateway listens on loopback only, unless
``gateway.allow_insecure``.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.gateway._errors import ApiError

log = logging.getLogger("inferstream.gateway")

Authorize = Callable[[HTTPAuthorizationCredentials | None], None]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ``::1`` or ``localhost``."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(settings: Settings, host: str) -> bool:
    """Refuse to listen beyond loopback without a token; True when the gateway will do so anyway.

    ConfigError when ``host`` is not a loopback address, ``gateway.token`` is not set and
    ``gateway.allow_insecure`` is off. Nothing here touches the network.
    """
    if settings.gateway.token is not None or is_loopback(host):
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


def bearer(settings: Settings) -> Authorize:
    """A FastAPI dependency that answers 401 unless the request carries the gateway's token (if one is set)."""
    token = settings.gateway.token
    expected = token.get_secret_value().encode() if token is not None else None

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        # Constant time (hmac.compare_digest): how much of a guess matched must not show in the response time.
        if not secrets.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "send the gateway's token as `Authorization: Bearer <token>`")

    return authorize
