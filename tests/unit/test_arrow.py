import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferstream.schemas import CONTRACTS, Contract, Embedding, Event, Prediction, codec_for
from inferstream.schemas.arrow import arrow_schema, to_table

GOLDEN = Path(__file__).parent / "contracts"


@pytest.mark.parametrize(
    "contract", sorted(CONTRACTS.values(), key=lambda c: c.schema_name), ids=lambda c: c.schema_name
)
def test_every_contract_has_an_arrow_schema_that_parquet_round_trips(contract: type[Contract], tmp_path: Path) -> None:
    schema = arrow_schema(contract)
    assert schema.names == list(contract.model_fields)
    assert schema.metadata[b"inferstream.schema"] == contract.schema_name.encode()
    codec = codec_for(contract)
    records = [
        codec.decode(line.encode()) for line in (GOLDEN / f"{contract.schema_name}.v1.jsonl").read_text().splitlines()
    ]
    table = to_table(records, contract)
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema.equals(schema, check_metadata=False)
    assert back.num_rows == len(records)


def test_arrow_types_follow_the_fields() -> None:
    schema = arrow_schema(Prediction)
    assert schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert not schema.field("request_id").nullable
    assert schema.field("source_event_id").nullable
    assert pa.types.is_struct(schema.field("latency").type)
    assert schema.field("inputs").type == pa.string()  # free-form JSON
    assert schema.field("attributes").type == pa.map_(pa.string(), pa.string())
    assert arrow_schema(Embedding).field("vector").type == pa.list_(pa.float32())


def test_table_values() -> None:
    event = codec_for(Event).validate({"id": "e", "type": "t", "features": {"x": 1.5}, "attributes": {"k": "v"}})
    row = to_table([event], Event).to_pylist()[0]
    assert json.loads(row["features"]) == {"x": 1.5}
    assert row["attributes"] == [("k", "v")]
    embedding = codec_for(Embedding).validate(
        {"id": "d", "event_time": 0, "model": "m", "version": "1", "vector": np.arange(4, dtype=np.float32)}
    )
    assert to_table([embedding], Embedding).column("vector").to_pylist() == [[0.0, 1.0, 2.0, 3.0]]
