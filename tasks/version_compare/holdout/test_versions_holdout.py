import pytest

from versions import compare_versions, newest


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("1.0", "1.0.0", 0),
        ("1.0.0", "1", 0),
        ("2", "2.0.0.0", 0),
        ("1.0.1", "1", 1),
        ("1", "1.0.1", -1),
    ],
)
def test_missing_components_are_zero(a, b, expected):
    assert compare_versions(a, b) == expected


def test_antisymmetric():
    versions = ["0.1", "0.10", "1", "1.0.0", "1.0.1", "1.1", "10"]
    for a in versions:
        for b in versions:
            assert compare_versions(a, b) == -compare_versions(b, a)


def test_newest_with_equal_spellings():
    assert compare_versions(newest(["1.0", "0.9.9"]), "1.0.0") == 0
