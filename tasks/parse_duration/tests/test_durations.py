import pytest

from durations import parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("45s", 45),
        ("45", 45),
        ("10m", 600),
        ("1h", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("1H 30M", 5400),
        ("  15m  ", 900),
        ("0s", 0),
    ],
)
def test_parses(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "   ", "5x", "h", "1.5h", "30m1h", "1m1m", "abc"])
def test_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)
