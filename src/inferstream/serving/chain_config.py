"""What ``chain.toml`` says, and whether a chain's steps fit together (names, kinds, dims).

Pure declarations over the steps' model configs: the repository loads chains with them
(:meth:`~inferstream.serving.repository.ModelRepository.get_chain`), and
:mod:`inferstream.serving.chain` explains and runs chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferstream.errors import ModelError
from inferstream.serving.config import (
    ModelConfig,
    TabularPreprocessing,
    TextPreprocessing,
    VectorPreprocessing,
    load_toml,
)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChainStepConfig(_Part):
    """One step: a model version, and which of the previous step's outputs feed which of its inputs."""

    model: str = Field(pattern=_NAME)
    version: str = Field(pattern=_NAME)
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="This step's input field → the previous step's output (embedding, label, probabilities, score).",
    )

    @property
    def ref(self) -> str:
        """``model:version``."""
        return f"{self.model}:{self.version}"


class ChainConfig(_Part):
    """Everything ``chain.toml`` says about one chain version."""

    name: str = Field(pattern=_NAME)
    version: str = Field(pattern=_NAME)
    kind: Literal["chain"] = "chain"
    description: str = ""
    steps: list[ChainStepConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _first_step_takes_the_request(self) -> ChainConfig:
        if self.steps[0].inputs:
            raise ValueError("steps.0.inputs: the first step takes the chain's request inputs as they are")
        return self

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    @classmethod
    def load(cls, path: Path) -> ChainConfig:
        """Read and check a ``chain.toml``; errors name the file and the field."""
        return load_toml(cls, path)


# -- what a step gives and takes ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """The shape of a step's output or input: a vector of ``dims``, a number, or a text."""

    kind: Literal["vector", "number", "text"]
    dims: int | None = None

    def __str__(self) -> str:
        return f"a {self.dims}-d vector" if self.kind == "vector" else f"a {self.kind}"

    def feeds(self, wanted: Slot) -> bool:
        """True when a value of this shape can feed an input of shape ``wanted``."""
        if self.kind != wanted.kind:
            return False
        return self.kind != "vector" or self.dims is None or wanted.dims is None or self.dims == wanted.dims


def step_outputs(config: ModelConfig) -> dict[str, Slot]:
    """The outputs a model version gives a chain's next step, by name (as in its predictions)."""
    spec = config.outputs
    found: dict[str, Slot] = {}
    if config.kind == "embedder":
        found["embedding"] = Slot("vector", spec.dims)
    if spec.label:
        found["label"] = Slot("text" if spec.labels else "number")
    if spec.probabilities:
        found["probabilities"] = Slot("vector", len(spec.labels) if spec.labels else None)
    if spec.score:
        found["score"] = Slot("number")
    return found


def step_inputs(config: ModelConfig) -> dict[str, Slot]:
    """The input fields a model version reads from a request, by name."""
    preprocessing = config.preprocessing
    if isinstance(preprocessing, VectorPreprocessing):
        return {preprocessing.field: Slot("vector", preprocessing.dims)}
    if isinstance(preprocessing, TextPreprocessing):
        return {preprocessing.field: Slot("text")}
    assert isinstance(preprocessing, TabularPreprocessing)
    return {feature: Slot("number") for feature in preprocessing.features}


def check_chain(config: ChainConfig, steps: Sequence[ModelConfig], where: Path) -> None:
    """Each step's outputs feed the next step's declared inputs (names, kinds, dims); the last one predicts.

    Raises ``ModelError`` naming the file, the step and what to change.
    """
    for index in range(1, len(steps)):
        before, step = steps[index - 1], steps[index]
        mapping = config.steps[index].inputs
        given, wanted = step_outputs(before), step_inputs(step)
        at = f"{where}: steps.{index} ({step.ref})"
        for name, output in mapping.items():
            if name not in wanted:
                raise ModelError(f"{at} has no input {name!r} (it reads {', '.join(sorted(wanted))})")
            if output not in given:
                raise ModelError(
                    f"{at}: input {name!r} is fed from {output!r}, which {before.ref} does not give "
                    f"(it gives {', '.join(sorted(given)) or 'nothing'})"
                )
            if not given[output].feeds(wanted[name]):
                raise ModelError(
                    f"{at}: input {name!r} takes {wanted[name]}, but {before.ref}'s {output!r} is {given[output]}"
                )
        unfed = sorted(set(wanted) - set(mapping))
        if unfed:
            example = ", ".join(f'{n} = "{next(iter(given), "embedding")}"' for n in unfed)
            raise ModelError(f"{at} reads {', '.join(unfed)}, which nothing feeds: add inputs = {{ {example} }}")
    last = steps[-1]
    if last.kind == "embedder":
        raise ModelError(
            f"{where}: the last step {last.ref} is an embedder; a chain ends in a classifier or a regressor "
            "(its prediction is the chain's answer)"
        )
