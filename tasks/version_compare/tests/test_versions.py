import pytest

from versions import compare_versions, newest


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("1.10", "1.9", 1),
        ("1.9", "1.10", -1),
        ("1.2.10", "1.2.3", 1),
        ("10.0", "9.9", 1),
        ("2.0", "10.0", -1),
        ("3.1.4", "3.1.4", 0),
        ("1.2", "1.2.1", -1),
        ("0.0.1", "0.0.2", -1),
    ],
)
def test_compare(a, b, expected):
    assert compare_versions(a, b) == expected


def test_newest():
    assert newest(["1.9", "1.10", "1.2"]) == "1.10"
