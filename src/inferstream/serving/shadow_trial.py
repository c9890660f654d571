"""A shadow on trial: serve a new version as a shadow here until its labels decide.

``models retrain --promote-if-better METRIC`` runs this: a worker of the new version
reads the primary's requests in its own consumer group (from the oldest request kept, as
every shadow does) and writes only to ``predictions-shadow``. Every ``poll_s`` the
shadow is compared with the primary on the labelled requests both answered
(:func:`inferstream.serving.promotion.evaluate`); once ``min_labelled`` of them have
labels the rule decides and, when the shadow is better, the route promotes it. If the
labels do not come within ``wait_s``, nothing is promoted and the decision says how many
came. The worker stops either way; the route keeps the version as a shadow unless it
was promoted (``inferstream serve --model NAME:V --shadow`` serves it again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from inferstream.config import Settings
from inferstream.errors import ModelError
from inferstream.serving.promotion import Decision, carry_out, evaluate
from inferstream.serving.repository import ModelVersion
from inferstream.serving.worker import InferenceWorker, WorkerOptions


def shadow_trial(
    settings: Settings,
    version: ModelVersion,
    *,
    primary: str,
    metric: str,
    min_labelled: int,
    wait_s: float,
    poll_s: float = 10.0,
    on_poll: Callable[[Decision], None] | None = None,
) -> Decision:
    """Serve ``version`` as a shadow of ``primary`` until the rule can decide or ``wait_s`` passes (see the module)."""
    name, candidate = version.config.name, version.config.version
    worker = InferenceWorker(settings, version, options=WorkerOptions(shadow_of=(primary,)))
    thread = threading.Thread(target=worker.run, name=f"shadow-{version.config.ref}", daemon=True)
    thread.start()
    deadline = time.monotonic() + wait_s
    try:
        if not worker.ready.wait(120):
            raise ModelError(f"the shadow {version.config.ref} did not start within 120 s: {worker.failure}")
        while True:
            if worker.failure is not None:
                raise ModelError(f"the shadow {version.config.ref} stopped: {worker.failure}")
            decision = evaluate(settings, name, candidate, metric, min_labelled)
            if on_poll is not None:
                on_poll(decision)
            quality = decision.comparison.quality
            enough = quality is not None and quality.labelled >= min_labelled
            if enough or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    finally:
        worker.stop()
        thread.join(60)
    if not enough:
        decision = Decision(False, f"{decision.reason}, after waiting {wait_s:g} s", decision.comparison)
    return carry_out(settings, name, decision)


__all__ = ["shadow_trial"]
