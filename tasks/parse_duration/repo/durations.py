"""Parsing of human-readable durations such as ``1h30m``."""


def parse_duration(text: str) -> int:
    """Return the number of seconds described by ``text``."""
    raise NotImplementedError("parse_duration is not implemented yet")
