"""The CLI starts light: `inferstream --help` loads no SDK, no numpy, no Kafka client, no server.

Each check runs in a fresh interpreter, since this one has long imported everything. They
assert which modules are loaded, not how long it took: a machine's speed is noise, a module
that should not be there is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import inferstream

#: What a command may load when it runs, but `import inferstream.cli` and `--help` must not.
HEAVY = (
    "numpy",
    "pyarrow",
    "pandas",
    "scipy",
    "onnxruntime",
    "confluent_kafka",
    "evidently",
    "fastapi",
    "uvicorn",
    "elasticsearch",
    "lancedb",
    "apache_beam",
    "mlflow",
    "faust",
    "prometheus_client",
    "opentelemetry",
    "pydantic_settings",
    # the SDK and the settings: a command builds them when it runs
    "inferstream.client",
    "inferstream.config",
    "inferstream.schemas",
)

# The package this test imported, first on the child's path (a worktree's sources, not an install's).
_SRC = str(Path(inferstream.__file__).resolve().parents[1])


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (its last stdout line)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in HEAVY if name in modules)


def test_importing_the_cli_loads_no_heavy_library() -> None:
    modules = _modules_after("import inferstream.cli")
    assert "inferstream.cli.serve" in modules  # every command registered: the import did happen
    assert _heavy(modules) == []


def test_help_of_every_command_group_loads_no_heavy_library() -> None:
    # `inferstream --help`, then `inferstream GROUP --help` for each command and group, in one process.
    code = (
        "import contextlib, io, typer.main\n"
        "from inferstream.cli import app\n"
        "names = [[]] + [[name] for name in typer.main.get_command(app).commands]\n"
        "for args in names:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        app([*args, '--help'], prog_name='inferstream')\n"
    )
    modules = _modules_after(code)
    assert _heavy(modules) == []


def test_the_package_root_loads_its_names_on_first_use() -> None:
    bare = _modules_after("import inferstream")
    assert _heavy(bare) == []
    used = _modules_after("from inferstream import Client, Settings")
    assert {"inferstream.client", "inferstream.config"} <= used


def test_the_package_root_still_offers_every_public_name() -> None:
    for name in inferstream.__all__:
        assert getattr(inferstream, name) is not None
        assert name in dir(inferstream)
    from inferstream.client import Client

    assert inferstream.Client is Client
    with pytest.raises(AttributeError, match="Clinet"):
        inferstream.Clinet  # type: ignore[attr-defined]  # noqa: B018


def test_schemas_export_defaults_to_the_packaged_schema_folder() -> None:
    # The CLI finds the folder without importing the schemas package; both must name the same one.
    from inferstream.cli import schemas as cli_schemas
    from inferstream.schemas import jsonschema

    assert cli_schemas.PACKAGE_DIR == jsonschema.PACKAGE_DIR
    assert jsonschema.PACKAGE_DIR.is_dir()
