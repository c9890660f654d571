"""One lifecycle for what holds connections, threads or files: ``close()``, and ``with`` calls it.

>>> with Client() as client:                                         # doctest: +SKIP
...     client.produce("events", records)
... # closed here, whatever happened in the block
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """Something to close when done with; a ``with`` block closes it at its end."""

    @abstractmethod
    def close(self) -> None:
        """Release what it holds (closing twice does no harm)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
