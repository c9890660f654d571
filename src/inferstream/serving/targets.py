"""A label as a model's training or scoring target: a classifier's class index, a regressor's number."""

from __future__ import annotations

import math
from typing import Any

from inferstream.serving.config import ModelConfig


def target_of(config: ModelConfig, value: Any) -> float | int:
    """A label as a classifier's class index or a regressor's number; ValueError with the reason otherwise.

    A class is its name in ``outputs.labels`` or its index there.
    """
    if config.kind == "regressor":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("label is not a finite number")
        return float(value)
    names = config.outputs.labels or []
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, bool | int) and 0 <= int(value) < len(names):
        return int(value)
    raise ValueError(f"label is not one of the classes {names} nor their index")


__all__ = ["target_of"]
