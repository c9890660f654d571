"""When the supervisor adds and removes copies, from a series of lag samples (no processes, no broker)."""

from typing import Any

import pytest

from inferstream.config import Settings
from inferstream.serving.supervisor import ScalePolicy, Supervisor, threads_per_copy


class _Counting(Supervisor):
    """A supervisor whose copies are counted, not started: only its scaling decisions run."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.copies = 1

    @property
    def running(self) -> int:
        return self.copies

    def _start_copy(self) -> None:
        self.copies += 1

    def _stop_copy(self) -> None:
        self.copies -= 1

    def partitions(self) -> int:
        return 4


def _replay(lags: list[int], **policy: Any) -> list[int]:
    """Copies after each lag sample, fed to the supervisor as its run loop does."""
    supervisor = _Counting(
        Settings.load(),
        command=["serve"],
        topics=["requests"],
        group_id="g",
        policy=ScalePolicy(scale_up_lag=100, scale_down_lag=10, drained_samples=2, **policy),
    )
    history: list[int] = []
    copies = []
    for lag in lags:
        history = [*history[-9:], lag]
        supervisor._scale(history)
        copies.append(supervisor.running)
    return copies


def test_a_high_lag_that_keeps_growing_adds_a_copy_every_second_sample() -> None:
    # Each change waits for two samples: the copy just added gets a sample to show its effect.
    assert _replay([500, 600, 700, 800, 900, 1000]) == [1, 2, 2, 3, 3, 4]


def test_a_high_lag_that_shrinks_after_a_copy_was_added_adds_no_more() -> None:
    assert _replay([500, 600, 550, 450, 350, 250]) == [1, 2, 2, 2, 2, 2]


def test_never_above_max_replicas_and_back_to_one_once_drained() -> None:
    copies = _replay([500, 600, 700, 800, 900, 1000, 5, 0, 0, 0, 0, 0], max_replicas=3)
    assert max(copies) == 3
    assert copies[-1] == 1


@pytest.mark.parametrize("lags", [[50, 60, 70, 80], [100, 100, 100]])
def test_a_lag_at_or_under_the_threshold_adds_nothing(lags: list[int]) -> None:
    assert set(_replay(lags)) == {1}


def test_copies_share_the_cpus_unless_the_model_sets_its_threads() -> None:
    assert threads_per_copy(0, 4, cpus=16) == 4
    assert threads_per_copy(0, 3, cpus=2) == 1  # never below one
    assert threads_per_copy(0, 1, cpus=8) == 8
    assert threads_per_copy(2, 4, cpus=16) is None  # the model's own setting stands
    assert (threads_per_copy(0, 2) or 0) >= 1  # this machine's CPUs
