"""Numerical columns of one part of a prediction (``inputs.*``) read together, as one matrix.

The monitor's common case: every record has the part, with each monitored field a plain
number. One ``itemgetter`` call a record reads them all, one array holds them, and each
column is a slice of it, instead of a lookup per value and index lists per column (about
half the extractor's time). Anything else (a part or field absent, a value of another
type, an integer beyond float64) and the block gives up: its columns are read one by one
(:meth:`inferstream.monitoring.extract.Extractor._column`), where each odd value is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from inferstream.monitoring.window import ColumnBatch

#: The largest integer a float64 holds without overflow (past it, ``float()`` raises).
FLOAT_INT = int(np.finfo(np.float64).max)
_NONE = np.zeros(0, dtype=np.int64)
_FLOAT = frozenset((float,))
_NUMBERS = frozenset((float, int))


def fits_float(value: int | float) -> bool:
    """Whether a number converts to a float64 (an integer past its range makes ``float()`` raise)."""
    return not isinstance(value, int) or -FLOAT_INT <= value <= FLOAT_INT


class NumericBlock:
    """Columns ``names`` of a record's ``part`` (two or more), each read as a number."""

    def __init__(self, part: str, fields: Sequence[str], names: Sequence[str]) -> None:
        assert len(fields) >= 2, "one column reads as well on its own"
        self.part = part
        self.names = list(names)
        self._get = itemgetter(*fields)

    def read(self, records: Sequence[dict[str, Any]]) -> dict[str, ColumnBatch] | None:
        """The columns by name, or None where a record is not the common case."""
        if not records:
            return None
        part, get = self.part, self._get
        try:
            rows = [get(record[part]) for record in records]
        except (KeyError, TypeError, IndexError):  # a part or a field absent, a part not an object
            return None
        types = set(map(type, chain.from_iterable(rows)))
        if types != _FLOAT:
            if not types <= _NUMBERS:
                return None  # None, a string, a boolean, a list: counted column by column
            if not all(fits_float(v) for v in chain.from_iterable(rows) if type(v) is int):
                return None
        matrix = np.asarray(rows, dtype=np.float64)
        finite = np.isfinite(matrix)
        every = np.arange(len(records), dtype=np.int64)
        columns = {}
        for at, name in enumerate(self.names):
            ok = finite[:, at]
            columns[name] = ColumnBatch(every[ok], matrix[ok, at], _NONE, _NONE, every[~ok])
        return columns
