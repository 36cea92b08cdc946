"""How crossreview words counts and times, the same in every face (terminal, report, PR comment, pytest)."""

from __future__ import annotations

from datetime import datetime, timezone


def count_phrase(n: int, noun: str, nouns: str | None = None) -> str:
    """"1 task run", "3 task runs", "0 agents": ``n`` with its noun, singular for exactly one.

    ``nouns`` is the plural where adding an "s" would be wrong.
    """
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


def files_phrase(n: int) -> str:
    """"1 file", "3 files": how every face of crossreview counts a change's files."""
    return count_phrase(n, "file")


def when(moment: str | datetime | None) -> str:
    """A ledger time as a human reads it: "2026-11-25 02:31:44 UTC".

    The ledger keeps ISO 8601 with microseconds and an offset (and JSON output
    passes that on); a person deciding whether a decision is stale needs the
    second, not the microsecond, and a zone spelled out. Naive times are the
    ledger's UTC. Text that is not a time comes back as it was, so a message
    never fails for the sake of its timestamp.
    """
    if moment is None:
        return "?"
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
