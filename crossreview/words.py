"""How crossreview words counts, the same in every face (terminal, report, PR comment, pytest)."""

from __future__ import annotations


def count_phrase(n: int, noun: str, nouns: str | None = None) -> str:
    """"1 task run", "3 task runs", "0 agents": ``n`` with its noun, singular for exactly one.

    ``nouns`` is the plural where adding an "s" would be wrong.
    """
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def files_phrase(n: int) -> str:
    """"1 file", "3 files": how every face of crossreview counts a change's files."""
    return count_phrase(n, "file")
