from datetime import UTC, datetime

from typer.testing import CliRunner

from inferstream.cli import app
from inferstream.connectors.kafka.groups import ResetTarget


def test_reset_targets_read_as_the_options_that_make_them() -> None:
    assert str(ResetTarget.to_offset(42)) == "offset 42"
    assert str(ResetTarget.shift_by(-3)) == "shift by -3"
    assert str(ResetTarget.to_earliest()) == "earliest"
    moment = ResetTarget.to_datetime(datetime(2025, 1, 1))
    assert moment.time == datetime(2025, 1, 1, tzinfo=UTC)  # naive means UTC
    assert str(moment) == "first record at or after 2025-01-01T00:00:00+00:00"


def test_reset_wants_exactly_one_target_and_a_readable_time() -> None:
    runner = CliRunner()
    env = {"INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # never contacted: refused before
    none = runner.invoke(app, ["groups", "reset", "g", "--topic", "t"], env=env)
    assert none.exit_code == 2
    assert "choose one of --to-offset" in none.output
    two = runner.invoke(app, ["groups", "reset", "g", "-t", "t", "--to-latest", "--shift-by", "-2"], env=env)
    assert two.exit_code == 2
    assert "choose one of" in two.output
    bad_time = runner.invoke(app, ["groups", "reset", "g", "-t", "t", "--to-datetime", "yesterday"], env=env)
    assert bad_time.exit_code == 2
    assert "ISO 8601" in bad_time.output
