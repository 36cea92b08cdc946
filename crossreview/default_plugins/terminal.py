"""The terminal escalation channel: in an interactive `run`, ask the human on the spot."""

from __future__ import annotations

import threading

import click
from rich.console import Console

from ..hookspecs import hookimpl
from ..models import HumanDecision, utcnow
from ..packet import render_packet

_prompt_lock = threading.Lock()  # with --jobs > 1, one question at a time


def ask(escalation, console: Console | None = None) -> HumanDecision | None:
    """Show the packet and read pick / reject / guide / skip from the terminal."""
    console = console or Console(stderr=True)
    names = [c["agent"] for c in escalation.packet["candidates"]]
    with _prompt_lock:
        shown = utcnow()
        render_packet(console, escalation.model_dump(mode="json"), with_diffs=True)
        choices = [f"pick {n}" for n in names] + ["reject", "guide", "skip"]
        console.print("Answer: " + " | ".join(choices) + "   (skip leaves it in the inbox)")
        while True:
            answer = click.prompt("decision", default="skip", err=True).strip()
            word, _, rest = answer.partition(" ")
            if word == "skip":
                return None
            if word == "reject":
                return HumanDecision(action="reject", by=_user(), shown_at=shown)
            if word == "pick" and rest.strip() in names:
                return HumanDecision(action="pick", pick=rest.strip(), by=_user(), shown_at=shown)
            if word == "guide":
                text = rest.strip() or click.prompt("guidance for the agents", err=True)
                return HumanDecision(action="guide", guide=text, by=_user(), shown_at=shown)
            console.print(f"[red]not understood:[/red] {answer!r}; write one of: " + ", ".join(choices))


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


@hookimpl(trylast=True)
def crossreview_ask_human(escalation, interactive):
    if not interactive:
        return None
    return ask(escalation)
