"""The results table: a long one is printed in parts with the same column widths."""

from __future__ import annotations

import io

from rich.console import Console

from crossreview.models import CandidateSummary, TaskResult
from crossreview.reporting import print_results_table


def _results(n: int) -> list[TaskResult]:
    return [
        TaskResult(
            task=f"t{i:04d}" + ("-long-name" if i == n - 1 else ""), task_run=f"r-1/t{i:04d}", run="r-1",
            decision="escalated" if i % 5 == 0 else "accepted", escalation="e-abc123" if i % 5 == 0 else None,
            winner="a", seconds=0.5,
            candidates=[CandidateSummary(agent=a, status="ok", tests_passed=1, tests_total=1, approvals=1, reviews=1,
                                         tokens=0, cost=0.0, seconds=0.3) for a in "ab"],
        )
        for i in range(n)
    ]


def _print(results: list[TaskResult], chunk: int) -> list[str]:
    buf = io.StringIO()
    print_results_table(Console(file=buf, width=160, force_terminal=False), results, chunk=chunk)
    return buf.getvalue().splitlines()


def test_a_short_table_is_one_table():
    lines = _print(_results(5), chunk=10)
    assert lines[0].strip() == "crossreview results"
    assert sum("│ t000" in line for line in lines) == 5
    assert any("t0004-long-name" in line for line in lines)


def test_a_long_table_is_printed_in_parts_with_every_row_and_one_width():
    results = _results(25)
    lines = _print(results, chunk=10)
    titles = [line.strip() for line in lines if line.startswith("crossreview results")]
    assert titles == ["crossreview results (1–10 of 25)", "crossreview results (11–20 of 25)",
                      "crossreview results (21–25 of 25)"]
    for r in results:
        assert sum(f"│ {r.task} " in line for line in lines) == 1, r.task
    # The widest cell (the last part's long task name) sets the width of every part.
    body = {len(line) for line in lines if line.startswith(("│", "┃", "┏", "└"))}
    assert len(body) == 1


def test_progress_to_a_log_file_is_plain_lines_never_wrapped():
    from crossreview.models import Candidate
    from crossreview.reporting import TerminalReporter
    from crossreview.models import Task
    from pathlib import Path

    err = io.StringIO()
    reporter = TerminalReporter(Console(file=io.StringIO()), Console(file=err, width=40, force_terminal=False))
    task = Task(id="fizzbuzz", path=Path("/nonexistent"), instruction="x", repo_path=Path("/nonexistent/repo"))
    reporter.crossreview_task_started(task=task, task_run="r-1/fizzbuzz")
    long = Candidate(agent="a", spec="oracle", status="error", error="x" * 120)
    reporter.crossreview_candidate_solved(task=task, task_run="r-1/fizzbuzz", candidate=long)
    lines = err.getvalue().splitlines()
    assert lines[0] == "fizzbuzz           started (r-1/fizzbuzz)"
    assert len(lines) == 2 and lines[1].startswith("fizzbuzz           a solved in") and lines[1].endswith("x" * 120 + "]")
    assert "\x1b[" not in err.getvalue()


def test_progress_on_a_terminal_keeps_its_styles():
    from crossreview.reporting import TerminalReporter
    from crossreview.models import Task
    from pathlib import Path

    err = io.StringIO()
    reporter = TerminalReporter(Console(file=io.StringIO()), Console(file=err, width=120, force_terminal=True))
    task = Task(id="fizzbuzz", path=Path("/nonexistent"), instruction="x", repo_path=Path("/nonexistent/repo"))
    reporter.crossreview_task_started(task=task, task_run="r-1/fizzbuzz")
    assert "\x1b[" in err.getvalue() and "started (r-1/fizzbuzz)" in err.getvalue()


def test_summary_counts_broken_folders_not_problems():
    from pathlib import Path

    from crossreview.models import TaskError
    from crossreview.reporting import summary_line

    errors = [TaskError(path=Path("/s/twice"), file=Path("/s/twice/task.toml"), field=f, message="unknown key")
              for f in ("[agent] timeout", "[verifier] timeout")]
    errors.append(TaskError(path=Path("/s/other"), file=Path("/s/other/instruction.md"), message="missing"))
    assert "2 broken" in summary_line(_results(1), errors, wall=1.0)
