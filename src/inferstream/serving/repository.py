"""The model repository: ``<root>/<name>/<version>/{model.onnx, model.toml, ...}``.

Chains of models lie beside them: ``<root>/<chain>/<version>/chain.toml`` (see
:mod:`inferstream.serving.chain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inferstream.errors import ModelError
from inferstream.serving.config import ModelConfig

if TYPE_CHECKING:
    from inferstream.serving.chain import ChainVersion


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One version of a model on disk."""

    config: ModelConfig
    directory: Path

    @property
    def onnx_path(self) -> Path:
        """The ONNX file."""
        return self.directory / "model.onnx"

    def file(self, name: str) -> Path:
        """A file beside the model (a tokenizer, a label map)."""
        return self.directory / name


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class ModelRepository:
    """Finds model versions under a root folder (``models/`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Model names that have at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*/model.toml")))

    def versions(self, name: str) -> list[str]:
        """Versions of a model, oldest first (numeric versions in number order)."""
        directory = self.root / name
        found = [p.parent.name for p in directory.glob("*/model.toml")] if directory.is_dir() else []
        return sorted(found, key=_version_key)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A model version (the latest when ``version`` is None); a clear error if absent."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelError(
                f"no model {name!r} in {self.root} (models there: {known}; "
                "build the demo models with `inferstream models build-demo`)"
            )
        chosen = version or versions[-1]
        if chosen not in versions:
            raise ModelError(
                f"model {name!r} has no version {chosen!r} in {self.root} (versions: {', '.join(versions)})"
            )
        directory = self.root / name / chosen
        config = ModelConfig.load(directory / "model.toml")
        if (config.name, config.version) != (name, chosen):
            raise ModelError(
                f"{directory / 'model.toml'} says {config.ref}, but lies in {name}/{chosen}: move it or fix the file"
            )
        return ModelVersion(config=config, directory=directory)

    def resolve(self, ref: str) -> ModelVersion:
        """``name:version`` or ``name`` (the latest version)."""
        name, _, version = ref.partition(":")
        return self.get(name, version or None)

    def all(self) -> list[ModelVersion]:
        """Every model version, by name then version."""
        return [self.get(name, version) for name in self.names() for version in self.versions(name)]

    # -- chains -----------------------------------------------------------------------

    def chain_names(self) -> list[str]:
        """Chain names that have at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*/chain.toml")))

    def chain_versions(self, name: str) -> list[str]:
        """Versions of a chain, oldest first."""
        directory = self.root / name
        found = [p.parent.name for p in directory.glob("*/chain.toml")] if directory.is_dir() else []
        return sorted(found, key=_version_key)

    def is_chain(self, ref: str) -> bool:
        """True when ``name`` or ``name:version`` names a chain rather than a model."""
        name, _, version = ref.partition(":")
        if version:
            return (self.root / name / version / "chain.toml").is_file()
        return bool(self.chain_versions(name)) and not self.versions(name)

    def get_chain(self, name: str, version: str | None = None) -> ChainVersion:
        """A chain version (the latest when ``version`` is None), its steps found and checked to fit."""
        from inferstream.serving.chain import load_chain

        versions = self.chain_versions(name)
        if not versions:
            known = ", ".join(self.chain_names()) or "none"
            raise ModelError(
                f"no chain {name!r} in {self.root} (chains there: {known}; "
                "build the demo chain with `inferstream models build-demo`)"
            )
        chosen = version or versions[-1]
        if chosen not in versions:
            raise ModelError(
                f"chain {name!r} has no version {chosen!r} in {self.root} (versions: {', '.join(versions)})"
            )
        directory = self.root / name / chosen
        if (directory / "model.toml").exists():
            raise ModelError(f"{directory} holds both model.toml and chain.toml: keep one")
        return load_chain(self, directory)

    def resolve_chain(self, ref: str) -> ChainVersion:
        """``name:version`` or ``name`` (the latest version) of a chain."""
        name, _, version = ref.partition(":")
        return self.get_chain(name, version or None)

    def all_chains(self) -> list[ChainVersion]:
        """Every chain version, by name then version."""
        return [self.get_chain(name, version) for name in self.chain_names() for version in self.chain_versions(name)]
