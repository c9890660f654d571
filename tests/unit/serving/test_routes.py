"""Routing by request id against weights: stable per id, shares as the weights say."""

import uuid
from collections import Counter
from pathlib import Path

import pytest

from inferstream.config import Settings
from inferstream.errors import ConfigError, ModelError
from inferstream.schemas import Route
from inferstream.schemas.records import RouteVersion
from inferstream.serving.repository import ModelRepository
from inferstream.serving.routes import RouteTable, parse_weights, pick_version, resolve_model


def _route(**weights: float) -> Route:
    return Route(model="m", versions=[RouteVersion(version=v, weight=w) for v, w in weights.items()])


@pytest.mark.parametrize("weights", [{"1": 90, "2": 10}, {"1": 50, "2": 30, "3": 20}, {"1": 1, "2": 1}])
def test_weights_are_honoured_over_ten_thousand_requests(weights: dict[str, float]) -> None:
    route = _route(**weights)
    ids = [uuid.uuid4().hex for _ in range(10_000)]
    counts = Counter(pick_version(route, request_id) for request_id in ids)
    total = sum(weights.values())
    for version, weight in weights.items():
        # 10k draws: a binomial's standard deviation is at most 50; 3 % is > 6 of them.
        assert abs(counts[version] / 10_000 - weight / total) < 0.03, counts


def test_a_request_id_always_lands_on_the_same_version() -> None:
    route = _route(**{"1": 50, "2": 50})
    ids = [f"r{i}" for i in range(1000)]
    first = [pick_version(route, i) for i in ids]
    assert first == [pick_version(route, i) for i in ids]
    assert set(first) == {"1", "2"}


def test_a_version_with_no_weight_gets_nothing() -> None:
    route = _route(**{"1": 0, "2": 100})
    assert {pick_version(route, f"r{i}") for i in range(1000)} == {"2"}


def test_moving_weight_moves_only_the_ids_it_must() -> None:
    # Shifting 10 % from v1 to v2 moves about 10 % of the ids, not a reshuffle of all.
    before, after = _route(**{"1": 90, "2": 10}), _route(**{"1": 80, "2": 20})
    ids = [f"r{i}" for i in range(10_000)]
    moved = sum(pick_version(before, i) != pick_version(after, i) for i in ids)
    assert 700 < moved < 1300


def test_parse_weights() -> None:
    assert parse_weights("v1=90,v2=10") == {"1": 90.0, "2": 10.0}
    assert parse_weights("1=1, 2=3") == {"1": 1.0, "2": 3.0}
    assert parse_weights("v3") == {"3": 100.0}
    for bad in ("", "v1=x", "v1=-1", "v1=0"):
        with pytest.raises(ConfigError):
            parse_weights(bad)


def _repository(root: Path, **versions: list[str]) -> ModelRepository:
    for name, numbers in versions.items():
        for number in numbers:
            (root / name / number).mkdir(parents=True)
            (root / name / number / "model.toml").write_text("")  # found by its name; not read here
    return ModelRepository(root)


def test_a_bare_name_goes_by_its_route_else_to_the_highest_version(tmp_path: Path) -> None:
    repository = _repository(tmp_path, m=["1", "2", "10"], other=["1"])
    routes = RouteTable(Settings.load())  # never started: routes put by hand
    assert resolve_model("m", "r1", routes=routes, repository=repository) == ("m", "10")  # 10 > 2: numbers
    assert resolve_model("m:1", "r1", routes=routes, repository=repository) == ("m", "1")
    routes.put(_route(**{"2": 100}))  # a route for "m"
    assert resolve_model("m", "r1", routes=routes, repository=repository) == ("m", "2")
    assert resolve_model("m:10", "r1", routes=routes, repository=repository) == ("m", "10")
    with pytest.raises(ModelError, match="no route on the control topic and no version") as missing:
        resolve_model("absent", "r1", routes=routes, repository=repository)
    assert "models there: m, other" in str(missing.value)
