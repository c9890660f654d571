"""The model repository: ``<root>/<name>/<version>/{model.onnx, model.toml, ...}``.

Chains of models lie beside them: ``<root>/<chain>/<version>/chain.toml`` (see
:mod:`inferstream.serving.chain`), loaded and checked here with
:mod:`inferstream.serving.chain_config`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from inferstream.errors import ModelError
from inferstream.serving.chain_config import ChainConfig, check_chain
from inferstream.serving.config import ModelConfig

#: How stale ``ModelRepository.loaded`` may be: a ``model.toml`` changed is seen within this.
RECHECK_S = 1.0


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


@dataclass(frozen=True, slots=True)
class ChainVersion:
    """One version of a chain on disk, with its steps' model versions (each found in the repository)."""

    config: ChainConfig
    directory: Path
    steps: tuple[ModelVersion, ...]

    @property
    def path(self) -> Path:
        """The ``chain.toml``."""
        return self.directory / "chain.toml"


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class ModelRepository:
    """Finds model versions under a root folder (``models/`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # model.toml → (its mtime and size, the version read from it): a file changed is read again.
        self._loaded: dict[Path, tuple[tuple[int, int], ModelVersion]] = {}
        # (name, version) → when ``loaded`` last found its file unchanged, and the version.
        self._recent: dict[tuple[str, str], tuple[float, ModelVersion]] = {}

    def _names(self, marker: str) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob(f"*/{marker}")))

    def _versions(self, name: str, marker: str) -> list[str]:
        directory = self.root / name
        found = [p.parent.name for p in directory.glob(f"*/{marker}")] if directory.is_dir() else []
        return sorted(found, key=_version_key)

    def _directory(self, kind: str, name: str, version: str | None, marker: str) -> tuple[str, Path]:
        """The chosen version (the latest when None) and its folder; a clear error if absent."""
        versions = self._versions(name, marker)
        if not versions:
            known = ", ".join(self._names(marker)) or "none"
            raise ModelError(
                f"no {kind} {name!r} in {self.root} ({kind}s there: {known}; "
                f"build the demo {kind}s with `inferstream models build-demo`)"
            )
        chosen = version or versions[-1]
        if chosen not in versions:
            raise ModelError(
                f"{kind} {name!r} has no version {chosen!r} in {self.root} (versions: {', '.join(versions)})"
            )
        return chosen, self.root / name / chosen

    def names(self) -> list[str]:
        """Model names that have at least one version."""
        return self._names("model.toml")

    def versions(self, name: str) -> list[str]:
        """Versions of a model, oldest first (numeric versions in number order)."""
        return self._versions(name, "model.toml")

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A model version (the latest when ``version`` is None); a clear error if absent."""
        if version is not None:
            found = self.loaded(name, version)
            if found is not None:
                return found
        chosen, directory = self._directory("model", name, version, "model.toml")
        path = directory / "model.toml"
        stamp = _stamp(path)
        config = ModelConfig.load(path)
        if (config.name, config.version) != (name, chosen):
            raise ModelError(f"{path} says {config.ref}, but lies in {name}/{chosen}: move it or fix the file")
        loaded = ModelVersion(config=config, directory=directory)
        if stamp is not None:
            self._loaded[path] = (stamp, loaded)
        return loaded

    def loaded(self, name: str, version: str) -> ModelVersion | None:
        """``name:version`` as read before, if its ``model.toml`` has not changed since; else None.

        For hot paths (the gateway, on every request): ``get`` reads the file when this is
        None. The file is looked at (one ``stat``) at most every :data:`RECHECK_S`.
        """
        now = time.monotonic()
        recent = self._recent.get((name, version))
        if recent is not None and now - recent[0] < RECHECK_S:
            return recent[1]
        path = self.root / name / version / "model.toml"
        cached = self._loaded.get(path)
        if cached is None or cached[0] != _stamp(path):
            self._recent.pop((name, version), None)
            return None
        self._recent[(name, version)] = (now, cached[1])
        return cached[1]

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
        return self._names("chain.toml")

    def chain_versions(self, name: str) -> list[str]:
        """Versions of a chain, oldest first."""
        return self._versions(name, "chain.toml")

    def is_chain(self, ref: str) -> bool:
        """True when ``name`` or ``name:version`` names a chain rather than a model."""
        name, _, version = ref.partition(":")
        if version:
            return (self.root / name / version / "chain.toml").is_file()
        return bool(self.chain_versions(name)) and not self.versions(name)

    def get_chain(self, name: str, version: str | None = None) -> ChainVersion:
        """A chain version (the latest when ``version`` is None), its steps found and checked to fit."""
        _chosen, directory = self._directory("chain", name, version, "chain.toml")
        if (directory / "model.toml").exists():
            raise ModelError(f"{directory} holds both model.toml and chain.toml: keep one")
        path = directory / "chain.toml"
        config = ChainConfig.load(path)
        if (config.name, config.version) != (directory.parent.name, directory.name):
            raise ModelError(
                f"{path} says {config.ref}, but lies in {directory.parent.name}/{directory.name}: "
                "move it or fix the file"
            )
        steps = []
        for index, step in enumerate(config.steps):
            try:
                steps.append(self.get(step.model, step.version))
            except ModelError as exc:
                raise ModelError(f"{path}: steps.{index} ({step.ref}): {exc}") from None
        check_chain(config, [s.config for s in steps], path)
        return ChainVersion(config=config, directory=directory, steps=tuple(steps))

    def resolve_chain(self, ref: str) -> ChainVersion:
        """``name:version`` or ``name`` (the latest version) of a chain."""
        name, _, version = ref.partition(":")
        return self.get_chain(name, version or None)

    def all_chains(self) -> list[ChainVersion]:
        """Every chain version, by name then version."""
        return [self.get_chain(name, version) for name in self.chain_names() for version in self.chain_versions(name)]
