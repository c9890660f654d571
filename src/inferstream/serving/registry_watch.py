"""Following a registry alias: import, shadow, then a canary share of the traffic.

``RegistryWatch`` polls ``models:/<name>@<alias>``. When the alias moves to a registered
version not imported yet, the version is imported (validated, with its lineage; see
:mod:`inferstream.serving.registry`) and served as a *shadow* of the model's routed
versions: it reads their requests in a group of its own and writes only to
``predictions-shadow``. Once it has answered ``shadow_predictions`` requests with no dead
letter, the shadow stops, the version is served for real by a worker of this process, and
the model's route gives it ``canary`` percent of the traffic (the versions routed before
keep the rest, in their old proportions). Nothing else restarts: workers of the other
versions and the clients follow the route on the control topic. A version that fails to
import, or dead-letters a request while shadowing, is refused with the reason and gets no
traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from inferstream.config import Settings
from inferstream.errors import InferstreamError
from inferstream.metrics import Metrics
from inferstream.serving.registry import RegistryRef, import_model, registry_version
from inferstream.serving.repository import ModelRepository, ModelVersion
from inferstream.serving.routes import read_routes, set_route
from inferstream.serving.worker import InferenceWorker, WorkerOptions

log = logging.getLogger(__name__)


@dataclass
class WatchEvent:
    """One step of the watch, for logs and tests: imported, shadowing, routed or refused."""

    kind: str
    version: str
    detail: str = ""


@dataclass
class RegistryWatch:
    """Imports each new version behind an alias, shadows it, then routes a canary share to it."""

    settings: Settings
    uri: str
    name: str
    canary: float = 10.0
    shadow_predictions: int = 100
    poll_s: float = 10.0
    shadow_timeout_s: float = 600.0
    metrics: Metrics | None = None
    events: list[WatchEvent] = field(default_factory=list)
    #: Workers this process serves (the routed versions it imported), until ``stop()``.
    workers: list[InferenceWorker] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    # Registered versions handled (imported and routed, or refused): each is looked at once.
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.ref = RegistryRef.parse(self.uri)
        if self.ref.alias is None:
            raise InferstreamError(f"{self.uri}: --watch follows an alias (models:/<name>@<alias>)")
        if not 0 < self.canary <= 100:
            raise InferstreamError(f"the canary share is a percentage in (0, 100], not {self.canary}")

    def run(self) -> None:
        """Watch until ``stop()``: each new registered version behind the alias, once."""
        self.ready.set()
        while not self._stop.is_set():
            try:
                self._check()
            except InferstreamError as exc:
                log.error("%s: %s", self.uri, exc)
            self._stop.wait(self.poll_s)
        for worker in self.workers:
            worker.stop()
        for thread in self._threads:
            thread.join(60)

    def stop(self) -> None:
        """End the watch and the workers it started."""
        self._stop.set()

    def _check(self) -> None:
        registered = registry_version(self.settings, self.ref)["version"]
        repository = ModelRepository(self.settings.models_dir)
        if registered in self._seen or self._imported(repository, registered):
            return
        self._seen.add(registered)
        try:
            imported = import_model(self.settings, self.uri, name=self.name)
        except InferstreamError as exc:
            self._event("refused", registered, str(exc))
            return
        version = imported.version
        self._event("imported", registered, version.config.ref)
        primaries = self._routed_versions(repository, exclude=version.config.version)
        if primaries:
            reason = self._shadow(version, primaries, registered)
            if reason is not None:
                self._event("refused", registered, f"{version.config.ref}: {reason}")
                return
        self._serve(version)
        weights = {v: w * (100 - self.canary) / 100 for v, w in primaries.items()}
        weights[version.config.version] = self.canary if primaries else 100.0
        set_route(self.settings, self.name, weights)
        shares = ", ".join(f"v{v}={w:g}" for v, w in weights.items())
        self._event("routed", registered, f"{self.name}: {shares}")

    def _imported(self, repository: ModelRepository, registered: str) -> bool:
        # A version imported earlier (by this watch or by hand) from the same registered version.
        if self.name not in repository.names():
            return False
        for version in repository.versions(self.name):
            source = repository.get(self.name, version).config.source
            if source is not None and (source.registered_model, source.registered_version) == (
                self.ref.name,
                registered,
            ):
                return True
        return False

    def _routed_versions(self, repository: ModelRepository, *, exclude: str) -> dict[str, float]:
        route = read_routes(self.settings).get(self.name)
        if route is not None:
            return {v.version: v.weight for v in route.versions if v.weight > 0 and v.version != exclude}
        others = [v for v in repository.versions(self.name) if v != exclude]
        return {others[-1]: 100.0} if others else {}

    def _shadow(self, version: ModelVersion, primaries: dict[str, float], registered: str) -> str | None:
        """Serve ``version`` as a shadow until it answered enough requests; the reason when it failed."""
        worker = InferenceWorker(
            self.settings, version, metrics=self.metrics, options=WorkerOptions(shadow_of=tuple(primaries))
        )
        thread = threading.Thread(target=worker.run, name=f"shadow-{version.config.ref}", daemon=True)
        thread.start()
        shadowed = ", ".join(f"{self.name}:{v}" for v in primaries)
        self._event("shadowing", registered, f"{version.config.ref} shadows {shadowed}")
        deadline = time.monotonic() + self.shadow_timeout_s
        try:
            while not self._stop.is_set():
                stats = worker.stats
                if worker.failure is not None:
                    return f"the shadow stopped: {worker.failure}"
                if stats.dead_letters:
                    return f"the shadow dead-lettered {stats.dead_letters} of {stats.requests} requests"
                if stats.predictions >= self.shadow_predictions:
                    return None
                if time.monotonic() > deadline:
                    return f"only {stats.predictions} shadow predictions in {self.shadow_timeout_s:.0f} s"
                time.sleep(0.2)
            return "the watch stopped"
        finally:
            worker.stop()
            thread.join(60)

    def _serve(self, version: ModelVersion) -> None:
        worker = InferenceWorker(self.settings, version, metrics=self.metrics)
        thread = threading.Thread(target=worker.run, name=f"serve-{version.config.ref}", daemon=True)
        thread.start()
        if not worker.ready.wait(120):
            raise InferstreamError(f"{version.config.ref} did not start serving within 120 s")
        self.workers.append(worker)
        self._threads.append(thread)

    def _event(self, kind: str, version: str, detail: str) -> None:
        self.events.append(WatchEvent(kind, version, detail))
        log.warning("%s → registered version %s: %s %s", self.uri, version, kind, detail)


__all__ = ["RegistryWatch", "WatchEvent"]
