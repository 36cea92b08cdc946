"""The escalation packet: what a human needs to decide in a minute, and how it is shown.

Built from the round's candidates, verdicts and decision. Holdout results are
never put in it: they exist to score decisions, not to make them.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from .models import Candidate, Decision, Task, Verdict
from .words import files_phrase

_MAX_DIFF_CHARS = 20_000


def build_packet(task: Task, candidates: list[Candidate], verdicts: list[Verdict], decision: Decision,
                 rnd: int = 0, guidance: list[str] | None = None) -> dict[str, Any]:
    """A JSON-able packet; diffs are cut at 20,000 characters each (the ledger keeps them whole).

    ``rnd`` and ``guidance``: after a human's ``--guide``, the round these
    candidates come from and every guidance given so far (the agents had it).
    """
    cands = []
    for c in candidates:
        failing = [o.name for o in (c.tests.outcomes if c.tests else []) if o.outcome in ("failed", "error")]
        diff = c.diff if len(c.diff) <= _MAX_DIFF_CHARS else c.diff[:_MAX_DIFF_CHARS] + "\n... (cut; full diff in the ledger)\n"
        cands.append(
            {
                "agent": c.agent,
                "spec": c.spec,
                "status": c.status,
                "error": c.error,
                "tests_passed": c.tests.passed if c.tests else 0,
                "tests_total": c.tests.total if c.tests else 0,
                "failing_tests": failing[:20],
                "files": c.files_changed,
                "lines_added": c.lines_added,
                "lines_removed": c.lines_removed,
                "seconds": round(c.seconds, 2),
                "tampering": c.tampering,
                "test_files": c.test_files,
                "diff": diff,
            }
        )
    return {
        "task": task.id,
        "instruction": task.instruction[:4000],
        "round": rnd,
        "guidance": list(guidance or []),
        "reason": decision.reason,
        "disagreements": decision.disagreements,
        "tampering_alone": decision.tampering_alone,
        "cause": decision.cause,
        "policy": decision.policy,
        "candidates": cands,
        "verdicts": [
            {
                "reviewer": v.reviewer,
                "candidate": v.candidate,
                "verdict": v.verdict,
                "confidence": v.confidence,
                "concerns": v.concerns,
                "error": v.error,
            }
            for v in verdicts
        ],
    }


def names_phrase(names: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def faking_phrase(names: list[str]) -> str:
    """"pr may fake its test results", "h and i may fake their test results"."""
    return f"{names_phrase(names)} may fake {'its' if len(names) == 1 else 'their'} test results"


def escalation_headline(tampering_alone: list[str], flagged: list[str], cause: str = "") -> str:
    """Why an escalation needs a human, in one line, for every face that words it (gate comment, packet).

    ``tampering_alone``: Decision.tampering_alone, the candidates whose flag alone escalated it;
    ``flagged``: every candidate the decision was about that may fake its test results. Both are
    names as the face wants them shown. ``cause``: Decision.cause, the policy's own reason when it
    is not a disagreement (a score below the calibrated threshold). "The reviewers disagree" is said
    only when they do: a candidate whose only reviewer approved it, escalated because it adds a
    conftest.py or because its score is below a threshold, is not a disagreement, and a human
    reading that would look for one that is not there. Beside a flag, ``cause`` holds every other
    cause (crossreview.policy.explain_flagged): "agreement score below the calibrated threshold, and
    h1 may fake its test results", not "the reviewers disagree, and ..." when they all approve.
    """
    if tampering_alone:
        return f"{faking_phrase(tampering_alone)}: a human must look"
    why = cause or "the reviewers disagree"
    if flagged:
        return f"{why}, and {faking_phrase(flagged)}: a human decides"
    return f"{why}: a human decides"


def reasons_heading(tampering_alone: list[str], cause: str = "") -> str:
    """The heading over an escalation's list of reasons (Decision.disagreements); ``cause`` as for escalation_headline."""
    return "Why a human must look" if tampering_alone or cause else "Where they disagree"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(value: Any) -> Any:
    """``value`` with every terminal control character shown as ``\\xNN`` (strings inside lists and dicts too).

    A packet is untrusted text (diffs, reviewers' concerns, file names): raw,
    an escape sequence in it could clear the screen, move the cursor and
    repaint what the human reads — "all checks passed" over a failing run.
    Newlines and tabs stay.
    """
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    if isinstance(value, list):
        return [visible(v) for v in value]
    if isinstance(value, dict):
        return {k: visible(v) for k, v in value.items()}
    return value


_MAX_ERROR_SHOWN = 400


def render_packet(console: Console, esc: dict[str, Any], with_diffs: bool = True) -> None:
    """Print an escalation (a ledger row with its packet) for a human."""
    esc = visible(esc)
    p = esc["packet"]
    head = Text.assemble(
        ("Escalation ", "bold"), (esc["id"], "bold magenta"), "  task ", (p["task"], "bold"),
        f"  run {esc['run']}  policy {p.get('policy', '?')}",
    )
    console.print(Panel(Text(p["reason"]), title=head, title_align="left", border_style="magenta"))
    if p.get("guidance"):  # a later round: say what the agents were told since the first
        console.print(Text(f"Round {p.get('round', 0) + 1}: the agents were given this guidance", style="bold"))
        for g in p["guidance"]:
            console.print(Text(f"  → {g}"))
        console.print()
    console.print(Text(reasons_heading(p.get("tampering_alone") or [], p.get("cause") or ""), style="bold"))  # older packets: none
    for line in p["disagreements"] or ["(no specific disagreement recorded)"]:
        console.print(f"  • {line}", markup=False, highlight=False)  # holds file names a candidate chose
    console.print()
    tampering = [(c["agent"], t) for c in p["candidates"] for t in c.get("tampering") or []]
    if tampering:
        console.print(Text("May fake its test results or hide its change (never accepted automatically)",
                           style="bold red"))
        for agent, why in tampering:
            console.print(Text(f"  ! {agent}: {why}", style="red"))
        console.print()

    judging = [(c["agent"], f) for c in p["candidates"] for f in c.get("test_files") or []]
    if judging:
        # Even when nothing above is flagged: a change to the tests that judge it is worth the human's look.
        console.print(Text("Tests and test configuration it changes", style="bold"))
        for agent, f in judging:
            console.print(f"  {agent}: {f}", markup=False, highlight=False)  # file names a candidate chose
        console.print()

    table = Table(title="Candidates", title_justify="left", show_lines=False)
    for col in ("agent", "tests", "change", "seconds", "verdicts on it"):
        table.add_column(col)
    for c in p["candidates"]:
        vs = [v for v in p["verdicts"] if v["candidate"] == c["agent"]]
        verdicts = ", ".join(f"{v['reviewer']}: {v['verdict']}" for v in vs) or "-"
        tests = f"{c['tests_passed']}/{c['tests_total']}"
        style = "green" if c["tests_total"] and c["tests_passed"] == c["tests_total"] else "red"
        if c["status"] != "ok":
            tests, style = c["status"], "red"
        elif c.get("tampering"):
            tests, style = f"{tests} (tampering)", "red"
        table.add_row(
            c["agent"],
            Text(tests, style=style),
            f"{files_phrase(len(c['files']))} +{c['lines_added']} -{c['lines_removed']}",
            f"{c['seconds']:.1f}",
            verdicts,
        )
    console.print(table)
    for c in p["candidates"]:
        # The table says only "error" or "timeout": the human deciding whether that agent deserves
        # another round (--guide) needs to know why (a missing CLI, a plugin no longer installed).
        if c["status"] != "ok" and c.get("error"):
            why = " ".join(str(c["error"]).split())
            why = why if len(why) <= _MAX_ERROR_SHOWN else why[:_MAX_ERROR_SHOWN] + f" … (crossreview show {esc['id']} --json)"
            console.print(f"  {c['agent']} {c['status']}: {why}", markup=False, highlight=False)

    console.print(Text("Verdicts", style="bold"))
    for v in p["verdicts"]:
        style = {"approve": "green", "reject": "red"}.get(v["verdict"], "yellow")
        console.print(
            Text.assemble(f"  {v['reviewer']} → {v['candidate']}: ", (v["verdict"], style), f" ({v['confidence']:.2f})")
        )
        for concern in v["concerns"][:5]:  # reviewers' text (and diff snippets in it): never markup
            console.print(f"      - {concern}", markup=False, highlight=False)
        if len(v["concerns"]) > 5:
            # The hint must run as printed: `show --json` without the id is a usage error.
            console.print(f"      ... and {len(v['concerns']) - 5} more concerns "
                          f"(crossreview show {esc['id']} --json)", markup=False, highlight=False)
        if v.get("error"):
            console.print(f"      ! {v['error']}", markup=False, highlight=False)
    for c in p["candidates"]:
        failing = c["failing_tests"]
        if failing:
            total_failing = c["tests_total"] - c["tests_passed"]
            more = total_failing - min(len(failing), 8)
            console.print(f"  {c['agent']} fails: " + ", ".join(failing[:8]) + (f" and {more} more" if more > 0 else ""))
    if with_diffs:
        for c in p["candidates"]:
            body = Syntax(c["diff"], "diff", word_wrap=True) if c["diff"].strip() else Text("(no change)")
            console.print(Panel(Group(body), title=f"diff of {c['agent']}", title_align="left"))
    if esc.get("decided"):
        return
    names = " | ".join(c["agent"] for c in p["candidates"])
    console.print(
        f"Decide: crossreview decide {esc['id']} --pick {{{names}}} | --reject | --guide \"what to do differently\""
    )
