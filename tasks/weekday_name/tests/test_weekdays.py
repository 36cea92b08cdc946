import pytest

from weekdays import weekday_name


@pytest.mark.parametrize(
    "index, name",
    list(enumerate(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])),
)
def test_weekday_name(index, name):
    assert weekday_name(index) == name
