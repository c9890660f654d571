"""The jobs on a ``dask.distributed`` cluster: Beam's Dask runner, with what the jobs need of it fixed.

``--runner dask`` runs a job's pipeline on Beam's DaskRunner (experimental in
Beam), over the scheduler at ``--dask-address HOST:PORT`` or, without one, over a
local cluster of ``--dask-workers`` processes (default 2) that the job starts on
127.0.0.1 (no dashboard) and stops at its end. Beam's runner as shipped

- computes only the last step it visits, so a pipeline with two sinks (a job's
  output and its rejects) writes one of them;
- hands every output of a multi-output ``ParDo`` to each consumer, so the rejects
  file would also get the main rows;
- has no metrics (``PipelineResult.metrics()`` raises), and the jobs count with them;
- never closes its client.

:class:`DaskRunner` here keeps Beam's translation of each step and fixes those:
each consumer reads only its own tag, every leaf of the graph is computed, each
bundle (a Dask partition) runs its ``DoFn`` under a metrics container whose
counters come back with the bundle's results, and the client (and the local
cluster) close when the run ends. Counters are those of the attempt Dask kept,
so a retried task is counted once. Dask runs a task again when its worker dies
(``distributed.scheduler.allowed-failures`` times), even one that had finished
but was not recorded yet: the jobs' outputs are keyed parts that a retry
overwrites (:mod:`inferstream.jobs._pipeline`), and replay sends each file in
Kafka transactions with its progress, so that a retry fences the dead attempt,
aborts its open transaction and goes on after the last committed record
(:mod:`inferstream.jobs.topics`). Side inputs are still computed inside the task
that reads them (Beam's translation), so the jobs use none.

The workers must see the job's input and output paths (one machine, or a shared
file system), and have inferstream installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from apache_beam.metrics.execution import MetricsContainer
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from inferstream.errors import ConfigError

log = logging.getLogger(__name__)

#: ``--runner`` values that select the Dask runner.
RUNNER_NAMES = ("dask", "daskrunner")
#: Worker processes of the local cluster a job starts when no ``--dask-address`` is given.
DEFAULT_WORKERS = 2


@dataclass(frozen=True, slots=True)
class DaskSpec:
    """Where a job runs on Dask: a scheduler's address, or a local cluster of ``workers`` processes."""

    address: str | None = None
    workers: int = DEFAULT_WORKERS


def _value(flags: list[str], i: int, name: str) -> tuple[str, int]:
    """The value of the flag at ``i`` (``--name=value`` or ``--name value``), and the index after it."""
    flag = flags[i]
    if "=" in flag:
        return flag.split("=", 1)[1], i + 1
    if i + 1 >= len(flags) or flags[i + 1].startswith("--"):
        raise ConfigError(f"{name} needs a value")
    return flags[i + 1], i + 2


def parse_dask_flags(flags: Sequence[str]) -> tuple[DaskSpec | None, list[str]]:
    """The Dask spec the flags name (``--runner dask``, ``--dask-address``, ``--dask-workers``), and the other flags.

    ``None`` when the runner is not Dask; the other flags go to Beam unchanged (Beam's own
    ``--dask_*`` options among them, e.g. ``--dask_connection_timeout``).
    """
    rest: list[str] = []
    runner: str | None = None
    address: str | None = None
    workers: int | None = None
    items = list(flags)
    i = 0
    while i < len(items):
        name = items[i].split("=", 1)[0]
        if name == "--runner":
            runner, i = _value(items, i, name)
            if runner.lower() not in RUNNER_NAMES:
                rest.append(f"--runner={runner}")
        elif name == "--dask-address":
            address, i = _value(items, i, name)
        elif name == "--dask-workers":
            text, i = _value(items, i, name)
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(f"--dask-workers is a number of worker processes (1 or more), not {text!r}")
            workers = int(text)
        else:
            rest.append(items[i])
            i += 1
    on_dask = runner is not None and runner.lower() in RUNNER_NAMES
    if not on_dask:
        if address is not None or workers is not None:
            raise ConfigError("--dask-address and --dask-workers go with --runner dask")
        return None, rest
    if address is not None and workers is not None:
        raise ConfigError("--dask-workers starts a local cluster: leave it out with --dask-address")
    if address is not None and ":" not in address.removeprefix("tcp://"):
        raise ConfigError(f"--dask-address is the scheduler's HOST:PORT, not {address!r}")
    return DaskSpec(address=address, workers=workers or DEFAULT_WORKERS), rest


# -- bundles ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleCounters:
    """The counters of one bundle, carried in its results (the consumers never see it)."""

    values: dict[tuple[str, str], int]


def _run_bundle(items: Iterable[Any], step: str, invoker_args: Any, invoker_kwargs: Any, receivers: Any) -> list[Any]:
    """One bundle of a ``DoFn`` (a Dask partition) under a metrics container; its counters come last.

    Beam's own bundle function reads the outputs before ``finish_bundle`` (losing what
    ``BatchElements`` holds at the end of a bundle) and drops the outputs' tags.
    """
    from apache_beam.pvalue import TaggedOutput
    from apache_beam.runners.common import DoFnInvoker
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory

    container = MetricsContainer(step)
    sampler = statesampler.StateSampler(step, CounterFactory())
    previous = statesampler.get_current_tracker()
    statesampler.set_current_tracker(sampler)
    try:
        sampler.start()
        with sampler.scoped_state(step, "process", metrics_container=container):
            invoker = DoFnInvoker.create_invoker(*invoker_args, **invoker_kwargs)
            invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in items:
                invoker.invoke_process(item)
            invoker.invoke_finish_bundle()
            invoker.invoke_teardown()
    finally:
        sampler.stop()
        statesampler.set_current_tracker(previous)
    results = [
        TaggedOutput(out.tag, out.value.value) if isinstance(out, TaggedOutput) else out.value
        for out in receivers.values
    ]
    counters = {
        (key.metric.namespace, key.metric.name): int(value)
        for key, value in container.get_cumulative().counters.items()
    }
    return [*results, BundleCounters(counters)]


def _select(item: Any, *, tag: str | None) -> bool:
    from apache_beam.pvalue import TaggedOutput

    if isinstance(item, BundleCounters):
        return False
    if isinstance(item, TaggedOutput):
        return bool(item.tag == tag)
    return tag is None


def _is_counters(item: Any) -> bool:
    return isinstance(item, BundleCounters)


def _unwrap(item: Any) -> Any:
    from apache_beam.pvalue import TaggedOutput

    return item.value if isinstance(item, TaggedOutput) else item


def _only(bag: Any, tag: str | None) -> Any:
    """The elements of one output of a step (its main output when ``tag`` is None)."""
    return bag.filter(partial(_select, tag=tag)).map(_unwrap)


# -- the runner ---------------------------------------------------------------------------------


class DaskRunnerResult(PipelineResult):
    """A run on Dask: waits for every leaf, sums the bundles' counters, closes the client and local cluster."""

    def __init__(self, client: Any, cluster: Any, leaves: Any, counters: Any) -> None:
        super().__init__(PipelineState.RUNNING)
        self.client = client
        self.cluster = cluster
        self.futures = client.compute([*leaves, counters])
        self.counters: dict[tuple[str, str], int] = {}

    def wait_until_finish(self, duration: int | None = None) -> str:
        """Wait for the whole graph (a failed task raises here, after Dask's retries)."""
        try:
            *leaves, counters = self.futures
            for future in leaves:
                future.result(timeout=duration / 1000 if duration else None)
            for bundle in counters.result():
                for key, value in bundle.values.items():
                    self.counters[key] = self.counters.get(key, 0) + value
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        return str(self._state)

    def metrics(self) -> CounterResults:
        """The jobs' counters, summed over the bundles Dask kept."""
        return CounterResults(self.counters)


@dataclass(frozen=True, slots=True)
class _Name:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class _Key:
    metric: _Name


@dataclass(frozen=True, slots=True)
class _Counter:
    key: _Key
    committed: int
    attempted: int


class CounterResults:
    """Counters in the shape of Beam's ``MetricResults.query`` (what ``_pipeline.run`` reads)."""

    def __init__(self, counters: dict[tuple[str, str], int]) -> None:
        self._counters = counters

    def query(self, metric_filter: Any = None) -> dict[str, list[_Counter]]:
        """Counters of the filter's namespaces (all without one)."""
        namespaces = set(getattr(metric_filter, "namespaces", None) or ())
        return {
            "counters": [
                _Counter(_Key(_Name(ns, name)), value, value)
                for (ns, name), value in sorted(self._counters.items())
                if not namespaces or ns in namespaces
            ],
            "distributions": [],
            "gauges": [],
        }


def start_client(spec: DaskSpec) -> tuple[Any, Any]:
    """A client of the scheduler at ``spec.address``, or of a local cluster it starts (loopback, no dashboard)."""
    from distributed import Client, LocalCluster

    if spec.address is not None:
        return Client(spec.address), None
    cluster = LocalCluster(
        n_workers=spec.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    log.info("local Dask cluster at %s with %d worker processes", cluster.scheduler_address, spec.workers)
    return Client(cluster), cluster


class DaskRunner(PipelineRunner):
    """Beam's DaskRunner over the cluster of a :class:`DaskSpec`, with the fixes above."""

    def __init__(self, spec: DaskSpec) -> None:
        self.spec = spec

    @staticmethod
    def is_fnapi_compatible() -> bool:
        """Runs the pipeline's Python objects, not its portable proto (as Beam's DaskRunner)."""
        return False

    def run_pipeline(self, pipeline: Any, options: PipelineOptions) -> DaskRunnerResult:
        """Translate every step to Dask bags, compute all leaves and the counters."""
        import dask.bag as db
        from apache_beam.runners.dask.dask_runner import DaskOptions
        from apache_beam.runners.dask.overrides import dask_overrides

        bag_kwargs = DaskOptions._extract_bag_kwargs(
            options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        )
        pipeline.replace_all(dask_overrides())
        visitor = _Visitor(bag_kwargs or {"partition_size": 1})
        pipeline.visit(visitor)
        leaves = [bag for node, bag in visitor.bags.items() if node not in visitor.consumed]
        counters = db.concat([bag.filter(_is_counters) for bag in visitor.pardos])
        client, cluster = start_client(self.spec)
        try:
            return DaskRunnerResult(client, cluster, leaves, counters)
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise


class _Visitor(PipelineVisitor):
    """Beam's translation of each leaf step, with inputs narrowed to their tag and ParDo bundles counted."""

    def __init__(self, bag_kwargs: dict[str, Any]) -> None:
        self.bag_kwargs = bag_kwargs
        self.bags: dict[Any, Any] = {}
        self.consumed: set[Any] = set()
        self.pardos: list[Any] = []

    def visit_transform(self, node: Any) -> None:
        """Translate one leaf step."""
        from apache_beam import pvalue
        from apache_beam.runners.dask.transform_evaluator import TRANSLATIONS, Flatten, NoOp, ParDo

        op_class: Any = TRANSLATIONS.get(node.transform.__class__, NoOp)
        op = op_class(node, bag_kwargs=self.bag_kwargs)
        inputs: list[Any] = []
        for value in node.inputs:
            if isinstance(value, pvalue.PBegin):
                inputs.append(None)
            elif value.producer in self.bags:
                self.consumed.add(value.producer)
                inputs.append(_only(self.bags[value.producer], value.tag))
        if node.side_inputs:
            raise ConfigError(f"step {node.full_label} has side inputs, which the Dask runner computes once per task")
        input_bag: Any = None
        if inputs:
            input_bag = inputs if isinstance(op, Flatten) or len(inputs) > 1 else inputs[0]
        if isinstance(op, ParDo):
            bag = _translate_pardo(op, input_bag, node.full_label)
            self.pardos.append(bag)
        else:
            bag = op.apply(input_bag=input_bag, side_inputs=None)
        self.bags[node] = bag


def _translate_pardo(op: Any, input_bag: Any, step: str) -> Any:
    """Beam's ParDo translation, each bundle run by :func:`_run_bundle`."""
    captured: dict[str, Any] = {}

    class _Capture:
        def map(self, *args: Any) -> _Capture:
            captured["map"] = args
            return self

        def map_partitions(self, _fn: Any, *args: Any) -> _Capture:
            captured["args"] = args
            return self

    op.apply(input_bag=_Capture(), side_inputs=None)
    get_windowed_value, window_fn = captured["map"]
    return input_bag.map(get_windowed_value, window_fn).map_partitions(_run_bundle, step, *captured["args"])
