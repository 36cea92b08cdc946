"""Fold ledgers into one: every CI run of the gate writes its own, a team wants one set of figures.

Rows are copied by their keys, so merging the same ledger twice changes
nothing. A task run is taken whole (its candidates, outcomes, verdicts,
decisions, events, calls, spend) when the destination lacks it, or holds it
unfinished while the source has it finished. An escalation decided in one
ledger and open in the other (the gate parked it; `gate --record-human`
recorded the human on another machine) ends decided, and its parked task
run is closed with the human's decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlite3
import tempfile
from pathlib import Path

from .db import LedgerError, LedgerURL, SQLiteBackend, Tx, _SQLiteTx, parse_location

if TYPE_CHECKING:
    from . import Ledger

_CHILDREN = ("candidates", "test_outcomes", "verdicts", "decisions", "events", "calls", "spend")
_RUN_RANK = {"running": 0, "interrupted": 0, "waiting": 1, "error": 2, "finished": 2}
"""How far a suite run got: a merge keeps the furthest of two copies."""
_DECISION_COLS = ("first_shown", "decided", "decided_by", "action", "pick", "guide")


@dataclass
class MergeStats:
    """What one merge added."""

    runs: int = 0
    task_runs: int = 0
    escalations: int = 0
    decisions: int = 0
    """Escalations the destination had open and the source had decided."""
    sources: list[str] = field(default_factory=list)


def open_source(location, scratch: str | None = None) -> "Ledger":
    """A ledger to merge from, opened without writing to it.

    Opening a ledger upgrades an older one in place; a merge source is only read (a CI
    artifact, a colleague's ledger an older crossreview still writes), so an older SQLite
    source is upgraded in a copy under ``scratch`` (a temporary folder the caller removes).
    An empty file is no ledger; a newer one is refused as everywhere.
    """
    from . import Ledger
    from .schema import SCHEMA_VERSION, _refuse_newer, version_of

    loc = parse_location(location)
    if isinstance(loc, LedgerURL):
        return Ledger(loc)
    # Read the version as a plain reader: the backend would switch the file to WAL (a write).
    src = sqlite3.connect(loc, timeout=60)
    src.row_factory = sqlite3.Row
    try:
        SQLiteBackend(loc)._refuse_foreign(src)  # another program's database: says so, names its tables
        found = version_of(_SQLiteTx(src))
        if found == 0:
            raise LedgerError(f"{loc} is empty, not a crossreview ledger: give the ledger.db files to fold in")
        _refuse_newer(found, str(loc))
        if found == SCHEMA_VERSION:
            return Ledger(loc)
        folder = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="crossreview-merge-"))
        copy = folder / f"{len(list(folder.iterdir()))}-{loc.name}"
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot use ledger {loc}: {exc}") from None
    finally:
        src.close()
    led = Ledger(copy)
    led.path = loc  # named as given, though read from the upgraded copy
    return led


def _cols(rows: list[dict], dest_cols: list[str]) -> list[str]:
    return [c for c in rows[0] if c in dest_cols] if rows else []


def _copy_rows(db: Tx, table: str, rows: list[dict], dest_cols: list[str]) -> None:
    cols = _cols(rows, dest_cols)
    if cols:
        db.insert_many(table, cols, [[r[c] for c in cols] for r in rows])


def merge_into(dest: "Ledger", source: "Ledger") -> MergeStats:
    """Copy what ``source`` has and ``dest`` lacks into ``dest``, in one transaction."""
    stats = MergeStats(sources=[str(source.path)])
    with source.connect(write=False) as src:
        data = {t: src.execute(f"SELECT * FROM {t}").fetchall()
                for t in ("runs", "task_runs", "escalations", *_CHILDREN)}
    children: dict[str, dict[str, list[dict]]] = {t: {} for t in _CHILDREN}
    for t in _CHILDREN:
        for r in data[t]:
            children[t].setdefault(r["task_run"], []).append(r)
    with dest.connect() as db:
        cols = {t: db.columns(t) for t in ("runs", "task_runs", "escalations", *_CHILDREN)}
        have_runs = {r["id"]: r["status"] for r in db.execute("SELECT id, status FROM runs").fetchall()}
        for r in data["runs"]:
            if r["id"] not in have_runs:
                db.insert("runs", {c: r[c] for c in r if c in cols["runs"]})
                stats.runs += 1
            elif _RUN_RANK.get(r["status"], 0) > _RUN_RANK.get(have_runs[r["id"]], 0):
                # Killed here, resumed (or decided) there: the run is as far as the furthest copy got.
                db.execute("UPDATE runs SET status=?, finished=?, pid=? WHERE id=?",
                           (r["status"], r["finished"], r["pid"], r["id"]))
        have_trs = {r["id"]: r["status"] for r in db.execute("SELECT id, status FROM task_runs").fetchall()}
        for r in data["task_runs"]:
            status = have_trs.get(r["id"])
            if status is not None and (status == "done" or r["status"] != "done"):
                continue  # the destination's is as finished as this one
            if status is not None:
                db.execute("DELETE FROM task_runs WHERE id=?", (r["id"],))
                for t in _CHILDREN:
                    db.execute(f"DELETE FROM {t} WHERE task_run=?", (r["id"],))
            db.insert("task_runs", {c: r[c] for c in r if c in cols["task_runs"]})
            for t in _CHILDREN:
                _copy_rows(db, t, children[t].get(r["id"], []), cols[t])
            stats.task_runs += 1
        have_escs = {r["id"]: r for r in db.execute("SELECT * FROM escalations").fetchall()}
        for e in data["escalations"]:
            mine = have_escs.get(e["id"])
            if mine is None:
                db.insert("escalations", {c: e[c] for c in e if c in cols["escalations"]})
                stats.escalations += 1
                mine = e
            elif mine["decided"] is None and e["decided"] is not None:
                db.execute(f"UPDATE escalations SET {', '.join(c + '=?' for c in _DECISION_COLS)} WHERE id=?",
                           [*(e[c] for c in _DECISION_COLS), e["id"]])
                stats.decisions += 1
                mine = {**mine, **{c: e[c] for c in _DECISION_COLS}}
            if '"imported": true' in (mine.get("packet") or "") and '"imported": true' not in (e.get("packet") or ""):
                db.execute("UPDATE escalations SET packet=?, reason=? WHERE id=?", (e["packet"], e["reason"], e["id"]))
            if mine.get("action") in ("pick", "reject"):
                accepted = mine["action"] == "pick"
                db.execute(
                    "UPDATE task_runs SET status='done', decision=?, winner=?, reason=?, finished=? "
                    "WHERE id=? AND status='parked'",
                    ("accepted" if accepted else "rejected", mine["pick"] if accepted else None,
                     f"decided by {mine['decided_by']} ({mine['id']})", mine["decided"], mine["task_run"]),
                )
        # A run left waiting whose escalations are all decided now (here or by the source) is over.
        for r in data["runs"]:
            row = db.execute("SELECT status FROM runs WHERE id=?", (r["id"],)).fetchone()
            if row is None or row["status"] != "waiting":
                continue
            trs = db.execute("SELECT status, decision, finished FROM task_runs WHERE run=?", (r["id"],)).fetchall()
            if any(t["status"] in ("parked", "running") for t in trs):
                continue
            status = "error" if any(t["decision"] == "error" or t["status"] == "error" for t in trs) else "finished"
            db.execute("UPDATE runs SET status=?, finished=? WHERE id=?",
                       (status, max((t["finished"] for t in trs if t["finished"]), default=None), r["id"]))
    return stats
