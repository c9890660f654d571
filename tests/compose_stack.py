"""The compose stack as the tests read it: interpolated and parsed as Compose does, its commands parsed by the CLI.

Shared by tests/unit/test_compose.py (the file's shape) and
tests/integration/test_compose_stack.py (its services run as local processes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel

from inferstream.cli import app
from inferstream.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
GPU_FILE = COMPOSE_DIR / "docker-compose.gpu.yml"
#: The image the platform's services run (the CPU target of compose/Dockerfile).
IMAGE = "inferstream:local"

_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?::-([^}]*))?\})")


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's interpolation of ``${VAR}``, ``${VAR:-default}`` and ``$$`` (a literal ``$``)."""

    def value(match: re.Match[str]) -> str:
        dollar, name, default = match.groups()
        if dollar:
            return "$"
        return environ.get(name) or (default or "")

    return _VARIABLE.sub(value, text)


def load(path: Path = COMPOSE_FILE, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file with its variables filled in; PyYAML resolves the ``<<`` merge keys as Compose does."""
    document = yaml.safe_load(interpolate(path.read_text(), environ or {}))
    assert isinstance(document, dict)
    return document


def platform_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the inferstream image, by name."""
    return {name: s for name, s in compose["services"].items() if s.get("image") == IMAGE}


def is_one_shot(service: dict[str, Any]) -> bool:
    """A setup step that runs once (restart "no"), as opposed to a long-running process."""
    return service.get("restart") == "no"


def parse_command(args: list[str]) -> Any:
    """The (click) context of the CLI command ``args`` names, parsed by the real parser and not run."""
    command = typer.main.get_command(app)
    context = command.make_context("inferstream", list(args))
    while hasattr(context.command, "resolve_command"):  # a group: parse its subcommand next
        rest = [*context._protected_args, *context.args]
        name, sub, sub_args = context.command.resolve_command(context, rest)
        assert sub is not None, f"no command in {args}"
        context = sub.make_context(name, sub_args, parent=context)
    return context


def command_path(context: Any) -> str:
    """``monitor run`` for the context of ``inferstream monitor run NAME``."""
    return context.command_path.removeprefix("inferstream ")


def is_setting(variable: str) -> bool:
    """Whether INFERSTREAM_A__B names the field a.b of the settings (pydantic ignores unknown sections)."""
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("INFERSTREAM_").lower().split("__")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if depth < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True
