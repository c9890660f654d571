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
of its own (``serve-<chain>-<version>-step<k>``) told by its
:class:`~inferstream.serving.chain_link.ChainLink` where its outputs go: an inner step
writes the next step's request (the request id, event time, reply-to, deadline, source
event, attributes and the chain's inputs carried through, its mapped outputs added, and
the steps so far with their latency); only the last step writes the prediction, to
``predictions`` and the original reply-to, naming the chain as its model and listing
every step. An embedder inside a chain writes nothing to
``embeddings``. A request a step cannot serve is dead-lettered by that step, so chain
requests = predictions + dead letters.

A step's ``latency_ms`` is the time from the previous step's output (the request's
event time for step 1) to its own: the steps add up to the prediction's total.

This module validates and runs chains. What ``chain.toml`` says and whether the steps
fit is in :mod:`~inferstream.serving.chain_config` (the repository loads chains with
it), where each step reads and writes in :mod:`~inferstream.serving.chain_link` (the
worker writes with it): both lie below the worker, which this module drives.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from inferstream.config import Settings
from inferstream.errors import ModelError
from inferstream.metrics import Metrics
from inferstream.serving.chain_config import step_inputs
from inferstream.serving.chain_link import chain_links, ensure_chain_topics
from inferstream.serving.onnx import OnnxModel
from inferstream.serving.repository import ChainVersion
from inferstream.serving.worker import InferenceWorker, WorkerOptions, WorkerStats

log = logging.getLogger("inferstream.serving")


def validate_chain(chain: ChainVersion) -> None:
    """Load and validate every step's model (one dummy batch each), then check the real widths between steps.

    An embedder's vectors are measured from its dummy batch, so an undeclared or
    wrong ``outputs.dims`` cannot hide a mismatch with the next step's vector input.
    """
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
