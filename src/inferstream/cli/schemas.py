"""``inferstream schemas list|show|export``: the topic contracts as JSON Schema."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, out

# jsonschema.PACKAGE_DIR, found without importing the schemas package (pydantic, numpy) just
# to show `export`'s default; tests/unit/test_cli_imports.py checks the two agree.
PACKAGE_DIR = Path(str(resources.files("inferstream").joinpath("schemas").joinpath("json")))

schemas_app = typer.Typer(help="Topic contracts (JSON Schema).", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("list")
def list_() -> None:
    """Every contract with its version and key field."""
    from inferstream.schemas.records import CONTRACTS

    for name, contract in CONTRACTS.items():
        out(f"{name}\tv{contract.schema_version}\tkey={contract.key_field}")


@schemas_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Contract name (event, prediction, ...).")]) -> None:
    """Print a contract's JSON Schema."""
    from inferstream.schemas.jsonschema import json_schema, render
    from inferstream.schemas.records import contract_named

    out(render(json_schema(contract_named(name))).rstrip())


@schemas_app.command("export")
def export_(
    directory: Annotated[Path, typer.Argument(help="Folder to write <name>.v<version>.json into.")] = PACKAGE_DIR,
) -> None:
    """Write every contract's JSON Schema file; refuses incompatible changes to a version."""
    from inferstream.schemas.jsonschema import export

    written = export(directory)
    for path in written:
        console.print(f"[green]wrote[/] {path}")
    if not written:
        console.print(f"[dim]{directory}: up to date[/]")
