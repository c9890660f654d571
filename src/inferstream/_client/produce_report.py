"""What producing reports: each rejected record, and the counts (read = produced + rejected)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

OnError = Literal["fail", "skip", "dlq"]
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that was not produced: where it was, why, and where it went."""

    line: int | None
    reason: str
    fields: tuple[str, ...] = ()
    dead_lettered: bool = False


@dataclass
class ProduceReport:
    """What ``produce`` did: read = produced + rejected, always."""

    topic: str
    read: int = 0
    produced: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def dead_lettered(self) -> int:
        """Rejected records that went to the dead-letter topic."""
        return sum(1 for r in self.rejected if r.dead_lettered)

    @property
    def records_per_s(self) -> float:
        """Produced records per second."""
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0
