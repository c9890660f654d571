"""``inferstream schemas list|show|export``: the topic contracts as JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inferstream.cli._app import app
from inferstream.cli._common import console, out
from inferstream.schemas.jsonschema import PACKAGE_DIR, export, json_schema, render
from inferstream.schemas.records import CONTRACTS, contract_named

schemas_app = typer.Typer(help="Topic contracts (JSON Schema).", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("list")
def list_() -> None:
    """Every contract with its version and key field."""
    for name, contract in CONTRACTS.items():
        out(f"{name}\tv{contract.schema_version}\tkey={contract.key_field}")


@schemas_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Contract name (event, prediction, ...).")]) -> None:
    """Print a contract's JSON Schema."""
    out(render(json_schema(contract_named(name))).rstrip())


@schemas_app.command("export")
def export_(
    directory: Annotated[Path, typer.Argument(help="Folder to write <name>.v<version>.json into.")] = PACKAGE_DIR,
) -> None:
    """Write every contract's JSON Schema file; refuses incompatible changes to a version."""
    written = export(directory)
    for path in written:
        console.print(f"[green]wrote[/] {path}")
    if not written:
        console.print(f"[dim]{directory}: up to date[/]")
