"""W3C Trace Context ``traceparent``: parse, format, and the trace a new request belongs to.

A ``traceparent`` is ``<version>-<trace id>-<parent id>-<flags>``: 2, 32, 16 and 2
lowercase hex digits (https://www.w3.org/TR/trace-context/#traceparent-header). It
travels as a Kafka header of that name on every record of one request (request,
prediction, reply, the next chain step's request) and as the HTTP header.

Header bytes come from any producer: a value that is not exactly that shape (wrong
length, upper case, all-zero ids, version ``ff``, bytes that are not ASCII) is ignored
as if absent, never an error — no record stops a stage because of its trace header.
Nothing here imports OpenTelemetry, unless the caller's program already has.
"""

from __future__ import annotations

import contextlib
import random
import re
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

#: The header's name, in HTTP and in Kafka record headers.
TRACEPARENT = "traceparent"

# Version 00 is exactly 55 characters; a later version may append "-<more>", which a reader of
# version 00 ignores (the spec's forward compatibility) and does not pass on.
_SHAPE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_VERSION_00 = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_MAX_LENGTH = 512  # a later version's header may be longer, never this long

_random = random.Random()  # ids, not secrets: W3C asks for randomness, not unpredictability


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One valid ``traceparent``: the trace, the span that is the parent, and the flags."""

    #: 32 lowercase hex digits, not all zero.
    trace_id: str
    #: 16 lowercase hex digits, not all zero: the span of whoever wrote the header.
    span_id: str
    #: Trace flags; bit 0 is "sampled".
    flags: int = 1

    @property
    def sampled(self) -> bool:
        """Whether the caller records this trace (the ``sampled`` flag)."""
        return bool(self.flags & 1)

    @property
    def header(self) -> bytes:
        """The version-00 header value."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}".encode("ascii")

    def child(self, span_id: str | None = None) -> TraceParent:
        """The same trace with ``span_id`` (a new one when None) as the parent of what comes next."""
        return TraceParent(self.trace_id, span_id or new_span_id(), self.flags)


def new_span_id() -> str:
    """16 random lowercase hex digits, never all zero."""
    return f"{_random.getrandbits(64) or 1:016x}"


def new_trace(sampled: bool = True) -> TraceParent:
    """The first ``traceparent`` of a new trace."""
    return TraceParent(f"{_random.getrandbits(128) or 1:032x}", new_span_id(), 1 if sampled else 0)


def parse(value: bytes | str | None) -> TraceParent | None:
    """The ``traceparent`` in ``value``, or None when it is absent or malformed (never raises)."""
    header = valid(value)
    if header is None:
        return None
    return TraceParent(header[3:35].decode("ascii"), header[36:52].decode("ascii"), int(header[53:55], 16))


def valid(value: bytes | str | None) -> bytes | None:
    """``value`` as a version-00 header when it is a valid ``traceparent``, else None (never raises).

    The worker's hot path: a well-formed version-00 value comes back as it is, no copy.
    """
    if (
        isinstance(value, bytes)
        and len(value) == 55
        and _VERSION_00.fullmatch(value)
        and value[3:35] != _ZERO_TRACE
        and value[36:52] != _ZERO_SPAN
    ):
        return value
    if isinstance(value, str):
        if not value.isascii():
            return None
        value = value.encode("ascii")
    if not isinstance(value, bytes) or len(value) < 55 or len(value) > _MAX_LENGTH:
        return None
    match = _SHAPE.match(value)
    if match is None:
        return None
    version, trace_id, span_id, _ = match.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if len(value) == 55:
        return value if version == b"00" else b"00" + value[2:]
    # Longer: only a later version may be, and only with "-" after the four fields.
    if version == b"00" or value[55:56] != b"-":
        return None
    return b"00" + value[2:55]


def header_of(headers: Sequence[tuple[str, Any]] | None) -> bytes | None:
    """The raw ``traceparent`` value among Kafka record headers (not checked yet), or None."""
    if headers:
        for key, value in headers:
            if key == TRACEPARENT:
                return value if isinstance(value, bytes) else None
    return None


# -- the trace of what this process sends now -------------------------------------------

_current: ContextVar[TraceParent | None] = ContextVar("inferstream_traceparent", default=None)


@contextlib.contextmanager
def use(parent: TraceParent | None) -> Iterator[None]:
    """Within this block (this thread or asyncio task), requests sent are children of ``parent``."""
    token = _current.set(parent)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> TraceParent | None:
    """The parent for what is sent now: set by ``use()``, else the caller's OpenTelemetry span.

    The caller's span counts only when its program has imported OpenTelemetry already:
    this never imports it.
    """
    parent = _current.get()
    if parent is not None:
        return parent
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    context = otel.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return TraceParent(f"{context.trace_id:032x}", f"{context.span_id:016x}", int(context.trace_flags) & 0xFF)


def outgoing(sample_ratio: float = 1.0) -> TraceParent:
    """The ``traceparent`` of a request sent now: ``current()``'s (its span is the request's parent), else a new trace.

    A new trace is sampled with probability ``sample_ratio`` (``tracing.sample_ratio``).
    """
    parent = current()
    if parent is not None:
        return parent
    return new_trace(sample_ratio >= 1.0 or _random.random() < sample_ratio)
