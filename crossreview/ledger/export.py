"""`crossreview export`: one row per task run, as JSON lines or CSV, for pandas.

Columns (JSON lines keep types; CSV writes empty cells for null, and tags as a
JSON array, ``["easy", "parse"]``, so any tag text reads back as it was):

    run, suite, task_run, task, tags, status, outcome, decided_by, winner, rounds,
    started, finished, seconds, escalated, escalations, human_minutes,
    agreement, agreement_pick, agents, agents_used, agents_configured, candidates_passing_tests,
    solve_tokens, review_tokens, tokens, cost, cost_known, cost_unknown_items,
    calls, agent_seconds, busy_seconds, wall_seconds, holdout,
    escaped_defect, wrong_rejection, needless_escalation, human_error, test_files

``outcome`` is accepted / rejected / escalated (waiting) / error / running;
``cost`` is null when any part is unknown (``cost_known`` is the known part);
the four quality columns are true/false where the figure applies (the task
has holdout results and the case matches: see the README's "The agreement score"), else null.
``test_files`` maps each candidate of the last round whose change touches test or pytest-configuration
files to them (``{"pr": ["tests/test_new.py (new)"]}``; ``{}`` when none does), a JSON object in CSV.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from typing import Any, TextIO

from . import figures as F

COLUMNS = (
    "run", "suite", "task_run", "task", "tags", "status", "outcome", "decided_by", "winner", "rounds",
    "started", "finished", "seconds", "escalated", "escalations", "human_minutes",
    "agreement", "agreement_pick", "agents", "agents_used", "agents_configured", "candidates_passing_tests",
    "solve_tokens", "review_tokens", "tokens", "cost", "cost_known", "cost_unknown_items",
    "calls", "agent_seconds", "busy_seconds", "wall_seconds", "holdout",
    "escaped_defect", "wrong_rejection", "needless_escalation", "human_error", "test_files",
)


def _flag(ids: set[str], scored: set[str], key: str) -> bool | None:
    return (key in ids) if key in scored else None


def _test_files(candidates: list[dict]) -> dict[str, list[str]]:
    """{agent: its test_files} for the candidates that touch any (the column holds a JSON list)."""
    out = {}
    for c in candidates:
        try:
            files = json.loads(c.get("test_files") or "[]")
        except (TypeError, ValueError):
            files = []
        if files:
            out[c["agent"]] = files
    return out


def task_run_rows(ledger, since: datetime | None = None, suite: str | None = None) -> list[dict[str, Any]]:
    """Every task run in scope, oldest first, as flat dicts with the COLUMNS."""
    d = F.load(ledger, since=since, suite=suite)
    q = {name: (set(h), set(s)) for name, (h, s) in F.quality_sets(d).items()}
    rows = []
    for t in d.task_runs:
        solve, review = F.Usage(), F.Usage()
        if t.costed:
            for c in t.candidates:
                solve.add(c)
            for v in t.verdicts:
                review.add(v)
        money = F.Money()
        money += solve.money
        money += review.money
        agent_spans = F._spans(t.events, F.AGENT_NODES)
        human = [m for e in t.escalations if e["decided"] and (m := F._minutes(e["first_shown"], e["decided"])) is not None]
        esc_ids = [e["id"] for e in t.escalations]
        herr_hit, herr_scored = q["human_errors"]
        human_error = None
        if any(e in herr_scored for e in esc_ids):
            human_error = any(e in herr_hit for e in esc_ids)
        final = t.round_candidates(t.last_round) if not t.pending else t.candidates
        rows.append({
            "run": t.row["run"],
            "suite": t.run.get("suite"),
            "task_run": t.id,
            "task": t.row["task"],
            "tags": t.tags,
            "status": t.status,
            "outcome": t.outcome,
            "decided_by": t.decided_by,
            "winner": t.row["winner"],
            "rounds": t.row["rounds"],
            "started": t.row["started"],
            "finished": t.row["finished"],
            "seconds": t.row["seconds"],
            "escalated": t.escalated,
            "escalations": len(t.escalations),
            # Decided unseen or still waiting: nobody timed a human, so the minutes are unknown, not 0
            # (as `stats` counts them).
            "human_minutes": sum(human) if human else None,
            "agreement": t.row.get("agreement"),
            "agreement_pick": t.row.get("agreement_pick"),
            "agents": len({c["agent"] for c in t.candidates}),
            "agents_used": t.row.get("agents_used"),
            "agents_configured": t.row.get("agents_configured"),
            "candidates_passing_tests": sum(1 for c in final if F.tests_pass(c)),
            "solve_tokens": solve.tokens if t.costed else None,
            "review_tokens": review.tokens if t.costed else None,
            "tokens": solve.tokens + review.tokens if t.costed else None,
            "cost": money.total if t.costed else None,
            "cost_known": money.known if t.costed else None,
            "cost_unknown_items": money.unknown if t.costed else None,
            "calls": solve.calls + review.calls if t.costed else None,
            "agent_seconds": solve.seconds + review.seconds if t.costed else None,
            "busy_seconds": sum(b - a for a, b in agent_spans) if t.events else None,
            "wall_seconds": F._union(F._spans(t.events)) if t.events else None,
            "holdout": any(F.holdout_known(c) for c in t.candidates),
            "escaped_defect": _flag(*q["escaped_defects"], t.id),
            "wrong_rejection": _flag(*q["wrong_rejections"], t.id),
            "needless_escalation": _flag(*q["needless_escalations"], t.id),
            "human_error": human_error,
            "test_files": _test_files(final),
        })
    return rows


def write_jsonl(rows: list[dict[str, Any]], out: TextIO) -> None:
    """``rows`` as JSON lines, one object per task run, types kept."""
    for r in rows:
        out.write(json.dumps({k: r[k] for k in COLUMNS}) + "\n")


def write_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    """``rows`` as RFC 4180 CSV: a header, then one row per task run."""
    # The csv module's own line ending (CRLF): with "\n" it would leave a lone
    # "\r" in a cell (a suite path, a tag) unquoted, and a reader splits the row there.
    w = csv.writer(out)
    w.writerow(COLUMNS)
    for r in rows:
        cells = []
        for k in COLUMNS:
            v = r[k]
            if v is None:
                cells.append("")
            elif isinstance(v, (list, dict)):
                # Joined with a separator, ["a;b"] and ["a", "b"] (or [""] and []) would be one cell.
                cells.append(json.dumps(v, ensure_ascii=False))
            elif isinstance(v, bool):
                cells.append("true" if v else "false")
            else:
                cells.append(v)
        w.writerow(cells)
