"""Promote a shadow only if it is better: enough labelled shadow predictions, and a better metric.

:func:`decide` is the rule, on a :class:`~inferstream.serving.compare.Comparison`: the shadow
is promoted when at least ``min_labelled`` requests that both versions answered have a
label, and the shadow's ``metric`` on them is strictly better than the primary's (higher
accuracy, F1, AUC or R²; lower log loss, MAE or RMSE). Every decision says why.
:func:`promote_if_better` compares the shadow with the route's primary, decides, and
writes the promoting route (:func:`inferstream.serving.routes.promote`) only when the rule
says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.evaluation.quality import HIGHER_IS_BETTER, beats, check_metric
from inferstream.schemas.records import Route
from inferstream.serving.compare import Comparison, compare
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import promote, read_routes


@dataclass(frozen=True)
class Decision:
    """Whether the shadow is promoted, and why."""

    promote: bool
    reason: str
    comparison: Comparison
    #: the route written when promoted
    route: Route | None = None


def decide(comparison: Comparison, metric: str, min_labelled: int) -> Decision:
    """The promotion rule (see the module) on a comparison of the primary and the shadow."""
    primary, shadow = f"v{comparison.primary}", f"v{comparison.shadow}"
    quality = comparison.quality
    labelled = quality.labelled if quality is not None else 0
    if labelled < min_labelled:
        return Decision(
            False,
            f"not promoted: {labelled} labelled requests answered by both {primary} and {shadow} "
            f"(of {comparison.shadow_count} shadow predictions), fewer than the {min_labelled} asked for",
            comparison,
        )
    assert quality is not None  # labelled >= min_labelled >= 1
    if metric not in quality.primary or metric not in quality.shadow:
        return Decision(
            False, f"not promoted: {metric} cannot be computed on these {labelled} labels (one class only?)", comparison
        )
    old, new = quality.primary[metric], quality.shadow[metric]
    direction = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    if beats(metric, new, old):
        return Decision(
            True,
            f"promoted: {shadow}'s {metric} {new:.4f} beats {primary}'s {old:.4f} "
            f"on {labelled} labelled requests ({direction} is better)",
            comparison,
        )
    return Decision(
        False,
        f"not promoted: {shadow}'s {metric} {new:.4f} does not beat {primary}'s {old:.4f} "
        f"on {labelled} labelled requests ({direction} is better)",
        comparison,
    )


def primary_of(route: Route | None, model: str) -> str:
    """The one version a route sends traffic to; ConfigError when there is no route or several versions."""
    routed = [v.version for v in route.versions if v.weight > 0] if route is not None else []
    if len(routed) != 1:
        raise ConfigError(
            f"{model}'s route sends traffic to {', '.join('v' + v for v in routed) or 'no version'}: a shadow is "
            f"compared with one primary; route all traffic to one first (`inferstream models promote {model} V`)"
        )
    return routed[0]


def shadow_of(route: Route | None, model: str) -> str:
    """The newest shadow version of a route; ConfigError when it has none."""
    if route is None or not route.shadow:
        raise ConfigError(f"{model}'s route has no shadow version: name the version to promote")
    return route.shadow[-1]


def evaluate(settings: Settings, model: str, shadow: str | None, metric: str, min_labelled: int) -> Decision:
    """Compare ``shadow`` (default: the route's newest shadow) with the route's primary and decide; write nothing."""
    if min_labelled < 1:
        raise ConfigError(f"--min-labelled must be at least 1, not {min_labelled}")
    route = read_routes(settings).get(model)
    primary = primary_of(route, model)
    candidate = shadow or shadow_of(route, model)
    check_metric(metric, ModelRepository(settings.models_dir).get(model, candidate).config.kind)
    if candidate == primary:
        raise ConfigError(f"v{candidate} is {model}'s primary already")
    return decide(compare(settings, model, primary, candidate), metric, min_labelled)


def carry_out(settings: Settings, model: str, decision: Decision) -> Decision:
    """Write the promoting route when ``decision`` says to promote; the decision with that route."""
    if not decision.promote:
        return decision
    return Decision(True, decision.reason, decision.comparison, promote(settings, model, decision.comparison.shadow))


def promote_if_better(settings: Settings, model: str, shadow: str | None, metric: str, min_labelled: int) -> Decision:
    """:func:`evaluate`, then :func:`carry_out`: the shadow is promoted only when it is better."""
    return carry_out(settings, model, evaluate(settings, model, shadow, metric, min_labelled))


__all__ = ["Decision", "carry_out", "decide", "evaluate", "primary_of", "promote_if_better", "shadow_of"]
