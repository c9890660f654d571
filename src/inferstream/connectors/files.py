"""Record sources from files: JSON Lines, CSV and Parquet, with line numbers for errors.

Each record comes with where it was (``line``: the file line for JSONL/CSV, the row
number for Parquet) and its original bytes, so a bad one can be reported precisely
or dead-lettered as it was. CSV cells are typed the way people expect (``1`` → int,
``1.5`` → float, ``true`` → bool, empty → absent) and dotted headers nest
(``features.age`` → ``{"features": {"age": ...}}``).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from inferstream.errors import ConfigError
from inferstream.schemas import jsonpolicy
from inferstream.schemas.jsonpolicy import JsonPolicyError

FileFormat = Literal["jsonl", "csv", "parquet"]

_BOM = b"\xef\xbb\xbf"

_SUFFIXES: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record read from a file: its position, its value (None if unreadable), its bytes.

    With ``error`` set the record is refused; ``value`` is then what could be read of it
    (to name its key in a dead letter), or None.
    """

    line: int
    value: Mapping[str, Any] | None
    raw: bytes
    error: str | None = None


def detect_format(path: str | Path, explicit: str | None = None) -> FileFormat:
    """The format named explicitly, or the one the file suffix implies."""
    if explicit:
        if explicit not in ("jsonl", "csv", "parquet"):
            raise ConfigError(f"unknown format {explicit!r}: use jsonl, csv or parquet")
        return explicit  # type: ignore[return-value]
    suffix = Path(str(path)).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if str(path) == "-":
        return "jsonl"
    raise ConfigError(f"cannot tell the format of {path} from its suffix: pass --format jsonl|csv|parquet")


def count_records(path: str | Path, fmt: FileFormat) -> int | None:
    """How many records a file holds (for progress bars), when cheap to know."""
    if str(path) == "-":
        return None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with open(path, "rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return lines - 1 if fmt == "csv" else lines


def read_records(path: str | Path, fmt: FileFormat | None = None) -> Iterator[SourceRecord]:
    """Every record of a file (``-`` is standard input, JSONL)."""
    kind = fmt or detect_format(path)
    if kind == "parquet":
        yield from _read_parquet(Path(path))
        return
    stream: BinaryIO = sys.stdin.buffer if str(path) == "-" else open(path, "rb")  # noqa: SIM115
    try:
        yield from (_read_jsonl(stream) if kind == "jsonl" else _read_csv(stream))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _read_jsonl(stream: BinaryIO) -> Iterator[SourceRecord]:
    # Each line under the platform's JSON policy (schemas/jsonpolicy.py): no NaN, integers within
    # 64 bits, valid UTF-8, bounded nesting; the reason names the field or the position.
    for number, line in enumerate(stream, start=1):
        raw = line.rstrip(b"\r\n")
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]  # a byte order mark some editors put at the start of a file
        if not raw.strip():
            continue
        try:
            value = jsonpolicy.loads(raw)
        except JsonPolicyError as exc:  # the parsed document (if any) still names the record's key
            parsed = exc.value if isinstance(exc.value, dict) else None
            yield SourceRecord(number, parsed, raw, str(exc))
            continue
        if not isinstance(value, dict):
            yield SourceRecord(number, None, raw, f"expected a JSON object, got {type(value).__name__}")
            continue
        yield SourceRecord(number, value, raw)


def _cell(text: str) -> Any:
    if text == "":
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for column, value in flat.items():
        if value is None:
            continue
        target = nested
        *parents, leaf = column.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def _read_csv(stream: BinaryIO) -> Iterator[SourceRecord]:
    # utf-8-sig: a leading byte order mark is skipped; bytes that are not UTF-8 become lone
    # surrogates, which validation refuses with the field and position (not a crash mid-file).
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the caller closes the stream


def _csv_rows(reader: Any) -> Iterator[SourceRecord]:
    header = next(reader, None)
    if header is None:
        return
    columns = [c.strip() for c in header]
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(row)
        raw = buffer.getvalue().encode("utf-8", "surrogateescape")
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            yield SourceRecord(start, None, raw, f"expected {len(columns)} columns, found {len(row)}")
            continue
        yield SourceRecord(start, _nest({c: _cell(v) for c, v in zip(columns, row, strict=True)}), raw)


def _read_parquet(path: Path) -> Iterator[SourceRecord]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            value = (
                _nest(dict(row.items()))
                if any("." in k for k in row)
                else {k: v for k, v in row.items() if v is not None}
            )
            yield SourceRecord(number, value, json.dumps(row, default=str, separators=(",", ":")).encode())
