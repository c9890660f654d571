"""Where a process's metrics are served: 127.0.0.1 unless told otherwise, loudly when told."""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("inferstream.metrics")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ``::1`` or ``localhost``."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def warn_if_exposed(host: str, port: int) -> bool:
    """Log a loud warning when metrics are served beyond loopback; True when they are."""
    if is_loopback(host):
        return False
    log.warning(
        "EXPOSED: Prometheus metrics on %s:%d can be read by anyone who reaches this address, with no "
        "authentication (model names and versions, topics, consumer groups, monitors, drift scores); "
        "keep metrics.host at 127.0.0.1 unless a firewall or a scraping proxy guards the port",
        host,
        port,
    )
    return True
