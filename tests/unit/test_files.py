from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferstream.connectors.files import count_records, detect_format, read_records
from inferstream.errors import ConfigError


def test_jsonl_lines_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": \n[1, 2]\n{"id": "b"}\n')
    records = list(read_records(path))
    assert [r.line for r in records] == [1, 3, 4, 5]
    assert records[0].value == {"id": "a"}
    assert records[0].raw == b'{"id": "a"}'
    assert records[1].value is None
    assert records[1].error is not None
    assert records[1].error.startswith("malformed JSON")
    assert records[2].error == "expected a JSON object, got list"
    assert count_records(path, "jsonl") == 5


def test_csv_types_nesting_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "id,type,features.age,features.vip,features.city,text\n"
        '1,t,31,true,Paris,"hello, world"\n'
        '2,t,2.5,,,"two\nlines"\n'
        "3,t\n"
    )
    records = list(read_records(path))
    assert records[0].line == 2
    assert records[0].value == {
        "id": 1,
        "type": "t",
        "features": {"age": 31, "vip": True, "city": "Paris"},
        "text": "hello, world",
    }
    assert records[1].value == {"id": 2, "type": "t", "features": {"age": 2.5}, "text": "two\nlines"}
    assert records[2].line == 5  # the quoted newline took a line
    assert records[2].error == "expected 6 columns, found 2"


def test_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "type": ["t", "t"], "features.x": [1.0, None]}), path)
    records = list(read_records(path))
    assert [r.line for r in records] == [1, 2]
    assert records[0].value == {"id": "a", "type": "t", "features": {"x": 1.0}}
    assert records[1].value == {"id": "b", "type": "t"}
    assert count_records(path, "parquet") == 2


def test_format_detection() -> None:
    assert detect_format("x.ndjson") == "jsonl"
    assert detect_format("x.CSV") == "csv"
    assert detect_format("x.pq") == "parquet"
    assert detect_format("-") == "jsonl"
    assert detect_format("x.txt", "csv") == "csv"
    with pytest.raises(ConfigError, match="--format"):
        detect_format("x.txt")
