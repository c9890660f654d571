"""The chaos benchmark at its smallest: kill -9 of the plain and the exactly-once worker under a steady load.

The same functions as ``benchmarks/chaos.py --quick`` (real ``inferstream serve`` processes,
a producer thread at a fixed rate), a few hundred requests each: nothing sent goes
unanswered, and the exactly-once worker answers nothing twice.
"""

import sys
from pathlib import Path

from inferstream.stack.testing import Broker

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import chaos  # the benchmarks folder is no package: imported by path

TINY = chaos.Plan(
    rate=100, text_rate=1, before_s=2, down_s=1, after_s=3, es_outage_s=0, window=10, drain_max_s=60, stop_s=30
)


def test_kill_9_of_the_worker_loses_nothing_and_exactly_once_duplicates_nothing(
    kafka: Broker, models_dir: Path, tmp_path: Path
) -> None:
    lab = chaos.Lab(TINY, kafka, models_dir, tmp_path)
    outcomes = {o.name: o for o in chaos.run_scenarios(lab, ["worker", "worker_eos"])}
    plain, eos = outcomes["worker"], outcomes["worker_eos"]
    for outcome in (plain, eos):
        assert outcome.sent > 300, outcome.line()
        assert outcome.lost == 0, outcome.line()
        assert outcome.recovery_s < 60, outcome.line()
        assert outcome.exit_codes == [0], outcome.line()
    assert eos.dup == 0, eos.line()
