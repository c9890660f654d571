"""What every CLI command shares: the settings built once per invocation, the console.

The CLI imports only what registering its commands needs (typer, rich's console, the
standard library): a command imports the SDK, pydantic settings, numpy or a server in its
body, so `inferstream --help` starts in a fraction of a second. ``tests/unit/test_cli_imports.py``
holds it to that.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from inferstream.client import Client
    from inferstream.config import Settings

console = Console(stderr=True)

_Stats = TypeVar("_Stats", covariant=True)


class Runner(Protocol[_Stats]):
    """A long-running stage: ``run()`` blocks until ``stop()`` and returns its counts."""

    def run(self) -> _Stats: ...

    def stop(self) -> None: ...


def run_until_signalled(runner: Runner[_Stats], banner: str) -> _Stats:
    """Print ``banner``, run ``runner`` until SIGINT or SIGTERM, and return its counts."""
    import signal

    from inferstream.runtime import settle

    def stop(signum: int, frame: object) -> None:
        runner.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console.print(banner)
    settle()
    return runner.run()


def configure_logging(verbose: int) -> None:
    """Log to stderr through rich; the Kafka client's own retries only show with -v."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    # librdkafka logs the trouble it retries (a broker still loading, refused connections);
    # what it gives up on reaches the user as an exception, so its own lines need -v.
    logging.getLogger("inferstream.kafka").setLevel(level if verbose else logging.CRITICAL)


@dataclass
class CliState:
    """Options given before the command, turned into settings on first use."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The settings for this invocation (built once)."""
        if self._settings is None:
            from inferstream.config import Settings

            self._settings = Settings.load(self.config_file, **self.overrides)
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings of the running command, from the root callback's state."""
    state = ctx.find_root().obj
    if not isinstance(state, CliState):
        state = CliState()
        ctx.find_root().obj = state
    return state.settings()


def client_of(ctx: typer.Context) -> Client:
    """An SDK client on the running command's settings (use it in ``with`` to close it)."""
    from inferstream.client import Client

    return Client(settings_of(ctx))


def print_error(exc: BaseException, message: str | None = None) -> None:
    """``error: message`` (the exception's own by default), then the notes the library added to it."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message if message is not None else str(exc))}")
    for note in getattr(exc, "__notes__", ()):
        console.print(f"  {escape(str(note))}")


def out(text: str) -> None:
    """Write one line of data to standard output (messages go to stderr)."""
    sys.stdout.write(text + "\n")


def parse_pairs(items: list[str], *, what: str) -> dict[str, str]:
    """``key=value`` options as a mapping; a clear error for anything else."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} expects key=value, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def parse_time(value: str | None, *, option: str) -> datetime | None:
    """An ISO 8601 time option (``2025-01-01T00:00:00Z``, or a date); naive means UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{option} expects an ISO 8601 time like 2025-01-01T00:00:00Z, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
