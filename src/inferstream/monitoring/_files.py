"""Parquet files named by the Kafka offsets they hold, renamed into place: what the table sinks share.

A file is ``<topic>+<partition>+<first offset>-<last offset>.parquet`` (``…+<part>of<parts>``
when its batch was split), written under a temporary name, fsynced and renamed, so a
replay after a crash rewrites the same name instead of adding rows twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FILE = re.compile(
    r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<first>\d+)-(?P<last>\d+)(?:\+(?P<part>\d+)of(?P<parts>\d+))?\.parquet$"
)
TMP_SUFFIX = ".tmp"


def file_name(topic: str, partition: int, first: int, last: int, part: int = 1, parts: int = 1) -> str:
    """The name of (part ``part`` of ``parts`` of) a batch holding offsets first..last of a topic partition."""
    name = f"{topic}+{partition}+{first:020d}-{last:020d}"
    return f"{name}+{part}of{parts}.parquet" if parts > 1 else f"{name}.parquet"


@dataclass(frozen=True, slots=True)
class Written:
    """What one partition's files hold: every offset up to ``up_to``, and ``beyond`` it these."""

    up_to: int = -1
    #: offsets in the parts of batches a crash left incomplete (their other parts were never renamed)
    beyond: frozenset[int] = frozenset()

    def __contains__(self, offset: int) -> bool:
        return offset <= self.up_to or offset in self.beyond


def write_in_place(table: pa.Table, final: Path) -> Path:
    """Write ``table`` to ``final`` as Parquet: a temporary name, fsync, then the rename."""
    temporary = final.with_name(final.name + TMP_SUFFIX)
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(final)
    return final
