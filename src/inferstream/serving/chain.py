"""Model chains: ``models/<chain>/<version>/chain.toml``, served as one worker per step over topics.

::

    name = "topic-of-text"
    version = "1"
    kind = "chain"
    description = "The topic of a text: minilm embeddings, classified"

    [[steps]]
    model = "minilm"
    version = "1"

    [[steps]]
    model = "text-topic"
    version = "1"
    inputs = { embedding = "embedding" }   # this step's input field = the previous step's output

Requests for a chain come in on its own request topic (``requests.<chain>.<version>``),
like any model's, so ``Client.predict("topic-of-text:1", {"text": ...})`` and routes work
unchanged. Step 1 reads that topic; step *k* reads ``requests.<chain>.<version>.step<k>``.
Each step is an :class:`~inferstream.serving.worker.InferenceWorker` in a consumer group
of its own (``serve-<chain>-<version>-step<k>``) told by its :class:`ChainLink` where its
outputs go: an inner step writes the next step's request (the request id, event time,
reply-to, deadline, source event, attributes and the chain's inputs carried through,
its mapped outputs added, and the steps so far with their latency); only the last step
writes the prediction, to ``predictions`` and the original reply-to, naming the chain as
its model and listing every step. An embedder inside a chain writes nothing to
``embeddings``. A request a step cannot serve is dead-lettered by that step, so chain
requests = predictions + dead letters.

A step's ``latency_ms`` is the time from the previous step's output (the request's
event time for step 1) to its own: the steps add up to the prediction's total.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.errors import ModelError
from inferstream.metrics import Metrics
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import InferenceRequest, Prediction
from inferstream.serving.config import (
    ModelConfig,
    TabularPreprocessing,
    TextPreprocessing,
    VectorPreprocessing,
    load_toml,
)

if TYPE_CHECKING:
    from inferstream.serving.repository import ModelRepository, ModelVersion
    from inferstream.serving.worker import InferenceWorker, WorkerStats

log = logging.getLogger("inferstream.serving")

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


def check_chain(config: ChainConfig, steps: Sequence[ModelVersion], where: Path) -> None:
    """Each step's outputs feed the next step's declared inputs (names, kinds, dims); the last one predicts.

    Raises ``ModelError`` naming the file, the step and what to change.
    """
    for index in range(1, len(steps)):
        before, step = steps[index - 1].config, steps[index].config
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
    last = steps[-1].config
    if last.kind == "embedder":
        raise ModelError(
            f"{where}: the last step {last.ref} is an embedder; a chain ends in a classifier or a regressor "
            "(its prediction is the chain's answer)"
        )


def validate_chain(chain: ChainVersion) -> None:
    """Load and validate every step's model (one dummy batch each), then check the real widths between steps.

    An embedder's vectors are measured from its dummy batch, so an undeclared or
    wrong ``outputs.dims`` cannot hide a mismatch with the next step's vector input.
    """
    from inferstream.serving.onnx import OnnxModel

    for index, version in enumerate(chain.steps):
        try:
            report = OnnxModel(version).validate()
        except ModelError as exc:
            raise ModelError(f"{chain.path}: steps.{index} ({version.config.ref}): {exc}") from None
        config = version.config
        if index + 1 == len(chain.steps) or config.outputs.embedding is None:
            continue
        shape = report.output_shapes[config.outputs.embedding]
        dims = shape[1] if config.outputs.pooling == "none" else shape[-1]
        wanted = step_inputs(chain.steps[index + 1].config)
        for name, output in chain.config.steps[index + 1].inputs.items():
            slot = wanted.get(name)
            if output == "embedding" and slot is not None and slot.dims not in (None, dims):
                raise ModelError(
                    f"{chain.path}: steps.{index + 1} ({chain.steps[index + 1].config.ref}) input {name!r} takes "
                    f"{slot}, but {config.ref} gives {dims}-d vectors"
                )


# -- where a step reads and writes ----------------------------------------------------


def step_topic(settings: Settings, chain: str, version: str, step: int) -> str:
    """The topic step ``step`` (1-based) reads: the chain's request topic for the first step."""
    topics = settings.topics
    return topics.request_topic(chain, version if step == 1 else f"{version}.step{step}")


def step_group(settings: Settings, chain: str, version: str, step: int) -> str:
    """The consumer group of one step's workers."""
    return f"{settings.topics.prefix}serve-{chain}-{version}-step{step}"


def _wire(value: Any) -> Any:
    # Vectors travel as base64 of little-endian float32 (as on every topic); probabilities as a list.
    if isinstance(value, np.ndarray):
        return base64.b64encode(value.astype("<f4", copy=False).tobytes()).decode("ascii")
    if isinstance(value, dict):
        return list(value.values())
    return value


@dataclass(frozen=True)
class ChainLink:
    """What makes a worker one step of a chain: where it reads, and what it writes where.

    Given to the worker as ``WorkerOptions.chain``.
    """

    chain: str
    version: str
    #: This step's number, from 1.
    step: int
    #: The steps of the chain as (model, version), first to last.
    steps: tuple[tuple[str, str], ...]
    input_topic: str
    group_id: str
    #: The next step's topic; None for the last step (its outputs are predictions).
    next_topic: str | None
    #: The next step's input field → this step's output.
    next_inputs: Mapping[str, str] = field(default_factory=dict)
    #: Fields the steps after the first add to the inputs: left out of the prediction's inputs.
    added_inputs: frozenset[str] = frozenset()

    @property
    def last(self) -> bool:
        """True for the step that writes the chain's predictions."""
        return self.next_topic is None

    @property
    def header(self) -> tuple[str, bytes]:
        """The schema header of what this step writes."""
        return codec_for(Prediction if self.last else InferenceRequest).header

    def output(
        self, request: InferenceRequest, outputs: Mapping[str, Any], queue_ms: float, compute_ms: float, now: datetime
    ) -> bytes:
        """The bytes this step writes for one request: the next step's request, or the chain's prediction."""
        total_ms = max((now - request.event_time).total_seconds() * 1000, 0.0)
        taken = sum(step.latency_ms for step in request.chain)
        model, version = self.steps[self.step - 1]
        steps = [
            *({"model": s.model, "version": s.version, "latency_ms": s.latency_ms} for s in request.chain),
            {"model": model, "version": version, "latency_ms": max(total_ms - taken, 0.0)},
        ]
        common = {
            "request_id": request.request_id,
            "event_time": request.event_time,
            "model": self.chain,
            "version": self.version,
        }
        if not self.last:
            inputs = dict(request.inputs)
            for name, output in self.next_inputs.items():
                inputs[name] = _wire(outputs[output])
            return _REQUESTS.encode_fields(
                {
                    **common,
                    "reply_to": request.reply_to,
                    "deadline": request.deadline,
                    "source_event_id": request.source_event_id,
                    "attributes": request.attributes,
                    "inputs": inputs,
                    "chain": steps,
                }
            )
        added = self.added_inputs
        return _PREDICTIONS.encode_fields(
            {
                **common,
                "inputs": {k: v for k, v in request.inputs.items() if k not in added} if added else request.inputs,
                "outputs": outputs,
                "latency": {"queue_ms": queue_ms, "compute_ms": compute_ms, "total_ms": total_ms},
                "predicted_at": now,
                "shadow": False,
                "chain": steps,
                "source_event_id": request.source_event_id,
                "attributes": request.attributes,
            }
        )


_REQUESTS = codec_for(InferenceRequest)
_PREDICTIONS = codec_for(Prediction)


def chain_links(settings: Settings, chain: ChainVersion) -> list[ChainLink]:
    """One link per step of ``chain``, first to last."""
    config = chain.config
    name, version = config.name, config.version
    count = len(config.steps)
    steps = tuple((s.model, s.version) for s in config.steps)
    added = frozenset(n for s in config.steps[1:] for n in s.inputs)
    return [
        ChainLink(
            chain=name,
            version=version,
            step=k,
            steps=steps,
            input_topic=step_topic(settings, name, version, k),
            group_id=step_group(settings, name, version, k),
            next_topic=step_topic(settings, name, version, k + 1) if k < count else None,
            next_inputs=dict(config.steps[k].inputs) if k < count else {},
            added_inputs=added,
        )
        for k in range(1, count + 1)
    ]


def ensure_chain_topics(settings: Settings, chain: ChainVersion) -> list[str]:
    """Create the platform's topics, the chain's request topic and its steps' topics if missing; their names."""
    admin = TopicAdmin(settings)
    admin.ensure_platform_topics()  # predictions, dead letters: where the steps write
    config = chain.config
    return [
        admin.ensure_request_topic(config.name, config.version if k == 1 else f"{config.version}.step{k}")
        for k in range(1, len(config.steps) + 1)
    ]


# -- running every step ---------------------------------------------------------------


@dataclass
class ChainStats:
    """Counts of each step's worker, first to last."""

    steps: list[WorkerStats]

    @property
    def requests(self) -> int:
        """Requests the chain took in (its first step's)."""
        return self.steps[0].requests if self.steps else 0

    @property
    def predictions(self) -> int:
        """Predictions the chain wrote (its last step's outputs)."""
        return self.steps[-1].predictions if self.steps else 0

    @property
    def dead_letters(self) -> int:
        """Requests dead-lettered by any step."""
        return sum(s.dead_letters for s in self.steps)


class ChainRunner:
    """Serves every step of a chain, one worker thread per step, in this process.

    >>> runner = ChainRunner(settings, repository.get_chain("topic-of-text", "1"))  # doctest: +SKIP
    >>> threading.Thread(target=runner.run).start(); runner.ready.wait(60)         # doctest: +SKIP
    """

    def __init__(self, settings: Settings, chain: ChainVersion, *, metrics: Metrics | None = None) -> None:
        from inferstream.serving.worker import InferenceWorker, WorkerOptions

        self.settings = settings
        self.chain = chain
        self.metrics = metrics or Metrics()
        self.links = chain_links(settings, chain)
        self.workers: list[InferenceWorker] = [
            InferenceWorker(settings, version, metrics=self.metrics, options=WorkerOptions(chain=link))
            for version, link in zip(chain.steps, self.links, strict=True)
        ]
        self.ready = threading.Event()
        self._stopped = threading.Event()

    def run(self) -> ChainStats:
        """Create the topics, start every step (the last first), serve until ``stop()``; raises a step's failure."""
        ensure_chain_topics(self.settings, self.chain)
        failures: list[BaseException] = []

        def serve(worker: InferenceWorker) -> None:
            try:
                worker.run()
            except BaseException as exc:
                log.error("step %s of %s failed: %s", worker.config.ref, self.chain.config.ref, exc)
                failures.append(exc)
                self.stop()

        threads = []
        # The last step first: a step's outputs find the next one already consuming.
        for worker in reversed(self.workers):
            thread = threading.Thread(target=serve, args=(worker,), name=f"chain-{worker.config.ref}", daemon=True)
            thread.start()
            threads.append(thread)
        while not self._stopped.is_set() and not all(w.ready.is_set() for w in self.workers):
            self._stopped.wait(0.05)
        if not self._stopped.is_set():
            self.ready.set()
        self._stopped.wait()
        # The first step first: each step finishes its batch in hand; what a later step had read
        # but not batched (or not read yet) is on its topic, served at the next start.
        for worker, thread in zip(self.workers, reversed(threads), strict=True):
            worker.stop()
            thread.join()
        if failures:
            failure = failures[0]
            if isinstance(failure, ModelError):
                raise failure
            raise ModelError(f"{self.chain.config.ref} stopped: {failure}") from failure
        return ChainStats([w.stats for w in self.workers])

    def stop(self) -> None:
        """Stop every step (each finishes its batch in hand and commits) and return from ``run()``."""
        self._stopped.set()


def load_chain(repository: ModelRepository, directory: Path) -> ChainVersion:
    """Read ``directory/chain.toml``, find its steps in ``repository`` and check that they fit together."""
    path = directory / "chain.toml"
    config = ChainConfig.load(path)
    if (config.name, config.version) != (directory.parent.name, directory.name):
        raise ModelError(
            f"{path} says {config.ref}, but lies in {directory.parent.name}/{directory.name}: move it or fix the file"
        )
    steps = []
    for index, step in enumerate(config.steps):
        try:
            steps.append(repository.get(step.model, step.version))
        except ModelError as exc:
            raise ModelError(f"{path}: steps.{index} ({step.ref}): {exc}") from None
    check_chain(config, steps, path)
    return ChainVersion(config=config, directory=directory, steps=tuple(steps))
