"""Contracts may only change compatibly within a schema version.

Two guards: the committed JSON Schema files must equal what the models generate
(regenerate with ``inferstream schemas export``, which refuses incompatible
changes), and golden records written under each version must still validate.
"""

import copy
import json
from pathlib import Path

import pytest

from inferstream.errors import ContractError
from inferstream.schemas import CONTRACTS, Contract, codec_for
from inferstream.schemas.jsonschema import (
    PACKAGE_DIR,
    committed,
    export,
    file_name,
    incompatibilities,
    json_schema,
    render,
)

GOLDEN = Path(__file__).parent / "contracts"
ALL = sorted(CONTRACTS.values(), key=lambda c: c.schema_name)


@pytest.mark.parametrize("contract", ALL, ids=lambda c: c.schema_name)
def test_committed_schema_files_match_the_models(contract: type[Contract]) -> None:
    path = PACKAGE_DIR / file_name(contract)
    assert path.exists(), f"{path} is missing: run `inferstream schemas export`"
    assert path.read_text() == render(json_schema(contract)), (
        f"{path.name} differs from {contract.__name__}: run `inferstream schemas export` "
        "(it refuses incompatible changes: those need a new schema_version)"
    )


@pytest.mark.parametrize("contract", ALL, ids=lambda c: c.schema_name)
def test_current_model_accepts_everything_its_version_accepted(contract: type[Contract]) -> None:
    old = committed(contract)
    assert old is not None
    assert incompatibilities(old, json_schema(contract)) == []


@pytest.mark.parametrize("contract", ALL, ids=lambda c: c.schema_name)
def test_golden_records_of_this_version_still_validate(contract: type[Contract]) -> None:
    golden = GOLDEN / f"{contract.schema_name}.v{contract.schema_version}.jsonl"
    assert golden.exists(), (
        f"{golden} is missing: a new schema_version needs golden records written under it "
        "(a minimal one and one with every field)"
    )
    codec = codec_for(contract)
    lines = golden.read_text().splitlines()
    assert len(lines) >= 2
    for number, line in enumerate(lines, start=1):
        record = codec.decode(line.encode(), line=number)
        # Every field of the contract is exercised by some golden record.
        assert record is not None
    used = set().union(*(json.loads(line).keys() for line in lines))
    assert used == set(contract.model_fields), f"golden records of {contract.schema_name} miss fields"


def _event_schema() -> dict:
    return copy.deepcopy(json_schema(CONTRACTS["event"]))


def test_compat_checker_flags_removed_fields() -> None:
    new = _event_schema()
    del new["properties"]["source"]
    assert incompatibilities(_event_schema(), new) == ["source: field removed (old records carry it)"]


def test_compat_checker_flags_new_required_fields() -> None:
    new = _event_schema()
    new["properties"]["tenant"] = {"type": "string"}
    new["required"].append("tenant")
    assert incompatibilities(_event_schema(), new) == ["tenant: newly required (old records may lack it)"]


def test_compat_checker_flags_narrowed_types_in_nested_maps() -> None:
    new = _event_schema()
    new["properties"]["features"]["anyOf"][0]["additionalProperties"] = {"type": "number"}
    problems = incompatibilities(_event_schema(), new)
    assert problems
    assert all(p.startswith("features.*") for p in problems)


def test_compat_checker_flags_narrowed_enums() -> None:
    old = json_schema(CONTRACTS["drift-alert"])
    new = copy.deepcopy(old)
    new["properties"]["severity"]["enum"] = ["info", "warning"]
    assert any("severity" in p and "critical" in p for p in incompatibilities(old, new))


def test_compat_checker_accepts_compatible_changes() -> None:
    new = _event_schema()
    new["properties"]["tenant"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    new["properties"]["id"]["type"] = ["string", "integer"]
    assert incompatibilities(_event_schema(), new) == []


def test_export_refuses_incompatible_overwrite(tmp_path: Path) -> None:
    event = CONTRACTS["event"]
    assert export(tmp_path, [event]) == [tmp_path / file_name(event)]
    assert export(tmp_path, [event]) == []  # up to date
    stale = json.loads((tmp_path / file_name(event)).read_text())
    stale["properties"]["retired"] = {"type": "string"}
    (tmp_path / file_name(event)).write_text(json.dumps(stale))
    with pytest.raises(ContractError, match=r"Bump Event\.schema_version to 2"):
        export(tmp_path, [event])
