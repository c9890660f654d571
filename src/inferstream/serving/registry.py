"""Models from an MLflow model registry, brought into the model repository as new versions.

``models:/<name>/<version>`` or ``models:/<name>@<alias>`` is resolved with MLflow's own
client (the tracking and registry URIs of ``registry.*`` settings, else MLflow's
environment), its artifacts downloaded, and the ONNX file the model's ``onnx`` flavor
names copied to ``<models_dir>/<name>/<version>/model.onnx`` beside a ``model.toml``:
the one given, or the one of the name's latest version (the same interface, a new
version), with a ``[source]`` table that keeps the lineage (registry URI, registered
model and version, alias, run id, the file's sha256). The version is validated (loaded,
its inputs and outputs checked against the graph, a dummy batch run) before it is moved
into place; one that does not validate is refused with the reason and nothing is left.

mlflow is imported only here, when a model is imported (the ``registry`` extra).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferstream.config import Settings
from inferstream.errors import ConfigError, ModelError
from inferstream.serving.config import ModelConfig, ModelSource
from inferstream.serving.onnx import OnnxModel, ValidationReport
from inferstream.serving.repository import ModelRepository, ModelVersion

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


@dataclass(frozen=True)
class RegistryRef:
    """A registered model version named by URI: a version number or an alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> RegistryRef:
        """``models:/name/3`` or ``models:/name@champion``; ConfigError otherwise."""
        match = _URI.match(uri.strip())
        if match is None:
            raise ConfigError(
                f"{uri!r} is not a registry model URI: use models:/<name>/<version> or models:/<name>@<alias>"
            )
        return cls(match["name"], match["version"], match["alias"])

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Imported:
    """What an import made: the new version, its lineage and its validation."""

    version: ModelVersion
    source: ModelSource
    report: ValidationReport


def import_model(
    settings: Settings,
    uri: str,
    *,
    name: str | None = None,
    version: str | None = None,
    config_file: Path | None = None,
) -> Imported:
    """Bring a registered ONNX model into the repository as ``name:version`` (see the module)."""
    ref = RegistryRef.parse(uri)
    repository = ModelRepository(settings.models_dir)
    target = name or ref.name
    existing = repository.versions(target) if target in repository.names() else []
    new_version = version or next_version(existing)
    if new_version in existing:
        raise ModelError(f"{target}:{new_version} is in the repository already: choose another --version")
    template = _template(repository, target, existing, config_file)
    found = registry_version(settings, ref)
    staging = Path(tempfile.mkdtemp(prefix=f".import-{target}-", dir=_ensure(settings.models_dir / target)))
    try:
        onnx_file = _download(settings, ref, found["version"], staging / "artifacts")
        directory = staging / new_version
        directory.mkdir()
        shutil.copyfile(onnx_file, directory / "model.onnx")
        source = ModelSource(
            uri=str(ref),
            tracking_uri=settings.registry.tracking_uri or _mlflow_tracking_uri(),
            registered_model=ref.name,
            registered_version=found["version"],
            alias=ref.alias,
            run_id=found["run_id"],
            sha256=hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest(),
            imported_at=datetime.now(UTC),
        )
        config = ModelConfig.model_validate({**template, "name": target, "version": new_version, "source": source})
        (directory / "model.toml").write_text(render_toml(config))
        staged = ModelVersion(config=config, directory=directory)
        try:
            report = OnnxModel(staged).validate()
        except ModelError as exc:
            raise ModelError(f"{ref} does not fit {target}'s model.toml, nothing was imported: {exc}") from None
        final = settings.models_dir / target / new_version
        directory.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Imported(ModelVersion(config=config, directory=final), source, report)


def _ensure(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def next_version(existing: list[str]) -> str:
    """The version after the highest numeric one (``1`` for none)."""
    numbers = [int(v) for v in existing if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _template(repository: ModelRepository, name: str, existing: list[str], config_file: Path | None) -> dict[str, Any]:
    # The interface of the new version: a model.toml given, else the latest version's.
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    elif existing:
        data = repository.get(name).config.model_dump(mode="json", exclude_none=True)
    else:
        raise ConfigError(
            f"the repository has no {name!r} yet, so nothing says how requests become its inputs: "
            "pass --config model.toml (see `inferstream models show breast-cancer:1` for the shape)"
        )
    data.pop("source", None)
    data.pop("training", None)
    return data


def _mlflow_tracking_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def registry_version(settings: Settings, ref: RegistryRef) -> dict[str, str]:
    """The registered version a URI names now (``version``) and the run that logged it (``run_id``)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    registry = settings.registry
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.registry_uri)
    try:
        found = (
            client.get_model_version_by_alias(ref.name, ref.alias)
            if ref.alias
            else client.get_model_version(ref.name, ref.version or "")
        )
    except MlflowException as exc:
        raise ModelError(f"{ref}: {exc.message}") from None
    return {"version": str(found.version), "run_id": str(found.run_id or "")}


def _download(settings: Settings, ref: RegistryRef, version: str, into: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    registry = settings.registry
    into.mkdir(parents=True)
    try:
        path = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{ref.name}/{version}",
                dst_path=str(into),
                tracking_uri=registry.tracking_uri,
                registry_uri=registry.registry_uri,
            )
        )
    except MlflowException as exc:
        raise ModelError(f"{ref}: cannot download its files: {exc.message}") from None
    onnx = _onnx_file(path)
    if onnx is None:
        raise ModelError(f"{ref} holds no ONNX model (log it with mlflow.onnx.log_model): files {_listing(path)}")
    return onnx


def _onnx_file(path: Path) -> Path | None:
    # The onnx flavor's data file, as the MLmodel file names it; else the one .onnx file there is.
    mlmodel = path / "MLmodel"
    if mlmodel.exists():
        match = re.search(r"^  onnx:\n(?:    .*\n)*?    data: (?P<data>\S+)", mlmodel.read_text(), re.MULTILINE)
        if match and (path / match["data"]).is_file():
            return path / match["data"]
    found = sorted(path.rglob("*.onnx"))
    return found[0] if len(found) == 1 else None


def _listing(path: Path) -> str:
    return ", ".join(sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())) or "none"


def render_toml(
    config: ModelConfig, header: str = "# Imported by `inferstream models import`: the lineage is under [source].\n"
) -> str:
    """A ``model.toml`` for a model config (what :meth:`ModelConfig.load` reads back the same)."""
    import tomli_w

    return header + tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


__all__ = ["Imported", "RegistryRef", "import_model", "next_version", "registry_version", "render_toml"]
