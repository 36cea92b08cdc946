"""The ledger's schema, as an ordered list of migrations.

Opening a ledger brings it to :data:`SCHEMA_VERSION`: a new one runs every
migration, an older one the missing ones, in one transaction (all or
nothing), under a lock so two processes opening the same old ledger upgrade
it once. A ledger newer than this crossreview is refused.

The version lives in the ``schema_version`` table (one row per migration
applied, with when) and, for crossreview 0.1's check, in ``meta``'s
``schema_version`` key, which version 1 reads: that is how a 0.1 install
refuses a newer ledger instead of writing into it.

Adding a migration: append a function to :data:`MIGRATIONS`, bump nothing
else. It gets an open transaction (``Tx``); DDL is written with ``{REAL}``,
``{BIGINT}`` for the column types that differ between SQLite and PostgreSQL.
Never edit a released migration.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Callable

from ..models import utcnow
from . import score
from .db import TYPES, LedgerError, Tx

V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL,
    pid {BIGINT}, cwd TEXT, config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_runs (
    id TEXT PRIMARY KEY, run TEXT NOT NULL REFERENCES runs(id), task TEXT NOT NULL,
    task_path TEXT NOT NULL, status TEXT NOT NULL, decision TEXT, winner TEXT, reason TEXT,
    branch TEXT, rounds INTEGER NOT NULL DEFAULT 1, started TEXT NOT NULL, finished TEXT,
    seconds {REAL}, error TEXT, tags TEXT NOT NULL DEFAULT '[]', metadata TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS task_runs_run ON task_runs(run);
CREATE TABLE IF NOT EXISTS candidates (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, agent TEXT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, tests_passed INTEGER, tests_total INTEGER,
    holdout_passed INTEGER, holdout_total INTEGER, files_changed TEXT NOT NULL,
    lines_added INTEGER NOT NULL, lines_removed INTEGER NOT NULL,
    tokens_in {BIGINT} NOT NULL, tokens_out {BIGINT} NOT NULL, cost {REAL}, calls INTEGER NOT NULL,
    started TEXT NOT NULL, finished TEXT NOT NULL, seconds {REAL} NOT NULL, diff TEXT NOT NULL,
    PRIMARY KEY (task_run, round, agent)
);
CREATE TABLE IF NOT EXISTS test_outcomes (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, agent TEXT NOT NULL, suite TEXT NOT NULL,
    name TEXT NOT NULL, outcome TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS test_outcomes_tr ON test_outcomes(task_run);
CREATE TABLE IF NOT EXISTS verdicts (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, reviewer TEXT NOT NULL, candidate TEXT NOT NULL,
    verdict TEXT NOT NULL, confidence {REAL} NOT NULL, concerns TEXT NOT NULL, prefers TEXT,
    tokens_in {BIGINT} NOT NULL, tokens_out {BIGINT} NOT NULL, cost {REAL}, calls INTEGER NOT NULL,
    seconds {REAL} NOT NULL, error TEXT
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
CREATE INDEX IF NOT EXISTS events_tr ON events(task_run)
"""

V2 = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, applied TEXT NOT NULL, description TEXT NOT NULL
);
ALTER TABLE runs ADD COLUMN suite TEXT;
ALTER TABLE task_runs ADD COLUMN agreement {REAL};
ALTER TABLE task_runs ADD COLUMN agreement_pick TEXT;
ALTER TABLE candidates ADD COLUMN agreement {REAL};
CREATE TABLE IF NOT EXISTS calls (
    task_run TEXT NOT NULL, round INTEGER NOT NULL, phase TEXT NOT NULL, agent TEXT NOT NULL,
    candidate TEXT, seq INTEGER NOT NULL, model TEXT, tokens_in {BIGINT}, tokens_out {BIGINT},
    cost {REAL}, started TEXT, seconds {REAL}, error TEXT
);
CREATE INDEX IF NOT EXISTS calls_tr ON calls(task_run);
CREATE INDEX IF NOT EXISTS escalations_tr ON escalations(task_run);
CREATE INDEX IF NOT EXISTS task_runs_started ON task_runs(started);
CREATE INDEX IF NOT EXISTS runs_suite ON runs(suite)
"""

V3 = """
ALTER TABLE task_runs ADD COLUMN agents_used INTEGER;
ALTER TABLE task_runs ADD COLUMN agents_configured INTEGER
"""


def _ddl(tx: Tx, script: str) -> None:
    for stmt in script.format(**TYPES[tx.dialect]).split(";"):
        if stmt.strip():
            tx.execute(stmt)


def suite_name(config: dict | None) -> str | None:
    """The suite a run ran: the name of its suite folder."""
    suite_dir = (config or {}).get("suite_dir")
    if not suite_dir:
        return None
    return PurePath(str(suite_dir)).name or str(suite_dir)


def m1_core(tx: Tx) -> None:
    """core schema: runs, task runs, candidates, test outcomes, verdicts, decisions, escalations, events"""
    _ddl(tx, V1)


def m2_figures(tx: Tx) -> None:
    """figures: version table, runs.suite, agreement scores, per-call usage"""
    _ddl(tx, V2)
    for r in tx.execute("SELECT id, config FROM runs").fetchall():
        try:
            config = json.loads(r["config"])
        except (TypeError, ValueError):
            config = {}
        tx.execute("UPDATE runs SET suite=? WHERE id=?", (suite_name(config), r["id"]))
    backfill_agreement(tx)


def backfill_agreement(tx: Tx) -> None:
    """Score every task run already in the ledger (as record_task_run does for new ones)."""
    cands: dict[str, list[dict]] = {}
    for c in tx.execute("SELECT task_run, round, agent, status, tests_passed, tests_total FROM candidates"):
        cands.setdefault(c["task_run"], []).append(c)
    verdicts: dict[str, list[dict]] = {}
    for v in tx.execute("SELECT task_run, round, reviewer, candidate, verdict, confidence FROM verdicts"):
        verdicts.setdefault(v["task_run"], []).append(v)
    for tr, cs in cands.items():
        a = score.from_rows(cs, verdicts.get(tr, []))
        for (rnd, agent), s in a.candidates.items():
            tx.execute("UPDATE candidates SET agreement=? WHERE task_run=? AND round=? AND agent=?", (s, tr, rnd, agent))
        tx.execute("UPDATE task_runs SET agreement=?, agreement_pick=? WHERE id=?", (a.task_run, a.pick, tr))
    # Parked task runs have no candidate rows yet: score them from their open escalation's packet.
    for e in tx.execute("SELECT task_run, round, packet FROM escalations WHERE decided IS NULL ORDER BY round"):
        if e["task_run"] in cands:
            continue
        try:
            packet = json.loads(e["packet"])
        except (TypeError, ValueError):
            continue
        a = score.from_rows(*score.packet_rows(packet, e["round"]))
        tx.execute("UPDATE task_runs SET agreement=?, agreement_pick=? WHERE id=?", (a.task_run, a.pick, e["task_run"]))


def m3_agents_used(tx: Tx) -> None:
    """cascade: agents started and agents configured per task run"""
    _ddl(tx, V3)
    # Before the cascade every configured agent was started: both are the number of
    # agents that produced a candidate in the task run's last round.
    for r in tx.execute(
        "SELECT c.task_run AS tr, COUNT(DISTINCT c.agent) AS n FROM candidates c JOIN task_runs t ON t.id = c.task_run"
        " WHERE c.round = t.rounds - 1 GROUP BY c.task_run"
    ).fetchall():
        tx.execute("UPDATE task_runs SET agents_used=?, agents_configured=? WHERE id=?", (r["n"], r["n"], r["tr"]))


def m4_tampering(tx: Tx) -> None:
    """tampering: why a candidate may fake its test results, per candidate (JSON list)"""
    _ddl(tx, "ALTER TABLE candidates ADD COLUMN tampering TEXT NOT NULL DEFAULT '[]'")


def m5_spend(tx: Tx) -> None:
    """spend: every charge of a task run's budget as it happened (work a crash cut short included)"""
    _ddl(tx, """
CREATE TABLE IF NOT EXISTS spend (
    task_run TEXT NOT NULL, run TEXT NOT NULL, at TEXT NOT NULL, tokens {BIGINT} NOT NULL, cost {REAL}
);
CREATE INDEX IF NOT EXISTS spend_task_run ON spend(task_run)
""")


def m6_calls_in_flight(tx: Tx) -> None:
    """spend: a model call's row is written as it is sent (in flight) and resolved with what it cost"""
    # Rows before this migration are charges of finished work: none was in flight.
    _ddl(tx, """
ALTER TABLE spend ADD COLUMN call_id TEXT;
ALTER TABLE spend ADD COLUMN model TEXT;
ALTER TABLE spend ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0
""")


def m7_test_files(tx: Tx) -> None:
    """test_files: the test and pytest-configuration files each candidate's change touches (JSON list)"""
    _ddl(tx, "ALTER TABLE candidates ADD COLUMN test_files TEXT NOT NULL DEFAULT '[]'")
    # Escalation packets have listed them since before this column existed: take them from there
    # rather than leave '[]' (which would say "none") on candidates a human was shown them for.
    for e in tx.execute("SELECT task_run, round, packet FROM escalations").fetchall():
        try:
            packet = json.loads(e["packet"])
        except (TypeError, ValueError):
            continue
        for c in packet.get("candidates") or [] if isinstance(packet, dict) else []:
            files = c.get("test_files") if isinstance(c, dict) else None
            if files and isinstance(files, list) and c.get("agent"):
                tx.execute("UPDATE candidates SET test_files=? WHERE task_run=? AND round=? AND agent=?",
                           (json.dumps([str(f) for f in files]), e["task_run"], e["round"], c["agent"]))


def m8_cost_known(tx: Tx) -> None:
    """candidates.cost_known: when cost is NULL (unknown), what is known to have been spent (a lower bound)"""
    # Rows before this migration keep NULL: an unknown cost with no known part, as they were read.
    _ddl(tx, "ALTER TABLE candidates ADD COLUMN cost_known {REAL}")


MIGRATIONS: list[Callable[[Tx], None]] = [m1_core, m2_figures, m3_agents_used, m4_tampering, m5_spend,
                                          m6_calls_in_flight, m7_test_files, m8_cost_known]
SCHEMA_VERSION = len(MIGRATIONS)


def version_of(tx: Tx) -> int:
    """The schema version of an open ledger (0: empty)."""
    tables = tx.tables()
    if "schema_version" in tables:
        row = tx.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        if row and row["v"] is not None:
            return int(row["v"])
    if "meta" in tables:
        row = tx.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row:
            return int(row["value"])
    return 1 if "runs" in tables else 0


def _refuse_newer(found: int, where: str) -> None:
    if found > SCHEMA_VERSION:
        raise LedgerError(
            f"{where} was written by a newer crossreview (ledger schema {found}; this crossreview knows "
            f"schemas up to {SCHEMA_VERSION}): upgrade crossreview (pip install -U crossreview) or pass "
            f"another --ledger"
        )


def migrate(backend) -> tuple[int, int]:
    """Bring the ledger to SCHEMA_VERSION; returns (version found, version now)."""
    where = backend.describe()
    with backend.transaction(write=False) as tx:
        found = version_of(tx)
    _refuse_newer(found, where)
    if found == SCHEMA_VERSION:
        return found, found
    with backend.transaction(write=True) as tx:
        tx.lock_for_migration()
        found = version_of(tx)  # another process may have migrated meanwhile
        _refuse_newer(found, where)
        if found == SCHEMA_VERSION:
            return found, found
        for number in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[number - 1](tx)
        now = utcnow().isoformat()
        for number in range(1, SCHEMA_VERSION + 1):
            doc = (MIGRATIONS[number - 1].__doc__ or "").strip()
            if number <= found:
                doc += " (applied before versions were recorded)" if found < 2 else ""
            tx.insert("schema_version", {"version": number, "applied": now, "description": doc}, conflict="ignore")
        tx.insert("meta", {"key": "schema_version", "value": str(SCHEMA_VERSION)}, conflict="replace", key=("key",))
    return found, SCHEMA_VERSION
