"""The live dashboard at ``/ui``: throughput and latency per model version, lag, dead letters, drift, tail, search.

One page (``static/index.html``, a small script and style, and the vendored uPlot
chart library) over one polled JSON document kept by :class:`._board.Board`. See
:mod:`._routes` for the routes and :mod:`._access` for the token link and cookie.
"""

from __future__ import annotations

from inferstream.gateway.ui._access import dashboard_link
from inferstream.gateway.ui._routes import router

__all__ = ["dashboard_link", "router"]
