import pytest

from roman import to_roman

VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def from_roman(numeral):
    total = 0
    for here, after in zip(numeral, numeral[1:] + " "):
        value = VALUES[here]
        total += -value if VALUES.get(after, 0) > value else value
    return total


def test_round_trip_all():
    seen = set()
    for n in range(1, 4000):
        numeral = to_roman(n)
        assert from_roman(numeral) == n
        assert "IIII" not in numeral and "XXXX" not in numeral and "CCCC" not in numeral
        seen.add(numeral)
    assert len(seen) == 3999


@pytest.mark.parametrize("n, expected", [(499, "CDXCIX"), (1666, "MDCLXVI"), (3888, "MMMDCCCLXXXVIII")])
def test_known_values(n, expected):
    assert to_roman(n) == expected
