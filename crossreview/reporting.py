"""The terminal reporter: progress while a suite runs, then the results table.

A plugin object like pytest's terminalreporter: the CLI registers one
instance; it only implements hooks.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .hookspecs import hookimpl
from .models import Candidate, TaskError, TaskResult, Verdict
from .words import count_phrase, files_phrase

DECISION_STYLE = {"accepted": "green", "rejected": "red", "escalated": "yellow", "error": "magenta"}


def stopped_label(stopped: str) -> str:
    """``stopped by --max-cost $50``: which cap cut a task run short, short enough for a table cell.

    ``stopped`` is a TaskResult's (``budget exhausted: --max-cost $50 for the suite run reached (...)``);
    a message of another shape is shown whole rather than guessed at."""
    head = stopped.split(": ", 1)[-1]
    words = head.split(" ")
    if len(words) >= 2 and words[0].startswith("--"):
        return f"stopped by {words[0]} {words[1]}"
    return f"stopped: {stopped}"


class TerminalReporter:
    """Progress lines on stderr; the table and summary on stdout."""

    def __init__(self, out: Console, err: Console, total: int = 0, quiet: bool = False):
        self.out = out
        self.err = err
        self.quiet = quiet
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def _line(self, task: str, text: str | Text) -> None:
        if self.quiet:
            return
        with self._lock:
            if self.err.is_terminal:
                self.err.print(Text.assemble((f"{task:<18} ", "bold"), text), highlight=False)
            else:  # a log file or a pipe: no styles to render, and no wrapping at 80 columns
                plain = text.plain if isinstance(text, Text) else text
                self.err.file.write(f"{task:<18} {plain}\n")
                self.err.file.flush()

    def resuming(self, run: str, kept: int, todo: int) -> None:
        """A resume's first line: what it keeps and what it runs; its counter goes on from the kept."""
        with self._lock:
            self.total, self.done = kept + todo, kept
        if self.quiet:
            return
        text = f"resuming {run}: {count_phrase(kept, 'task run')} kept (finished or waiting for a human), {todo} to run"
        with self._lock:
            if self.err.is_terminal:
                self.err.print(Text(text, style="dim"), highlight=False)
            else:
                self.err.file.write(text + "\n")
                self.err.file.flush()

    @hookimpl
    def crossreview_task_started(self, task, task_run):
        self._line(task.id, Text(f"started ({task_run})", style="dim"))

    @hookimpl
    def crossreview_candidate_solved(self, task, task_run, candidate: Candidate):
        status = "" if candidate.status == "ok" else f" [{candidate.status}: {candidate.error}]"
        self._line(
            task.id,
            f"{candidate.agent} solved in {candidate.seconds:.1f}s: {files_phrase(len(candidate.files_changed))} "
            f"+{candidate.lines_added} -{candidate.lines_removed}{status}",
        )

    @hookimpl
    def crossreview_candidate_verified(self, task, task_run, candidate: Candidate):
        t = candidate.tests
        if t is None:
            return
        ok = t.all_passed
        counts = f"{t.passed}/{t.total} passed"
        if candidate.tampering:  # what it made pytest report, not what its tests do
            counts = f"{t.passed}/{t.total} reported passed, may be faked"
        self._line(
            task.id,
            Text.assemble(
                f"{candidate.agent} tests ",
                (counts, "green" if ok and not candidate.tampering else "red"),
                f" ({t.seconds:.1f}s)" + (" TIMED OUT" if t.timed_out else ""),
            ),
        )

    @hookimpl
    def crossreview_review_done(self, task, task_run, verdict: Verdict):
        style = {"approve": "green", "reject": "red"}.get(verdict.verdict, "yellow")
        self._line(
            task.id,
            Text.assemble(f"{verdict.reviewer} reviews {verdict.candidate}: ", (verdict.verdict, style),
                          f" ({verdict.confidence:.2f})" + (f" {verdict.error}" if verdict.error else "")),
        )

    @hookimpl
    def crossreview_task_finished(self, result: TaskResult):
        with self._lock:
            self.done += 1
            done = self.done
        extra = f" → winner {result.winner}" if result.winner else ""
        if result.escalation:
            extra += f" → waiting: crossreview show {result.escalation}" if result.decision == "escalated" else ""
        if result.error:
            extra += f": {result.error}"
        elif result.stopped:
            # Decided without the work the cap stopped: the progress line must not read as a clean finish.
            extra += f" ({stopped_label(result.stopped)}, decided without what it stopped)"
        counter = f"[{done}/{self.total}] " if self.total else ""
        self._line(result.task, Text.assemble(counter, (result.decision, DECISION_STYLE.get(result.decision, "")), extra))




def print_errors(console: Console, errors: list[TaskError]) -> None:
    """Broken tasks: one line each, naming the file, the key and the fix."""
    for e in errors:
        console.print(Text.assemble(("broken task ", "bold red"), str(e)), highlight=False)


# The task id is what other commands are typed with: on a narrow terminal (80 columns) Rich would cut it
# to "parse_dura…"; folded onto a second line, every character of it is still there.
_COLUMNS = (("task", {"style": "bold", "overflow": "fold"}), ("decision", {}), ("winner", {}), ("candidates (tests, approvals)", {}),
            ("seconds", {"justify": "right"}), ("tokens", {"justify": "right"}), ("cost", {"justify": "right"}))
TABLE_CHUNK = 200
"""Rows rendered at once: a suite of thousands of tasks prints its table in parts of this many rows."""


def _row(r: TaskResult) -> tuple:
    cells = []
    for c in r.candidates:
        ok = c.tests_total > 0 and c.tests_passed == c.tests_total
        mark = "✓" if ok else "✗"
        counts = f"{c.tests_passed}/{c.tests_total}"
        if c.tampering:
            # Its counts are what the candidate made pytest report (a conftest that forces passes, a
            # canary reported passed): a tick would tell the reader its tests pass when nobody knows.
            mark, counts = "⚠", f"{counts} (may be faked)"
        status = "" if c.status == "ok" else f" {c.status}"
        cells.append(f"{c.agent} {mark} {counts}, {c.approvals}/{c.reviews}{status}")
    tokens, cost = r.tokens, r.cost
    decision = Text(r.decision, style=DECISION_STYLE.get(r.decision, ""))
    if r.escalation and r.decision == "escalated":
        decision.append(f" {r.escalation}", style="dim")
    if r.stopped:
        # On its own line under the decision: "accepted" alone would read as a task run that did all its work.
        decision.append(f"\n{stopped_label(r.stopped)}", style="bold magenta")
    return (r.task, decision, r.winner or "-", "\n".join(cells) or (r.error or "-"),
            f"{r.seconds:.1f}", str(tokens), _fmt_cost(cost))


def results_table(results: list[TaskResult], title: str = "crossreview results",
                  min_widths: list[int] | None = None) -> Table:
    """One row per task run: decision, winner, every candidate's tests and approvals, time and cost."""
    table = Table(title=title, title_justify="left")
    for i, (name, style) in enumerate(_COLUMNS):
        table.add_column(name, min_width=min_widths[i] if min_widths else None, **style)
    for r in results:
        table.add_row(*_row(r))
    return table


def print_results_table(console: Console, results: list[TaskResult], chunk: int = TABLE_CHUNK) -> None:
    """Print ``results_table``; a long one in parts of ``chunk`` rows with the same column widths.

    Rich renders a whole table in memory before writing it; a suite of
    thousands of tasks would make the process's peak memory grow with its
    size at the very end. In parts, it stays flat.
    """
    if len(results) <= chunk:
        console.print(results_table(results))
        return
    widths = [len(name) for name, _ in _COLUMNS]
    for r in results:
        for i, cell in enumerate(_row(r)):
            text = cell.plain if isinstance(cell, Text) else cell
            widths[i] = max(widths[i], max((cell_len(line) for line in text.split("\n")), default=0))
    for start in range(0, len(results), chunk):
        part = results[start:start + chunk]
        title = f"crossreview results ({start + 1}–{start + len(part)} of {len(results)})"
        console.print(results_table(part, title=title, min_widths=widths))


def _sum_cost(costs) -> float | None:
    total = 0.0
    for c in costs:
        if c is None:
            return None
        total += c
    return total


def _fmt_cost(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def summary_line(results: list[TaskResult], errors: list[TaskError], wall: float, wall_of: str = "") -> str:
    """Counts next to what they cost: wall-clock, agent-seconds, tokens, money.

    ``wall_of`` names whose wall-clock it is when that is not the whole run's
    (a resume's own, beside task runs kept from before).
    """
    counts: dict[str, int] = {}
    for r in results:
        counts[r.decision] = counts.get(r.decision, 0) + 1
    parts = [f"{counts.get(k, 0)} {k}" for k in ("accepted", "rejected", "escalated")]
    if counts.get("error"):
        parts.append(f"{counts['error']} error")
    if errors:  # folders, not problems: one folder may have several
        parts.append(f"{len({e.path for e in errors})} broken")
    stopped = [r for r in results if r.stopped]
    if stopped:
        # Counted apart (they are also among the decisions above), so the reader sees the run did not finish its work.
        unstarted = sum(1 for r in stopped if r.decision == "error")
        cut = len(stopped) - unstarted
        what = ", ".join(p for p in (f"{cut} cut short" if cut else "", f"{unstarted} not started" if unstarted else "") if p)
        parts.append(f"{len(stopped)} stopped by a budget cap ({what})")
    agent_seconds = sum(c.seconds for r in results for c in r.candidates)
    tokens = sum(r.tokens for r in results)
    cost = _sum_cost(r.cost for r in results)
    return (
        f"{count_phrase(len(results), 'task run')}: " + ", ".join(parts)
        + f" · wall {wall:.1f}s{f' ({wall_of})' if wall_of else ''} · agent-seconds {agent_seconds:.1f} · tokens {tokens} · cost {_fmt_cost(cost)}"
    )


def result_json(r: TaskResult) -> dict[str, Any]:
    """One task run as `run --json` prints it."""
    return {
        "task": r.task,
        "task_run": r.task_run,
        "decision": r.decision,
        "winner": r.winner,
        "escalation": r.escalation if r.decision == "escalated" or r.escalation else None,
        "reason": r.reason,
        "branch": r.branch,
        "seconds": round(r.seconds, 3),
        "error": r.error,
        "tokens": r.tokens,
        "cost": r.cost,
        "stopped": r.stopped,
        "candidates": [c.model_dump() for c in r.candidates],
    }
