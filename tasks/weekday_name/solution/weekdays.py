"""Names of the days of the week."""

_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def weekday_name(index: int) -> str:
    """Return the English name of weekday ``index`` as given by ``date.weekday()``."""
    return _NAMES[index]
