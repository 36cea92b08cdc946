"""The ledger's schema: versions, migrations from the core issue's schema, refusal of newer ledgers."""

from __future__ import annotations

from contextlib import contextmanager

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import cli_env
from crossreview.ledger import SCHEMA_VERSION, Ledger, LedgerError
from crossreview.ledger.figures import compute

V1_DUMP = Path(__file__).parent / "data" / "ledger_v1.sql"
"""A ledger written by crossreview 0.1 (schema 1): `crossreview run tasks/` with alice and
shortcut (one escalation, then `show` and `decide --pick alice`), then a run of oracle and noop."""

V1_TABLES = ("meta", "runs", "task_runs", "candidates", "test_outcomes", "verdicts", "decisions", "escalations", "events")


def sqlite_file(path: Path, script: str) -> Path:
    """A SQLite file at ``path`` made by running ``script`` (committed, closed)."""
    db = sqlite3.connect(path)
    db.executescript(script)
    db.close()
    return path


def make_v1(path: Path) -> Path:
    return sqlite_file(path, V1_DUMP.read_text())


def snapshot(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row of every v1 table, in the v1 columns, in a stable order."""
    db = sqlite3.connect(path)
    try:
        if columns is None:
            columns = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in V1_TABLES}
        out = {}
        for t, cols in columns.items():
            names = ",".join(cols)
            out[t] = db.execute(f"SELECT {names} FROM {t} ORDER BY {names}").fetchall()
        return out
    finally:
        db.close()


def v1_columns(path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(path)
    try:
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in V1_TABLES}
    finally:
        db.close()


def test_a_new_ledger_is_at_the_current_version(tmp_path):
    led = Ledger(tmp_path / "new.db")
    assert (led.upgraded_from, led.version) == (0, SCHEMA_VERSION)
    with led.connect(write=False) as db:
        rows = db.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
        meta = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert [r["version"] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert all(r["description"] for r in rows)
    assert meta["value"] == str(SCHEMA_VERSION)  # what crossreview 0.1 checks before writing
    again = Ledger(tmp_path / "new.db")
    assert again.upgraded_from == SCHEMA_VERSION


def test_migration_from_the_core_schema_keeps_every_row(tmp_path):
    path = make_v1(tmp_path / "v1.db")
    cols = v1_columns(path)
    before = snapshot(path, cols)
    assert len(before["task_runs"]) == 10 and len(before["test_outcomes"]) > 300
    led = Ledger(path)
    assert (led.upgraded_from, led.version) == (1, SCHEMA_VERSION)
    after = snapshot(path, cols)
    for table in V1_TABLES:
        if table == "meta":
            continue
        assert after[table] == before[table], table
    assert dict(after["meta"])["schema_version"] == str(SCHEMA_VERSION)
    # The new columns are filled in for the old rows.
    with led.connect(write=False) as db:
        trs = db.execute("SELECT id, agreement, agreement_pick FROM task_runs").fetchall()
        suites = {r["suite"] for r in db.execute("SELECT suite FROM runs")}
        history = db.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
    assert all(t["agreement"] is not None and t["agreement_pick"] for t in trs)
    assert suites == {"tasks"}
    assert [h["version"] for h in history] == list(range(1, SCHEMA_VERSION + 1))
    assert "before versions were recorded" in history[0]["description"]
    # Migration 3: every old task run started all its agents (no cascade then).
    with led.connect(write=False) as db:
        used = db.execute("SELECT t.agents_used AS used, t.agents_configured AS conf, COUNT(DISTINCT c.agent) AS n"
                          " FROM task_runs t JOIN candidates c ON c.task_run = t.id AND c.round = t.rounds - 1"
                          " GROUP BY t.id").fetchall()
    assert used and all(r["used"] == r["conf"] == r["n"] for r in used)
    # The old ledger's figures: 10 task runs, one escalation decided by a human.
    f = compute(led)
    assert f["counts"]["task_runs"] == 10 and f["interventions"]["escalated"] == 1
    assert f["human_time"]["decided"] == 1 and f["human_time"]["median_minutes"] > 0
    # The old reading API still works on the migrated rows.
    [esc] = led.escalations_of("r-7ab73c26/roman_numerals")
    assert (esc["action"], esc["pick"]) == ("pick", "alice")
    assert led.get_escalation(esc["id"])["packet"]["task"] == "roman_numerals"
    assert len(led.candidate_rows("r-7ab73c26/fizzbuzz")) == 2


def test_migrating_twice_at_once_upgrades_once(tmp_path):
    path = make_v1(tmp_path / "v1.db")
    cols = v1_columns(path)
    before = snapshot(path, cols)
    script = textwrap.dedent(f"""
        import sys, time
        from crossreview.ledger import Ledger
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        led = Ledger({str(path)!r})
        print(led.upgraded_from, led.version)
    """)
    import time

    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=cli_env()) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = sorted(tuple(map(int, o[0].split())) for o in outs)
    # Exactly one process migrated; the others found the ledger already upgraded.
    assert results == [(1, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 3, results
    after = snapshot(path, cols)
    assert {t: after[t] for t in V1_TABLES if t != "meta"} == {t: before[t] for t in V1_TABLES if t != "meta"}
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")] == list(range(1, SCHEMA_VERSION + 1))
    db.close()


def _make_newer(path: Path) -> None:
    Ledger(path)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, '2099-01-01T00:00:00+00:00', 'from the future')",
               (SCHEMA_VERSION + 1,))
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()


def test_a_newer_ledger_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "future.db"
    _make_newer(path)
    before = path.read_bytes()
    with pytest.raises(LedgerError) as info:
        Ledger(path)
    msg = str(info.value)
    assert "newer crossreview" in msg and f"schema {SCHEMA_VERSION + 1}" in msg and "upgrade crossreview" in msg
    assert path.read_bytes() == before


def test_a_newer_ledger_known_only_by_meta_is_refused(tmp_path):
    newer = SCHEMA_VERSION + 1  # one past what this crossreview knows, whatever that is
    path = sqlite_file(tmp_path / "meta-only.db", "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                       f"INSERT INTO meta VALUES ('schema_version', '{newer}');")
    with pytest.raises(LedgerError, match=f"schema {newer}"):
        Ledger(path)


@pytest.mark.slow
def test_commands_refuse_a_newer_ledger_with_a_clear_message(cli, tmp_path):
    _make_newer(tmp_path / "future.db")
    for args in (["stats"], ["report", "-o", "r.html"], ["export"], ["inbox"]):
        res = cli(*args, "--ledger", "future.db")
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "newer crossreview" in res.stderr and "Traceback" not in res.stderr, args
    assert not (tmp_path / "r.html").exists()


def test_a_file_that_is_not_a_ledger_is_an_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("this is not a database, it is a shopping list\n" * 50)
    with pytest.raises(LedgerError, match="bad.db"):
        Ledger(bad)


@pytest.mark.slow
def test_commands_without_a_ledger_say_what_to_do(cli):
    for args in (["stats"], ["report"], ["export"]):
        res = cli(*args)
        assert res.returncode == 2 and "no ledger" in res.stderr and "crossreview run" in res.stderr


@pytest.mark.parametrize("role", ["source", "destination", "stats"])
def test_a_sqlite_file_of_another_program_is_refused_and_left_untouched(tmp_path, role):
    from crossreview.ledger.merge import merge_into

    other = sqlite_file(tmp_path / "app.db", "CREATE TABLE users (id INTEGER, name TEXT);"
                        "INSERT INTO users VALUES (1, 'ada');")
    before = other.read_bytes()
    with pytest.raises(LedgerError, match=r"app\.db is not a crossreview ledger .*users"):
        if role == "source":
            merge_into(Ledger(tmp_path / "team.db"), Ledger(other))
        elif role == "destination":
            merge_into(Ledger(other), Ledger(tmp_path / "a.db"))
        else:
            compute(Ledger(other))
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("app")) == ["app.db"]


def test_merging_an_older_ledger_reads_it_without_upgrading_it(tmp_path, cli):
    old = make_v1(tmp_path / "old.db")
    before = old.read_bytes()
    rows = snapshot(old)
    res = cli("merge", "old.db", "--ledger", "team.db")
    assert res.returncode == 0, res.stderr
    # An older crossreview still writing old.db would refuse it once upgraded: it is only read.
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("old")) == ["old.db"]
    assert snapshot(tmp_path / "team.db", v1_columns(old)) == {t: r for t, r in rows.items() if t != "meta"} | {
        "meta": snapshot(tmp_path / "team.db", {"meta": ["key", "value"]})["meta"]}
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    res = cli("merge", "empty.db", "--ledger", "team.db")
    assert res.returncode == 2 and "empty.db is empty, not a crossreview ledger" in res.stderr
    assert empty.read_bytes() == b""


@contextmanager
def _at_schema(path: Path, version: int):
    """A transaction on a new ledger at ``path`` made by the first ``version`` migrations only, recorded
    as that version (as an older crossreview left it), to add the old rows a migration test needs."""
    from crossreview.ledger import schema
    from crossreview.ledger.db import SQLiteBackend

    with SQLiteBackend(path).transaction() as tx:
        for migration in schema.MIGRATIONS[:version]:
            migration(tx)
        for number, migration in enumerate(schema.MIGRATIONS[:version], 1):  # the table is made by one of them
            tx.insert("schema_version", {"version": number, "applied": "2026-01-01T00:00:00+00:00",
                                         "description": migration.__doc__ or ""})
        tx.insert("meta", {"key": "schema_version", "value": str(version)}, conflict="replace", key=("key",))
        yield tx


def _ledger_at_schema_5(path: Path) -> Path:
    """A ledger as crossreview wrote it before model calls were journaled in flight (schema 5)."""
    with _at_schema(path, 5) as tx:
        tx.insert("runs", {"id": "r-old", "started": "2026-01-01T00:00:00+00:00", "status": "finished",
                           "config": "{}"})
        tx.insert("task_runs", {"id": "r-old/t", "run": "r-old", "task": "t", "task_path": "t",
                                "status": "running", "started": "2026-01-01T00:00:00+00:00"})
        tx.insert("spend", {"task_run": "r-old/t", "run": "r-old", "at": "2026-01-01T00:00:01+00:00",
                            "tokens": 150, "cost": 0.01})
    return path


def test_calls_in_flight_migrate_onto_a_schema_5_ledger_and_merge_with_the_spend(tmp_path, cli):
    old = _ledger_at_schema_5(tmp_path / "old.db")
    led = Ledger(old)
    assert (led.upgraded_from, led.version) == (5, SCHEMA_VERSION)
    # What schema 5 journaled was finished work, never a call in flight.
    db = sqlite3.connect(old)
    assert db.execute("SELECT tokens, cost, call_id, in_flight FROM spend").fetchall() == [(150, 0.01, None, 0)]
    db.close()
    led.record_call_started("r-old/t", "c1", "openai/x")   # killed while it waited
    led.record_call_started("r-old/t", "c2", "openai/x")
    led.record_spend("r-old/t", 30, 0.002, call_id="c2")   # answered
    assert led.spend_by_task_run()["r-old/t"].in_flight == 1

    res = cli("merge", "old.db", "--ledger", "team.db")
    assert res.returncode == 0, res.stderr
    team = sqlite3.connect(tmp_path / "team.db")
    assert sorted(team.execute("SELECT call_id, tokens, cost, model, in_flight FROM spend").fetchall(),
                  key=str) == sorted([(None, 150, 0.01, None, 0), ("c1", 0, None, "openai/x", 1),
                                      ("c2", 30, 0.002, "openai/x", 0)], key=str)
    team.close()
    cut = compute(Ledger(tmp_path / "team.db"))["cost"]["cut_short"]
    assert (cut["calls_in_flight"], cut["cost"], cut["tokens"]) == (1, None, 180)


def _ledger_at_schema_6(path: Path) -> Path:
    """A ledger as crossreview wrote it before candidates kept their test files (schema 6): a task run
    parked at an escalation whose packet lists them for one candidate, and one finished before that."""
    import json

    t0 = "2026-01-01T00:00:00+00:00"
    with _at_schema(path, 6) as tx:
        tx.insert("runs", {"id": "r-old", "started": t0, "status": "waiting", "config": "{}"})
        for tr, status in (("r-old/gate", "parked"), ("r-old/plain", "done")):
            tx.insert("task_runs", {"id": tr, "run": "r-old", "task": tr[6:], "task_path": tr[6:], "status": status,
                                    "decision": "accepted" if status == "done" else None, "started": t0})
            for agent in ("pr", "a"):
                tx.insert("candidates", {
                    "task_run": tr, "round": 0, "agent": agent, "spec": "x", "status": "ok", "tests_passed": 1,
                    "tests_total": 1, "files_changed": "[]", "lines_added": 1, "lines_removed": 0, "tokens_in": 0,
                    "tokens_out": 0, "calls": 0, "started": t0, "finished": t0, "seconds": 1.0, "diff": "",
                    "tampering": json.dumps(["conftest.py: adds or changes a conftest.py"] if agent == "pr" else []),
                })
        packet = {"task": "gate", "reason": "pr may fake its test results", "disagreements": [], "verdicts": [],
                  "candidates": [{"agent": "pr", "test_files": ["conftest.py (conftest.py)", "tests/test_new.py (new)"]},
                                 {"agent": "a", "test_files": []}]}
        tx.insert("escalations", {"id": "e-old", "task_run": "r-old/gate", "run": "r-old", "task": "gate", "round": 0,
                                  "reason": packet["reason"], "created": t0, "packet": json.dumps(packet)})
    return path


def test_test_files_migrate_onto_a_schema_6_ledger_from_the_packets_that_listed_them(tmp_path, cli):
    import json

    old = _ledger_at_schema_6(tmp_path / "old.db")
    led = Ledger(old)
    assert (led.upgraded_from, led.version) == (6, SCHEMA_VERSION)
    db = sqlite3.connect(old)
    kept = {(tr, a): json.loads(f) for tr, a, f in db.execute("SELECT task_run, agent, test_files FROM candidates")}
    assert kept == {("r-old/gate", "pr"): ["conftest.py (conftest.py)", "tests/test_new.py (new)"],
                    ("r-old/gate", "a"): [], ("r-old/plain", "pr"): [], ("r-old/plain", "a"): []}
    # Nothing else about the rows changed.
    assert db.execute("SELECT COUNT(*) FROM candidates WHERE tampering LIKE '%conftest%'").fetchone()[0] == 2
    db.close()
    res = cli("export", "--format", "jsonl", "--ledger", str(old))
    assert res.returncode == 0, res.stderr
    rows = {r["task_run"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["r-old/gate"]["test_files"] == {"pr": ["conftest.py (conftest.py)", "tests/test_new.py (new)"]}
    assert rows["r-old/plain"]["test_files"] == {}
