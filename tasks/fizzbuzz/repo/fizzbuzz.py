"""The classic FizzBuzz game."""


def fizzbuzz(n: int) -> str:
    """Return the FizzBuzz word for ``n``."""
    raise NotImplementedError("fizzbuzz is not implemented yet")
