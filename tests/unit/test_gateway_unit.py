"""The gateway's exposure check: which addresses count as loopback, and when it refuses to start."""

import pytest

from inferstream.config import Settings
from inferstream.errors import ConfigError
from inferstream.gateway import check_exposure, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.20", "gateway.internal", "128.0.0.1"])
def test_addresses_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_no_token_beyond_loopback_is_refused_unless_insecure_is_allowed() -> None:
    open_settings = Settings.load()
    assert check_exposure(open_settings, "127.0.0.1") is False
    with pytest.raises(ConfigError) as refused:
        check_exposure(open_settings, "0.0.0.0")
    message = str(refused.value)
    assert "INFERSTREAM_GATEWAY__TOKEN" in message
    assert "gateway.token" in message
    assert "--insecure-no-token" in message
    assert "gateway.allow_insecure" in message
    allowed = Settings.load(gateway={"allow_insecure": True})
    assert check_exposure(allowed, "0.0.0.0") is True
    with_token = Settings.load(gateway={"token": "t0ken-value"})
    assert check_exposure(with_token, "0.0.0.0") is False
    assert "t0ken-value" not in repr(with_token)
    assert "t0ken-value" not in repr(with_token.gateway)
