"""Runner flags (--runner dask, --dask-address, --dask-workers; other runners' pass through), keyed parts, checksums."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferstream.errors import ConfigError
from inferstream.jobs._dask import DaskRunner, DaskSpec, parse_dask_flags
from inferstream.jobs._pipeline import WriteParts, checksum, join_parts, make_pipeline, parts_dir


def test_runner_dask_alone_starts_a_local_cluster_of_two_workers() -> None:
    assert parse_dask_flags(["--runner", "dask"]) == (DaskSpec(address=None, workers=2), [])
    assert parse_dask_flags(["--runner=DaskRunner", "--dask-workers=3", "--job_name", "x"]) == (
        DaskSpec(workers=3),
        ["--job_name", "x"],
    )


def test_dask_address_names_a_running_scheduler() -> None:
    spec, rest = parse_dask_flags(["--dask-address", "10.0.0.5:8786", "--runner", "dask", "--dask_npartitions=8"])
    assert spec == DaskSpec(address="10.0.0.5:8786")
    assert rest == ["--dask_npartitions=8"]  # Beam's own Dask options pass through
    assert parse_dask_flags(["--runner", "dask", "--dask-address=tcp://h:1"])[0] == DaskSpec(address="tcp://h:1")


def test_other_runners_flags_pass_through_unchanged() -> None:
    flink = ["--runner", "FlinkRunner", "--flink_master=host:8081", "--parallelism", "4"]
    assert parse_dask_flags(flink) == (None, ["--runner=FlinkRunner", "--flink_master=host:8081", "--parallelism", "4"])
    dataflow = ["--runner=DataflowRunner", "--project", "p", "--region", "r", "--temp_location", "gs://b/t"]
    assert parse_dask_flags(dataflow) == (None, dataflow)
    assert parse_dask_flags([]) == (None, [])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dask-address", "h:8786"], "go with --runner dask"),
        (["--runner", "FlinkRunner", "--dask-workers", "2"], "go with --runner dask"),
        (["--runner", "dask", "--dask-workers", "0"], "1 or more"),
        (["--runner", "dask", "--dask-workers", "two"], "1 or more"),
        (["--runner", "dask", "--dask-address", "h:1", "--dask-workers", "2"], "leave it out"),
        (["--runner", "dask", "--dask-address", "scheduler"], "HOST:PORT"),
        (["--runner", "dask", "--dask-address"], "needs a value"),
        (["--runner"], "needs a value"),
    ],
)
def test_bad_dask_flags_say_what_to_do(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dask_flags(flags)


def test_make_pipeline_picks_the_dask_runner() -> None:
    pipeline = make_pipeline(["--runner", "dask", "--dask-address", "127.0.0.1:8786", "--job_name", "n"])
    assert isinstance(pipeline.runner, DaskRunner)
    assert pipeline.runner.spec == DaskSpec(address="127.0.0.1:8786")
    assert pipeline.options.get_all_options()["job_name"] == "n"


def test_a_part_written_again_overwrites_and_parts_join_in_key_order(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    schema = pa.schema([("partition", pa.int32()), ("offset", pa.int64())])
    write = WriteParts(out, schema, ["partition", "offset"])
    second = pa.table({"partition": pa.array([1, 1], pa.int32()), "offset": pa.array([0, 1], pa.int64())})
    first = pa.table({"partition": pa.array([0, 0], pa.int32()), "offset": pa.array([10, 11], pa.int64())})
    for table in (second, first, second):  # the second element written twice, as by a retried task
        list(write.process(table))
    assert list(write.process(first.slice(0, 0))) == []
    assert len(list(parts_dir(out).glob("*.parquet"))) == 2

    assert join_parts(out, schema) == 4
    assert pq.read_table(out).column("offset").to_pylist() == [10, 11, 0, 1]
    assert not parts_dir(out).exists()
    assert join_parts(tmp_path / "empty.parquet", schema) == 0  # no parts: an empty file of the schema
    assert pq.read_table(tmp_path / "empty.parquet").schema == schema


def test_checksum_ignores_order_and_catches_a_duplicate_or_a_change() -> None:
    table = pa.table({"k": [1, 2, 3], "v": ["a", "b", "c"]})
    whole = checksum([table], ["k", "v"])
    assert whole.startswith("3:")
    assert checksum([table.slice(2), table.slice(0, 2)], ["k", "v"]) == whole
    assert checksum([table, table.slice(0, 1)], ["k", "v"]) != whole
    assert checksum([pa.table({"k": [1, 2, 3], "v": ["a", "b", "x"]})], ["k", "v"]) != whole


def test_the_cli_hands_the_dask_flags_to_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import inferstream.cli.job  # noqa: F401 (registers `job`)
    from inferstream.cli._app import app
    from inferstream.jobs import topics

    seen: dict[str, object] = {}

    def export(settings: object, topic: str, out: Path, **options: object) -> None:
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr(topics, "export_topic", export)
    flags = ["--runner", "dask", "--dask-workers", "3", "--dask_npartitions=4"]
    done = CliRunner().invoke(app, ["job", "export", "predictions", "--out", str(tmp_path / "p.parquet"), *flags])
    assert done.exit_code == 0, done.output
    assert seen["flags"] == flags
    assert parse_dask_flags(flags) == (DaskSpec(workers=3), ["--dask_npartitions=4"])
