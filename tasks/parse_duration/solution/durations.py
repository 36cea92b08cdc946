"""Parsing of human-readable durations such as ``1h30m``."""

import re

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_ORDER = "dhms"
_PART = re.compile(r"\s*(\d+)([a-z])")


def parse_duration(text: str) -> int:
    """Return the number of seconds described by ``text``."""
    body = text.strip().lower()
    if not body:
        raise ValueError("empty duration")
    if body.isdigit():
        return int(body)
    total, pos, last = 0, 0, -1
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            raise ValueError(f"cannot parse duration {text!r}")
        number, unit = match.groups()
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"unit {unit!r} repeated or out of order in {text!r}")
        last = rank
        total += int(number) * _UNITS[unit]
        pos = match.end()
    return total
