"""JSON Schema files of the contracts, for producers and consumers not written in Python.

``inferstream schemas export`` writes ``<name>.v<version>.json`` for every contract
into ``src/inferstream/schemas/json/`` (shipped with the package) or any folder. It
refuses to overwrite the file of a version with a schema that readers of that
version could not follow: such a change needs a new ``schema_version``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from inferstream.errors import ContractError
from inferstream.schemas.records import CONTRACTS, Contract

#: Where the committed schema files live inside the package.
PACKAGE_DIR = Path(str(resources.files("inferstream.schemas").joinpath("json")))

JsonSchema = dict[str, Any]


def file_name(contract: type[Contract], version: int | None = None) -> str:
    """``<name>.v<version>.json``."""
    return f"{contract.schema_name}.v{version or contract.schema_version}.json"


def json_schema(contract: type[Contract]) -> JsonSchema:
    """The JSON Schema (draft 2020-12) of what a contract accepts."""
    schema = contract.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"inferstream/{file_name(contract)}",
        "x-inferstream-schema": contract.schema_name,
        "x-inferstream-schema-version": contract.schema_version,
        "x-inferstream-key": contract.key_field,
        **schema,
    }


def render(schema: JsonSchema) -> str:
    """The canonical text of a schema file (sorted keys, two-space indent, final newline)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


# -- compatibility ----------------------------------------------------------------------


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _types(node: dict[str, Any]) -> set[str]:
    if "anyOf" in node:
        return set().union(*(_types(member) for member in node["anyOf"]))
    if "const" in node:
        return {json.dumps(node["const"])}
    if "enum" in node:
        return {json.dumps(v) for v in node["enum"]}
    kind = node.get("type")
    if kind is None:
        return {"any"}
    return set(kind) if isinstance(kind, list) else {kind}


def _covers(new: set[str], old_type: str) -> bool:
    if "any" in new or old_type in new:
        return True
    if old_type == "integer" and "number" in new:
        return True
    # An enum value widened to any string is still accepted.
    return old_type.startswith('"') and "string" in new


def _member(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    members: list[dict[str, Any]] = node.get("anyOf", [node])
    return next((member for member in members if kind in _types(member)), None)


def _compare(old: dict[str, Any], new: dict[str, Any], path: str, problems: list[str]) -> None:
    old_types, new_types = _types(old), _types(new)
    lost = sorted(t for t in old_types if not _covers(new_types, t))
    if lost:
        problems.append(f"{path or '<record>'}: no longer accepts {', '.join(lost)}")
    old_obj, new_obj = _member(old, "object"), _member(new, "object")
    if old_obj is not None and new_obj is not None:
        old_props = old_obj.get("properties", {})
        new_props = new_obj.get("properties", {})
        for name, old_prop in old_props.items():
            where = f"{path}.{name}" if path else name
            if name in new_props:
                _compare(old_prop, new_props[name], where, problems)
            elif new_obj.get("additionalProperties") is False:
                problems.append(f"{where}: field removed (old records carry it)")
        for name in set(new_obj.get("required", [])) - set(old_obj.get("required", [])):
            where = f"{path}.{name}" if path else name
            problems.append(f"{where}: newly required (old records may lack it)")
        old_extra, new_extra = old_obj.get("additionalProperties"), new_obj.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            _compare(old_extra, new_extra, f"{path}.*" if path else "*", problems)
    old_arr, new_arr = _member(old, "array"), _member(new, "array")
    if old_arr is not None and new_arr is not None and "items" in old_arr and "items" in new_arr:
        _compare(old_arr["items"], new_arr["items"], f"{path}[]", problems)


def incompatibilities(old: JsonSchema, new: JsonSchema) -> list[str]:
    """Why records valid under ``old`` might be rejected by ``new`` (empty: compatible).

    Checked: removed fields, newly required fields, narrowed types and enums, in
    nested objects, maps and arrays too. Not checked: string lengths and patterns.
    """
    problems: list[str] = []
    _compare(_inline(old, old.get("$defs", {})), _inline(new, new.get("$defs", {})), "", problems)
    return problems


# -- export -----------------------------------------------------------------------------


def export(directory: Path, contracts: Iterable[type[Contract]] | None = None, *, force: bool = False) -> list[Path]:
    """Write the schema file of each contract's current version; return the files written.

    Raises ContractError when an existing file of the same version would become
    incompatible (bump ``schema_version``), unless ``force``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in contracts or CONTRACTS.values():
        path = directory / file_name(contract)
        schema = json_schema(contract)
        text = render(schema)
        if path.exists():
            if path.read_text() == text:
                continue
            problems = incompatibilities(json.loads(path.read_text()), schema)
            if problems and not force:
                raise ContractError(
                    f"{contract.__name__} changed incompatibly with {path.name}: "
                    + "; ".join(problems)
                    + f". Bump {contract.__name__}.schema_version to "
                    f"{contract.schema_version + 1} (readers of version {contract.schema_version} "
                    "could not follow), then export again."
                )
        path.write_text(text)
        written.append(path)
    return written


def committed(contract: type[Contract], version: int | None = None, directory: Path = PACKAGE_DIR) -> JsonSchema | None:
    """The committed schema of a contract version, or None when there is no file."""
    path = directory / file_name(contract, version)
    if not path.exists():
        return None
    schema: JsonSchema = json.loads(path.read_text())
    return schema
