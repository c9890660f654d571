"""The HTTP gateway: predictions, prediction streams and events over HTTP, through Kafka.

============================================  ==============================================
``POST /v1/models/{name}/predict``            one prediction, request/reply through Kafka
``GET  /v1/predictions/stream?model=``        server-sent events of the predictions topic
``POST /v1/events``                           produce one event or a list, validated
``POST /v1/search``, ``POST /v1/retrieve``    search the vector index; passages for a RAG prompt
``GET  /v1/alerts[/stream]``                  recent drift alerts; server-sent events of new ones
``POST /v1/embeddings``, ``GET /v1/models``   OpenAI-compatible embeddings (and the model list)
``/v2/...``                                   Open Inference Protocol v2: metadata, readiness, infer
``GET  /healthz``                             200 when the broker answers, else 503
``GET  /metrics``                             Prometheus text
``GET  /openapi.json`` and ``/docs``          the API's schema (Swagger UI served here, no CDN)
============================================  ==============================================

Thin: each endpoint parses, calls the SDK (:class:`inferstream.client.Client`) and
returns; what the gateway adds is HTTP's own business: a bearer token (when
``gateway.token`` is set, every ``/v1`` and ``/v2`` call and ``/metrics`` need it;
``/healthz``, ``/v2/health/*`` and the schema stay open for probes; without one the
gateway listens on loopback only, unless ``gateway.allow_insecure``), a body size limit (413), status codes for the
SDK's errors, and one shared Kafka reader per stream fanning records out to its
clients (:mod:`inferstream.connectors.kafka.fanout`). Errors come back as
``{"error": code, "detail": message, ...}``, or in the shape of the protocol a
route speaks (OpenAI's, the Open Inference Protocol's).

One module per interface, over shared pieces::

    app.py          create_app, serve, BackgroundGateway
    native.py       predict            events.py   events
    stream.py       prediction stream  search.py   search, retrieve
    alerts.py       drift alerts
    openai.py       OpenAI embeddings  oip.py      Open Inference Protocol (_tensors.py)
    operations.py   healthz, metrics
    _auth.py  bearer token, loopback check      _errors.py  ApiError, one error shape per protocol
    _body.py  body limit, strict JSON routes    _metrics.py _state.py  metrics, shared state

>>> app = create_app(Settings.load())            # doctest: +SKIP
>>> serve(Settings.load())                       # doctest: +SKIP  (uvicorn on 127.0.0.1:8080)
"""

from inferstream.config import GatewaySettings, Settings
from inferstream.gateway._auth import check_exposure, is_loopback
from inferstream.gateway._errors import ApiError
from inferstream.gateway._metrics import GatewayMetrics
from inferstream.gateway._state import Gateway
from inferstream.gateway.app import BackgroundGateway, create_app, serve
from inferstream.gateway.native import PredictBody
from inferstream.gateway.search import SearchBody

__all__ = [
    "ApiError",
    "BackgroundGateway",
    "Gateway",
    "GatewayMetrics",
    "GatewaySettings",
    "PredictBody",
    "SearchBody",
    "Settings",
    "check_exposure",
    "create_app",
    "is_loopback",
    "serve",
]
