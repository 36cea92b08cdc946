"""Roman numeral formatting."""


def to_roman(n: int) -> str:
    """Return ``n`` (1..3999) as an upper-case Roman numeral."""
    raise NotImplementedError
