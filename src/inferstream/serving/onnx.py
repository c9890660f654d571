"""An ONNX model version, loaded lazily, checked against its config and its providers.

ONNX Runtime silently falls back to the CPU when a GPU provider cannot start, so
the providers actually in use are read back from the session after loading
(``get_providers()``); a model configured for a GPU refuses to run on the CPU
unless its ``runtime.allow_cpu_fallback`` says it may.

One process loads one session per model file and runtime settings: a second
``OnnxModel`` of the same version (the query embedder beside the embedding worker, a
chain step beside its worker) shares the first one's session, whose ``run`` is
thread-safe, instead of holding the weights twice. A session lives as long as a model
uses it.
"""

from __future__ import annotations

import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inferstream.errors import ModelError, ProviderUnavailableError
from inferstream.serving.config import CPU_PROVIDER, GPU_PROVIDERS, ModelConfig, TextPreprocessing
from inferstream.serving.repository import ModelVersion

Array = npt.NDArray[Any]

# ONNX tensor element types as ONNX Runtime names them, by the config's dtype names.
_ORT_TYPES = {
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
}
_DUMMY_SEQUENCE = 8
# Sessions by model file (path, modification time, size) and runtime settings.
_SESSIONS: weakref.WeakValueDictionary[tuple[Any, ...], Any] = weakref.WeakValueDictionary()
_SESSIONS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What ``validate()`` found: providers in use, the graph's signature, one dummy batch."""

    ref: str
    providers: list[str]
    inputs: dict[str, tuple[str, list[int | str | None]]]
    outputs: dict[str, tuple[str, list[int | str | None]]]
    batch_size: int
    output_shapes: dict[str, tuple[int, ...]]
    latency_ms: float


def runtime_key(runtime: Any) -> tuple[Any, ...]:
    """What of a model's runtime settings makes its session differ (threads; providers are keyed apart)."""
    return (runtime.intra_op_threads, runtime.inter_op_threads)


class OnnxModel:
    """One model version's ONNX session: created in ``load()``, never at import or construction."""

    def __init__(self, version: ModelVersion) -> None:
        self.version = version
        self.config: ModelConfig = version.config
        self._session: Any = None

    @property
    def loaded(self) -> bool:
        """True once ``load()`` succeeded."""
        return self._session is not None

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses, best first."""
        return list(self._require().get_providers())

    def load(self) -> OnnxModel:
        """Create the session; refuse a GPU config on a CPU, a missing or corrupt file."""
        import onnxruntime as ort

        path = self.version.onnx_path
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist ({self.config.ref}); nothing will be consumed")
        runtime = self.config.runtime
        available = list(ort.get_available_providers())
        usable = [p for p in runtime.providers if p in available]
        if runtime.wants_gpu and not any(p in GPU_PROVIDERS for p in usable) and not runtime.allow_cpu_fallback:
            raise ProviderUnavailableError(self._refusal(available))
        if not usable:
            if not runtime.allow_cpu_fallback:
                raise ProviderUnavailableError(self._refusal(available))
            usable = [CPU_PROVIDER]
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, *usable, "|", *runtime_key(runtime))
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = self._session_of(ort, usable)
                _SESSIONS[key] = session
        active = list(session.get_providers())
        if runtime.wants_gpu and active[0] not in GPU_PROVIDERS and not runtime.allow_cpu_fallback:
            raise ProviderUnavailableError(self._refusal(available, active=active))
        self._session = session
        self._check_signature()
        return self

    def _session_of(self, ort: Any, usable: list[str]) -> Any:
        runtime = self.config.runtime
        options = ort.SessionOptions()
        options.intra_op_num_threads = runtime.intra_op_threads
        options.inter_op_num_threads = runtime.inter_op_threads
        options.log_severity_level = 3  # errors only: provider fallbacks are checked by load()
        path = self.version.onnx_path
        try:
            with warnings.catch_warnings():
                # ONNX Runtime warns and falls back when a provider cannot start; load() checks.
                warnings.simplefilter("ignore", UserWarning)
                return ort.InferenceSession(str(path), sess_options=options, providers=usable)
        except Exception as exc:  # onnxruntime raises its own, untyped, errors
            raise ModelError(f"cannot load {path} ({self.config.ref}): {exc}") from None

    def _refusal(self, available: list[str], active: list[str] | None = None) -> str:
        wanted = ", ".join(self.config.runtime.providers)
        got = (
            f"the session started with {', '.join(active)}" if active else f"ONNX Runtime offers {', '.join(available)}"
        )
        return (
            f"{self.config.ref} is configured for {wanted} but {got}: run it on a machine with a GPU and "
            "the `gpu` extra (onnxruntime-gpu), or set runtime.allow_cpu_fallback = true in its model.toml "
            "to run it on the CPU"
        )

    def _require(self) -> Any:
        if self._session is None:
            raise ModelError(f"{self.config.ref} is not loaded: call load() first")
        return self._session

    def _check_signature(self) -> None:
        session = self._require()
        graph_inputs = {i.name: i for i in session.get_inputs()}
        graph_outputs = {o.name for o in session.get_outputs()}
        where = self.version.directory / "model.toml"
        for spec in self.config.inputs:
            node = graph_inputs.get(spec.name)
            if node is None:
                raise ModelError(f"{where}: input {spec.name!r} is not in the graph (it has {sorted(graph_inputs)})")
            if node.type != _ORT_TYPES[spec.dtype]:
                raise ModelError(f"{where}: input {spec.name!r} is {node.type} in the graph, not {spec.dtype}")
            if len(node.shape) != len(spec.shape):
                raise ModelError(
                    f"{where}: input {spec.name!r} has rank {len(node.shape)} in the graph, not {len(spec.shape)}"
                )
            for axis, (graph_dim, declared) in enumerate(zip(node.shape, spec.shape, strict=True)):
                if isinstance(graph_dim, int) and declared != -1 and graph_dim != declared:
                    raise ModelError(
                        f"{where}: input {spec.name!r} axis {axis} is {graph_dim} in the graph, not {declared}"
                    )
        missing_inputs = set(graph_inputs) - {s.name for s in self.config.inputs}
        if missing_inputs:
            raise ModelError(f"{where}: the graph also needs inputs {sorted(missing_inputs)}")
        for name in self.config.outputs.graph_outputs():
            if name not in graph_outputs:
                raise ModelError(f"{where}: output {name!r} is not in the graph (it has {sorted(graph_outputs)})")

    def run(self, feeds: dict[str, Array]) -> dict[str, Array]:
        """Run one batch; returns the configured graph outputs by name."""
        session = self._require()
        names = self.config.outputs.graph_outputs()
        values = session.run(names, feeds)
        return dict(zip(names, values, strict=True))

    def dummy_feeds(self, batch_size: int = 2) -> dict[str, Array]:
        """Inputs of the declared shapes and types (zeros; ones for attention masks)."""
        feeds = {}
        for spec in self.config.inputs:
            shape = [
                batch_size if axis == 0 and dim == -1 else _DUMMY_SEQUENCE if dim == -1 else dim
                for axis, dim in enumerate(spec.shape)
            ]
            fill = 1 if spec.source == "attention_mask" else 0
            feeds[spec.name] = np.full(shape, fill, dtype=spec.dtype)
        return feeds

    def _check_embedding(self, outputs: dict[str, Array], batch_size: int) -> None:
        """An embedder's output pools to (batch, dims), and a text model's tokenizer loads."""
        from inferstream.serving.text import TextPreprocessor, pool

        spec = self.config.outputs
        where = self.version.directory / "model.toml"
        if isinstance(self.config.preprocessing, TextPreprocessing):
            TextPreprocessor(self.config, self.version.directory).load()
        if spec.embedding is None:
            return
        hidden = outputs[spec.embedding]
        mask = np.ones(hidden.shape[:2], dtype=np.int64)
        try:
            vectors = pool(hidden, mask, spec.pooling, spec.normalize)
        except ModelError as exc:
            raise ModelError(f"{where}: output {spec.embedding!r}: {exc}") from None
        dims = spec.dims if spec.dims is not None else vectors.shape[1]
        if vectors.shape != (batch_size, dims):
            raise ModelError(
                f"{where}: output {spec.embedding!r} of shape {hidden.shape} pools ({spec.pooling}) to "
                f"{vectors.shape}, not ({batch_size}, {dims}) as outputs.dims says"
            )

    def validate(self, batch_size: int = 2) -> ValidationReport:
        """Load (if needed), check the signature and run one dummy batch.

        For an embedder, also pool the dummy output and check its dimensions; for a
        text model, read the tokenizer.
        """
        if not self.loaded:
            self.load()
        session = self._require()
        started = time.perf_counter()
        outputs = self.run(self.dummy_feeds(batch_size))
        latency_ms = (time.perf_counter() - started) * 1000
        for name, value in outputs.items():
            if value.shape[0] != batch_size:
                raise ModelError(
                    f"{self.config.ref}: output {name!r} has {value.shape[0]} rows for a batch of {batch_size}"
                )
        self._check_embedding(outputs, batch_size)
        return ValidationReport(
            ref=self.config.ref,
            providers=self.providers,
            inputs={i.name: (i.type, list(i.shape)) for i in session.get_inputs()},
            outputs={o.name: (o.type, list(o.shape)) for o in session.get_outputs()},
            batch_size=batch_size,
            output_shapes={name: tuple(value.shape) for name, value in outputs.items()},
            latency_ms=latency_ms,
        )
