"""The intervention ledger: every run, candidate, verdict, decision and escalation.

SQLite (WAL mode, one connection per operation, so threads and processes can
write side by side). Each task run is written in one transaction, replacing
any earlier write of the same task run, so a run resumed after a crash never
leaves half a record or a duplicate.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
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

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL,
    pid INTEGER, cwd TEXT, config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_runs (
    id TEXT PRIMARY KEY, run TEXT NOT NULL REFERENCES runs(id), task TEXT NOT NULL,
    task_path TEXT NOT NULL, status TEXT NOT NULL, decision TEXT, winner TEXT, reason TEXT,
    branch TEXT, rounds INTEGER NOT NULL DEFAULT 1, started TEXT NOT NULL, finished TEXT,
    seconds REAL, error TEXT, tags TEXT NOT NULL DEFAULT '[]', metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS task_runs_run ON task_runs(run);
CREATE TABLE IF NOT EXISTS candidates (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, agent TEXT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, tests_passed INTEGER, tests_total INTEGER,
    holdout_passed INTEGER, holdout_total INTEGER, files_changed TEXT NOT NULL,
    lines_added INTEGER NOT NULL, lines_removed INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, cost REAL, calls INTEGER NOT NULL,
    started TEXT NOT NULL, finished TEXT NOT NULL, seconds REAL NOT NULL, diff TEXT NOT NULL,
    PRIMARY KEY (task_run, round, agent)
);
CREATE TABLE IF NOT EXISTS test_outcomes (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, agent TEXT NOT NULL, suite TEXT NOT NULL,
    name TEXT NOT NULL, outcome TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS test_outcomes_tr ON test_outcomes(task_run);
CREATE TABLE IF NOT EXISTS verdicts (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, reviewer TEXT NOT NULL, candidate TEXT NOT NULL,
    verdict TEXT NOT NULL, confidence REAL NOT NULL, concerns TEXT NOT NULL, prefers TEXT,
    tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, cost REAL, calls INTEGER NOT NULL,
    seconds REAL NOT NULL, error TEXT
);
CREATE INDEX IF NOT EXISTS verdicts_tr ON verdicts(task_run);
CREATE TABLE IF NOT EXISTS decisions (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL, winner TEXT,
    reason TEXT NOT NULL, disagreements TEXT NOT NULL, policy TEXT NOT NULL,
    PRIMARY KEY (task_run, round)
);
CREATE TABLE IF NOT EXISTS escalations (
    id TEXT PRIMARY KEY, task_run TEXT NOT NULL, run TEXT NOT NULL, task TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL, created TEXT NOT NULL,
    first_shown TEXT, decided TEXT, decided_by TEXT, action TEXT, pick TEXT, guide TEXT,
    packet TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    task_run TEXT NOT NULL, node TEXT NOT NULL, agent TEXT, round INTEGER NOT NULL,
    started TEXT NOT NULL, finished TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tr ON events(task_run);
"""


class LedgerError(Exception):
    """The ledger cannot be opened or used."""


def _ts(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


class Ledger:
    """The SQLite ledger at ``path``."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            row = None
            try:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            except sqlite3.OperationalError:
                pass
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path} was written by a newer crossreview (schema {row[0]}, this one knows "
                    f"{SCHEMA_VERSION}); upgrade crossreview or pass another --ledger"
                )
            # executescript commits on its own; the statements are all IF NOT EXISTS.
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot use ledger {self.path}: {exc}") from None
        finally:
            db.close()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose block is one transaction: all of it is written, or none."""
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")
        finally:
            db.close()

    # --- runs ---------------------------------------------------------------

    def start_run(self, run: str, config: dict[str, Any]) -> None:
        """Record that suite run ``run`` began, with what it needs to be resumed."""
        with self.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs(id, started, status, pid, cwd, config) VALUES (?,?,?,?,?,?)",
                (run, _ts(utcnow()), "running", os.getpid(), os.getcwd(), json.dumps(config)),
            )

    def set_run_status(self, run: str, status: str, finished: bool = True) -> None:
        """Mark a suite run running / finished / interrupted."""
        with self.connect() as db:
            db.execute(
                "UPDATE runs SET status=?, finished=?, pid=? WHERE id=?",
                (status, _ts(utcnow()) if finished else None, os.getpid(), run),
            )

    def get_run(self, run: str) -> dict[str, Any] | None:
        """The run's row, its config parsed."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["config"] = json.loads(out["config"])
        return out

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every run, newest first."""
        q = "SELECT id, started, finished, status, pid FROM runs"
        args: tuple = ()
        if status:
            q += " WHERE status=?"
            args = (status,)
        with self.connect() as db:
            return [dict(r) for r in db.execute(q + " ORDER BY started DESC", args)]

    # --- task runs ----------------------------------------------------------

    def start_task_run(self, task_run: str, run: str, task: str, task_path: str, tags: list[str], metadata: dict) -> None:
        """Record that a task run began (kept if it already exists: a resume)."""
        with self.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO task_runs(id, run, task, task_path, status, started, tags, metadata)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (task_run, run, task, task_path, "running", _ts(utcnow()), json.dumps(tags), json.dumps(metadata, default=str)),
            )

    def task_runs(self, run: str) -> list[dict[str, Any]]:
        """The task runs of a suite run, in the order they started."""
        with self.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM task_runs WHERE run=? ORDER BY started, id", (run,))]

    def get_task_run(self, task_run: str) -> dict[str, Any] | None:
        """One task run's row."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM task_runs WHERE id=?", (task_run,)).fetchone()
        return dict(row) if row else None

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
    ) -> None:
        """Write a finished task run whole, replacing any earlier partial write of it."""
        tr = result.task_run
        with self.connect() as db:
            for table in ("candidates", "test_outcomes", "verdicts", "decisions", "events"):
                db.execute(f"DELETE FROM {table} WHERE task_run=?", (tr,))
            db.execute(
                "UPDATE task_runs SET status='done', decision=?, winner=?, reason=?, branch=?, rounds=?,"
                " finished=?, seconds=?, error=? WHERE id=?",
                (
                    result.decision,
                    result.winner,
                    result.reason,
                    result.branch,
                    rounds,
                    _ts(utcnow()),
                    result.seconds,
                    result.error,
                    tr,
                ),
            )
            for c in candidates:
                db.execute(
                    "INSERT INTO candidates VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        tr, c.round, c.agent, c.spec, c.status, c.error,
                        c.tests.passed if c.tests else None, c.tests.total if c.tests else None,
                        c.holdout.passed if c.holdout else None, c.holdout.total if c.holdout else None,
                        json.dumps(c.files_changed), c.lines_added, c.lines_removed,
                        c.usage.tokens_in, c.usage.tokens_out, c.usage.cost, c.usage.calls,
                        _ts(c.started), _ts(c.finished), c.seconds, c.diff,
                    ),
                )
                for suite, report in (("tests", c.tests), ("holdout", c.holdout)):
                    self._outcomes(db, tr, c, suite, report)
            for v in verdicts:
                db.execute(
                    "INSERT INTO verdicts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        tr, v.round, v.reviewer, v.candidate, v.verdict, v.confidence,
                        json.dumps(v.concerns), v.prefers, v.usage.tokens_in, v.usage.tokens_out,
                        v.usage.cost, v.usage.calls, v.seconds, v.error,
                    ),
                )
            for rnd, d in decisions:
                db.execute(
                    "INSERT INTO decisions VALUES (?,?,?,?,?,?,?)",
                    (tr, rnd, d.kind, d.winner, d.reason, json.dumps(d.disagreements), d.policy),
                )
            for e in events:
                db.execute(
                    "INSERT INTO events VALUES (?,?,?,?,?,?)",
                    (tr, e["node"], e.get("agent"), e.get("round", 0), e["started"], e["finished"]),
                )

    @staticmethod
    def _outcomes(db: sqlite3.Connection, tr: str, c: Candidate, suite: str, report: TestReport | None) -> None:
        if report is None:
            return
        db.executemany(
            "INSERT INTO test_outcomes VALUES (?,?,?,?,?,?,?)",
            [(tr, c.round, c.agent, suite, o.name, o.outcome, o.message) for o in report.outcomes],
        )

    def candidate_rows(self, task_run: str) -> list[dict[str, Any]]:
        """The candidates recorded for a task run."""
        with self.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM candidates WHERE task_run=? ORDER BY round, agent", (task_run,))]

    def verdict_rows(self, task_run: str) -> list[dict[str, Any]]:
        """The verdicts recorded for a task run."""
        with self.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM verdicts WHERE task_run=?", (task_run,))]

    # --- escalations --------------------------------------------------------

    def open_escalation(self, esc: Escalation) -> None:
        """Put an escalation in the inbox (idempotent: a resumed run re-announcing it keeps the first)."""
        with self.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO escalations(id, task_run, run, task, round, reason, created, packet)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (esc.id, esc.task_run, esc.run, esc.task, esc.round, esc.reason, _ts(esc.created), json.dumps(esc.packet, default=str)),
            )
            db.execute("UPDATE task_runs SET status='parked', decision='escalated' WHERE id=?", (esc.task_run,))

    def inbox(self) -> list[dict[str, Any]]:
        """Escalations still waiting for a human, oldest first."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT id, task, run, task_run, reason, created, first_shown FROM escalations"
                " WHERE decided IS NULL ORDER BY created"
            ).fetchall()
        return [dict(r) for r in rows]

    def get_escalation(self, esc_id: str) -> dict[str, Any] | None:
        """One escalation with its packet parsed."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM escalations WHERE id=?", (esc_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["packet"] = json.loads(out["packet"])
        return out

    def mark_shown(self, esc_id: str) -> None:
        """The first time a human saw the packet: the start of their decision time."""
        with self.connect() as db:
            db.execute("UPDATE escalations SET first_shown=? WHERE id=? AND first_shown IS NULL", (_ts(utcnow()), esc_id))

    def decide_escalation(self, esc_id: str, human: HumanDecision) -> None:
        """Record the human's decision and when it was made."""
        with self.connect() as db:
            db.execute(
                "UPDATE escalations SET first_shown=COALESCE(first_shown, ?), decided=?, decided_by=?,"
                " action=?, pick=?, guide=? WHERE id=?",
                (
                    _ts(human.shown_at or human.decided_at), _ts(human.decided_at), human.by, human.action,
                    human.pick, human.guide, esc_id,
                ),
            )

    def escalations_of(self, task_run: str) -> list[dict[str, Any]]:
        """Every escalation of a task run, in order."""
        with self.connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM escalations WHERE task_run=? ORDER BY round", (task_run,))]
