"""Where each step of a chain reads and writes: its topic and group, and the records it writes next.

A :class:`ChainLink` makes an :class:`~inferstream.serving.worker.InferenceWorker` one
step of a chain (``WorkerOptions.chain``); see :mod:`inferstream.serving.chain`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstream.config import Settings
from inferstream.connectors.kafka.admin import TopicAdmin
from inferstream.schemas.codec import codec_for
from inferstream.schemas.records import InferenceRequest, Prediction

if TYPE_CHECKING:
    from inferstream.serving.repository import ChainVersion


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
        self,
        request: InferenceRequest,
        outputs: Mapping[str, Any],
        queue_ms: float,
        compute_ms: float,
        now: datetime,
        lineage: Mapping[str, str] | None = None,
    ) -> bytes:
        """The bytes this step writes for one request: the next step's request, or the chain's prediction.

        ``lineage`` is this step's version's (``ModelConfig.lineage``), kept in its chain step.
        """
        total_ms = max((now - request.event_time).total_seconds() * 1000, 0.0)
        taken = sum(step.latency_ms for step in request.chain)
        model, version = self.steps[self.step - 1]
        steps = [
            *(step.model_dump() for step in request.chain),
            {"model": model, "version": version, "latency_ms": max(total_ms - taken, 0.0), "lineage": lineage},
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
                "lineage": None,  # a chain's own version is no registry's: each step's is in ``chain``
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
