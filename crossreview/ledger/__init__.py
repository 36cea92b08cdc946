"""The intervention ledger: every run, candidate, verdict, decision and escalation.

A SQLite file by default (WAL mode, one connection per transaction, BEGIN
IMMEDIATE with a 60 s busy timeout, so threads and processes write side by
side and queue rather than lose a write), or a PostgreSQL database when the
location is a ``postgresql://`` URL (psycopg 3, the same schema and figures).

Each task run is written in one transaction, replacing any earlier write of
the same task run, so a run resumed after a crash never leaves half a record
or a duplicate. The schema is versioned (crossreview/ledger/schema.py):
opening an older ledger upgrades it, a newer one is refused.

The figures (``crossreview stats`` / ``report`` / ``export``) are computed in
:mod:`crossreview.ledger.figures` from what is written here.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from ..models import (
    Candidate,
    Decision,
    Escalation,
    HumanDecision,
    TaskResult,
    TestReport,
    Verdict,
    utcnow,
)
from . import score
from .db import LedgerError, LedgerURL, Tx, is_url, open_backend, parse_location
from .schema import SCHEMA_VERSION, migrate, suite_name

__all__ = ["Ledger", "LedgerError", "LedgerURL", "SCHEMA_VERSION", "Spent", "is_url", "parse_location"]


def _ts(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


@dataclass(frozen=True)
class Spent:
    """A task run's journaled spend: tokens, the money of priced charges, and how many charges had no price
    (``in_flight`` of them: model calls sent and never answered, their process killed while they waited)."""

    tokens: int
    cost: float
    unpriced: int
    in_flight: int = 0


class Ledger:
    """The ledger at ``location``: a file path (SQLite) or a ``postgresql://`` URL."""

    def __init__(self, location: Path | str | LedgerURL):
        loc = parse_location(location)
        self.path: Path | LedgerURL = loc
        """Where the ledger is; pass it to ``Ledger()`` again to reopen it. A URL prints without its password."""
        self.backend = open_backend(loc)
        self.dialect = self.backend.dialect
        self.upgraded_from, self.version = migrate(self.backend)

    def __repr__(self) -> str:
        return f"Ledger({self.backend.describe()!r})"

    @contextmanager
    def connect(self, write: bool = True) -> Iterator[Tx]:
        """One transaction: all of the block is written, or none.

        Statements use ``?`` placeholders on either backend; rows are dicts.
        """
        with self.backend.transaction(write=write) as tx:
            yield tx

    # --- runs ---------------------------------------------------------------

    def start_run(self, run: str, config: dict[str, Any]) -> None:
        """Record that suite run ``run`` began, with what it needs to be resumed."""
        with self.connect() as db:
            db.insert(
                "runs",
                {"id": run, "started": _ts(utcnow()), "finished": None, "status": "running", "pid": os.getpid(),
                 "cwd": os.getcwd(), "config": json.dumps(config), "suite": suite_name(config)},
                conflict="replace", key=("id",),
            )

    def set_run_status(self, run: str, status: str, finished: bool = True) -> None:
        """Mark a suite run running / finished / interrupted."""
        with self.connect() as db:
            db.execute(
                "UPDATE runs SET status=?, finished=?, pid=? WHERE id=?",
                (status, _ts(utcnow()) if finished else None, os.getpid(), run),
            )

    def set_run_config(self, run: str, config: dict[str, Any]) -> None:
        """Replace what suite run ``run`` recorded it runs with (``resume`` with new caps writes them here,
        so every later ``decide`` or ``resume`` of the run uses them)."""
        with self.connect() as db:
            db.execute("UPDATE runs SET config=? WHERE id=?", (json.dumps(config), run))

    def get_run(self, run: str) -> dict[str, Any] | None:
        """The run's row, its config parsed."""
        with self.connect(write=False) as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run,)).fetchone()
        if row is None:
            return None
        row["config"] = json.loads(row["config"])
        return row

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every run, newest first."""
        q = "SELECT id, started, finished, status, pid FROM runs"
        args: tuple = ()
        if status:
            q += " WHERE status=?"
            args = (status,)
        with self.connect(write=False) as db:
            return db.execute(q + " ORDER BY started DESC", args).fetchall()

    # --- task runs ----------------------------------------------------------

    def start_task_run(self, task_run: str, run: str, task: str, task_path: str, tags: list[str], metadata: dict) -> None:
        """Record that a task run began (kept if it already exists: a resume)."""
        with self.connect() as db:
            db.insert(
                "task_runs",
                {"id": task_run, "run": run, "task": task, "task_path": task_path, "status": "running",
                 "started": _ts(utcnow()), "tags": json.dumps(tags), "metadata": json.dumps(metadata, default=str)},
                conflict="ignore",
            )

    def task_runs(self, run: str) -> list[dict[str, Any]]:
        """The task runs of a suite run, in the order they started."""
        with self.connect(write=False) as db:
            return db.execute("SELECT * FROM task_runs WHERE run=? ORDER BY started, id", (run,)).fetchall()

    def get_task_run(self, task_run: str) -> dict[str, Any] | None:
        """One task run's row."""
        with self.connect(write=False) as db:
            return db.execute("SELECT * FROM task_runs WHERE id=?", (task_run,)).fetchone()

    def steps_seconds(self, task_run: str) -> float | None:
        """Seconds from a task run's first recorded step's start to its last one's end (None: no step)."""
        with self.connect(write=False) as db:
            row = db.execute("SELECT min(started) AS a, max(finished) AS b FROM events WHERE task_run=?",
                             (task_run,)).fetchone()
        if not row or not row["a"] or not row["b"]:
            return None
        return max(0.0, (datetime.fromisoformat(row["b"]) - datetime.fromisoformat(row["a"])).total_seconds())

    def set_task_run_status(self, task_run: str, status: str, decision: str | None = None, error: str | None = None) -> None:
        """Mark a task run parked (waiting for a human) or failed."""
        with self.connect() as db:
            db.execute(
                "UPDATE task_runs SET status=?, decision=COALESCE(?, decision), error=? WHERE id=?",
                (status, decision, error, task_run),
            )

    def record_task_run(
        self,
        result: TaskResult,
        candidates: list[Candidate],
        verdicts: list[Verdict],
        decisions: list[tuple[int, Decision]],
        events: list[dict[str, Any]],
        rounds: int,
        calls: list[dict[str, Any]] | None = None,
        agents_used: int | None = None,
        agents_configured: int | None = None,
    ) -> None:
        """Write a finished task run whole, replacing any earlier partial write of it.

        The agreement score (crossreview/ledger/score.py) of every candidate
        and of the task run is computed here, from exactly what is written.
        ``calls`` optionally itemizes model calls (see :meth:`record_calls`).
        ``agents_used`` / ``agents_configured``: agents started in the last
        round and agents the run was given (they differ under the cascade
        policy); by default, the last round's candidates for both.
        """
        tr = result.task_run
        agreement = score.from_models(candidates, verdicts)
        last = max((c.round for c in candidates), default=0)
        started_last = len({c.agent for c in candidates if c.round == last}) or None
        used = agents_used if agents_used is not None else started_last
        configured = agents_configured if agents_configured is not None else used
        with self.connect() as db:
            self._replace_details(db, tr, candidates, verdicts, decisions, events, calls, agreement)
            db.execute(
                "UPDATE task_runs SET status='done', decision=?, winner=?, reason=?, branch=?, rounds=?,"
                " finished=?, seconds=?, error=?, agreement=?, agreement_pick=?, agents_used=?, agents_configured=?"
                " WHERE id=?",
                (
                    result.decision, result.winner, result.reason, result.branch, rounds, _ts(utcnow()),
                    result.seconds, result.error, agreement.task_run, agreement.pick, used, configured, tr,
                ),
            )

    def record_parked(
        self,
        task_run: str,
        candidates: list[Candidate],
        verdicts: list[Verdict],
        decisions: list[tuple[int, Decision]],
        events: list[dict[str, Any]],
        rounds: int,
        calls: list[dict[str, Any]] | None = None,
        agents_used: int | None = None,
        agents_configured: int | None = None,
    ) -> None:
        """Write what a task run parked at an escalation has so far; it stays parked (``record_task_run`` finishes it)."""
        agreement = score.from_models(candidates, verdicts)
        with self.connect() as db:
            self._replace_details(db, task_run, candidates, verdicts, decisions, events, calls, agreement)
            db.execute("UPDATE task_runs SET rounds=?, agreement=?, agreement_pick=?, agents_used=?,"
                       " agents_configured=? WHERE id=?",
                       (rounds, agreement.task_run, agreement.pick, agents_used, agents_configured, task_run))

    def _replace_details(self, db: Tx, tr: str, candidates: list[Candidate], verdicts: list[Verdict],
                         decisions: list[tuple[int, Decision]], events: list[dict[str, Any]],
                         calls: list[dict[str, Any]] | None, agreement) -> None:
        for table in ("candidates", "test_outcomes", "verdicts", "decisions", "events", "calls"):
            db.execute(f"DELETE FROM {table} WHERE task_run=?", (tr,))
        for c in candidates:
            db.insert("candidates", {
                "task_run": tr, "round": c.round, "agent": c.agent, "spec": c.spec, "status": c.status,
                "error": c.error,
                "tests_passed": c.tests.passed if c.tests else None,
                "tests_total": c.tests.total if c.tests else None,
                # A holdout run whose canary caught tampering proves nothing passed (the tests' tampering
                # is the candidate's own column; the holdout's is not stored, so it counts here).
                "holdout_passed": (0 if c.holdout.tampering else c.holdout.passed) if c.holdout else None,
                "holdout_total": c.holdout.total if c.holdout else None,
                "files_changed": json.dumps(c.files_changed), "lines_added": c.lines_added,
                "lines_removed": c.lines_removed, "tokens_in": c.usage.tokens_in,
                "tokens_out": c.usage.tokens_out, "cost": c.usage.cost, "calls": c.usage.calls,
                "cost_known": c.usage.cost_known if c.usage.cost is None else None,
                "started": _ts(c.started), "finished": _ts(c.finished), "seconds": c.seconds, "diff": c.diff,
                "agreement": agreement.candidates.get((c.round, c.agent)),
                "tampering": json.dumps(c.tampering),
                "test_files": json.dumps(c.test_files),
            })
            for suite, report in (("tests", c.tests), ("holdout", c.holdout)):
                self._outcomes(db, tr, c, suite, report)
        db.insert_many(
            "verdicts",
            ("task_run", "round", "reviewer", "candidate", "verdict", "confidence", "concerns", "prefers",
             "tokens_in", "tokens_out", "cost", "calls", "seconds", "error"),
            [(tr, v.round, v.reviewer, v.candidate, v.verdict, v.confidence, json.dumps(v.concerns), v.prefers,
              v.usage.tokens_in, v.usage.tokens_out, v.usage.cost, v.usage.calls, v.seconds, v.error)
             for v in verdicts],
        )
        db.insert_many(
            "decisions",
            ("task_run", "round", "kind", "winner", "reason", "disagreements", "policy"),
            [(tr, rnd, d.kind, d.winner, d.reason, json.dumps(d.disagreements), d.policy) for rnd, d in decisions],
        )
        db.insert_many(
            "events",
            ("task_run", "node", "agent", "round", "started", "finished"),
            [(tr, e["node"], e.get("agent"), e.get("round", 0), e["started"], e["finished"]) for e in events],
        )
        if calls:
            self._calls(db, tr, calls)

    @staticmethod
    def _outcomes(db: Tx, tr: str, c: Candidate, suite: str, report: TestReport | None) -> None:
        if report is None:
            return
        db.insert_many(
            "test_outcomes",
            ("task_run", "round", "agent", "suite", "name", "outcome", "message"),
            [(tr, c.round, c.agent, suite, o.name, o.outcome, o.message) for o in report.outcomes],
        )

    _CALL_COLUMNS = ("task_run", "round", "phase", "agent", "candidate", "seq", "model", "tokens_in",
                     "tokens_out", "cost", "started", "seconds", "error")

    def _calls(self, db: Tx, tr: str, calls: list[dict[str, Any]]) -> None:
        rows = []
        for i, c in enumerate(calls):
            if c.get("phase") not in ("solve", "review"):
                raise ValueError(f"a call's phase is 'solve' or 'review', not {c.get('phase')!r}")
            started = c.get("started")
            rows.append((
                tr, c.get("round", 0), c["phase"], c["agent"], c.get("candidate"), c.get("seq", i), c.get("model"),
                c.get("tokens_in"), c.get("tokens_out"), c.get("cost"),
                _ts(started) if isinstance(started, datetime) else started, c.get("seconds"), c.get("error"),
            ))
        db.insert_many("calls", self._CALL_COLUMNS, rows)

    def record_spend(self, task_run: str, tokens: int, cost: float | None, call_id: str | None = None) -> None:
        """Journal one charge of a task run's budget (a model call's, or an agent's or reviewer's
        whole usage) the moment it happens.

        Candidates and verdicts carry what finished work spent, and are written
        when their task run is recorded; a run killed before that would lose the
        spend of what it had done. This journal keeps it: ``spend_by_task_run``.
        ``call_id``: the model call :meth:`record_call_started` journaled, whose
        row this charge resolves.
        """
        run = task_run.split("/", 1)[0]
        with self.connect() as db:
            if call_id is not None:
                cur = db.execute("UPDATE spend SET tokens=?, cost=?, in_flight=0, at=? WHERE task_run=? AND call_id=?",
                                 (int(tokens or 0), cost, _ts(utcnow()), task_run, call_id))
                if cur.rowcount:
                    return
                # Its start was never journaled (that write failed): the charge still counts.
            db.insert("spend", {"task_run": task_run, "run": run, "at": _ts(utcnow()), "tokens": int(tokens or 0),
                                "cost": cost, "call_id": call_id, "in_flight": 0})

    def record_call_started(self, task_run: str, call_id: str, model: str | None = None) -> None:
        """Journal a model call about to be sent: in flight, its cost unknown, until ``record_spend(...,
        call_id=call_id)`` resolves it with what it cost.

        The provider may bill a request whose answer nobody waited for: a row
        still in flight after its process is gone is work a kill cut short, of
        unknown cost (``spend_by_task_run``, ``crossreview stats``).
        """
        run = task_run.split("/", 1)[0]
        with self.connect() as db:
            db.insert("spend", {"task_run": task_run, "run": run, "at": _ts(utcnow()), "tokens": 0, "cost": None,
                                "call_id": call_id, "model": model, "in_flight": 1})

    def spend_by_task_run(self, run: str | None = None) -> dict[str, Spent]:
        """What the journal holds per task run (of ``run``, or every run)."""
        where, args = ("WHERE run=?", (run,)) if run else ("", ())
        with self.connect(write=False) as db:
            rows = db.execute(
                "SELECT task_run, SUM(tokens) AS tokens, SUM(cost) AS cost, COUNT(cost) AS priced, COUNT(*) AS n,"
                f" SUM(in_flight) AS in_flight FROM spend {where} GROUP BY task_run", args).fetchall()
        return {r["task_run"]: Spent(int(r["tokens"] or 0), float(r["cost"] or 0.0), int(r["n"]) - int(r["priced"]),
                                     int(r["in_flight"] or 0))
                for r in rows}

    def record_calls(self, task_run: str, calls: list[dict[str, Any]]) -> None:
        """Itemize model calls of a task run: one dict per call with ``phase`` ("solve" or
        "review"), ``agent`` (the solver, or the reviewer), optional ``candidate`` (the
        one reviewed), ``round``, ``seq``, ``model``, ``tokens_in``, ``tokens_out``,
        ``cost`` (None when unknown, never 0 by guess), ``started``, ``seconds``, ``error``.

        The per-agent totals the figures use stay in candidates / verdicts; this
        table is the detail (one row per request, retries included).
        """
        with self.connect() as db:
            self._calls(db, task_run, calls)

    def candidate_rows(self, task_run: str) -> list[dict[str, Any]]:
        """The candidates recorded for a task run."""
        with self.connect(write=False) as db:
            return db.execute("SELECT * FROM candidates WHERE task_run=? ORDER BY round, agent", (task_run,)).fetchall()

    def verdict_rows(self, task_run: str) -> list[dict[str, Any]]:
        """The verdicts recorded for a task run."""
        with self.connect(write=False) as db:
            return db.execute("SELECT * FROM verdicts WHERE task_run=? ORDER BY round, reviewer, candidate",
                              (task_run,)).fetchall()

    # --- escalations --------------------------------------------------------

    def open_escalation(self, esc: Escalation) -> None:
        """Put an escalation in the inbox (idempotent: a resumed run re-announcing it keeps the first).

        The task run's agreement score is recorded now, from the packet, so a
        parked run has one too; recording the finished run replaces it.
        """
        provisional = score.from_rows(*score.packet_rows(esc.packet or {}, esc.round))
        with self.connect() as db:
            db.insert(
                "escalations",
                {"id": esc.id, "task_run": esc.task_run, "run": esc.run, "task": esc.task, "round": esc.round,
                 "reason": esc.reason, "created": _ts(esc.created), "packet": json.dumps(esc.packet, default=str)},
                conflict="ignore",
            )
            db.execute(
                "UPDATE task_runs SET status='parked', decision='escalated', agreement=?, agreement_pick=? WHERE id=?",
                (provisional.task_run, provisional.pick, esc.task_run),
            )

    def inbox(self) -> list[dict[str, Any]]:
        """Escalations still waiting for a human, oldest first."""
        with self.connect(write=False) as db:
            return db.execute(
                "SELECT id, task, run, task_run, reason, created, first_shown FROM escalations"
                " WHERE decided IS NULL ORDER BY created"
            ).fetchall()

    def get_escalation(self, esc_id: str) -> dict[str, Any] | None:
        """One escalation with its packet parsed."""
        with self.connect(write=False) as db:
            row = db.execute("SELECT * FROM escalations WHERE id=?", (esc_id,)).fetchone()
        if row is None:
            return None
        row["packet"] = json.loads(row["packet"])
        return row

    def mark_shown(self, esc_id: str) -> None:
        """The first time a human saw the packet: the start of their decision time."""
        with self.connect() as db:
            db.execute("UPDATE escalations SET first_shown=? WHERE id=? AND first_shown IS NULL", (_ts(utcnow()), esc_id))

    def decide_escalation(self, esc_id: str, human: HumanDecision) -> bool:
        """Record the human's decision and when it was made; False if it was already decided.

        The check and the write are one statement, so of two people (or
        processes) deciding at once exactly one wins: the caller must go on
        only when this returns True.
        """
        with self.connect() as db:
            cur = db.execute(
                "UPDATE escalations SET first_shown=COALESCE(first_shown, ?), decided=?, decided_by=?,"
                " action=?, pick=?, guide=? WHERE id=? AND decided IS NULL",
                (
                    # Never shown through crossreview (`decide` straight from the inbox, or
                    # after reading the diff elsewhere): how long the human looked is unknown,
                    # not zero minutes.
                    _ts(human.shown_at) if human.shown_at else None, _ts(human.decided_at), human.by, human.action,
                    human.pick, human.guide, esc_id,
                ),
            )
            return cur.rowcount == 1

    def import_escalation(self, esc_id: str, facts: dict[str, Any]) -> None:
        """Write an escalation this ledger never saw, from the facts another one recorded (a CI run's).

        ``facts`` holds ``task_run``, ``run``, ``task``, ``created`` and
        ``reason``. `crossreview merge` later joins it with the gate's ledger.
        """
        with self.connect() as db:
            db.insert(
                "escalations",
                {"id": esc_id, "task_run": facts["task_run"], "run": facts["run"], "task": facts["task"],
                 "round": int(facts.get("round") or 0), "reason": facts.get("reason") or "",
                 "created": facts["created"], "first_shown": facts["created"],
                 "packet": json.dumps({"task": facts["task"], "imported": True})},
                conflict="ignore",
            )

    def finish_by_human(self, task_run: str, human: HumanDecision, reason: str) -> None:
        """Close a parked task run with a decision a human made elsewhere (on GitHub), if this ledger has it."""
        accepted = human.action == "pick"
        with self.connect() as db:
            db.execute(
                "UPDATE task_runs SET status='done', decision=?, winner=?, reason=?, finished=? "
                "WHERE id=? AND status='parked'",
                ("accepted" if accepted else "rejected", human.pick if accepted else None, reason,
                 _ts(human.decided_at), task_run),
            )

    def escalation_index(self) -> list[dict[str, Any]]:
        """Every escalation's ``id``, ``task`` and ``decided`` (None while it waits), oldest first: no packets."""
        with self.connect(write=False) as db:
            return db.execute("SELECT id, task, decided FROM escalations ORDER BY created").fetchall()

    def escalations_of(self, task_run: str) -> list[dict[str, Any]]:
        """Every escalation of a task run, in order."""
        with self.connect(write=False) as db:
            return db.execute("SELECT * FROM escalations WHERE task_run=? ORDER BY round", (task_run,)).fetchall()
