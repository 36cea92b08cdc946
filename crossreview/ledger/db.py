"""Where a ledger lives and how to talk to it: SQLite files and PostgreSQL URLs.

Everything above this module writes one SQL dialect: SQLite's, with ``?``
placeholders and explicit column lists. The PostgreSQL backend translates the
placeholders; the few statements that differ (``INSERT OR IGNORE``, upserts,
column types) are spelled through :class:`Tx` helpers and the type names in
:data:`TYPES`.

Both backends open one connection per transaction: nothing is shared between
threads, and a process that dies holds no lock. psycopg is imported only when
a PostgreSQL URL is used.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

_URL_RE = re.compile(r"^(postgres|postgresql)://", re.IGNORECASE)
# click.Path / pathlib squeeze "//" to "/": postgresql://h/db arrives as postgresql:/h/db,
# sometimes after a directory (suite_dir / "postgresql://...").
_MANGLED_RE = re.compile(r"(?:^|/)(postgres|postgresql):/(?!/)(.*)$", re.IGNORECASE)


class LedgerError(Exception):
    """The ledger cannot be opened or used."""


class LedgerURL:
    """A PostgreSQL ledger location: prints without its password, and ``exists()``
    (so code written for ledger files accepts it)."""

    def __init__(self, url: str):
        self.url = url

    def exists(self) -> bool:
        return True

    def redacted(self) -> str:
        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
        return self.url

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"LedgerURL({self.redacted()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LedgerURL) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __fspath__(self) -> str:  # pragma: no cover - a URL is no file
        raise TypeError(f"{self.redacted()} is a PostgreSQL URL, not a file")


def is_url(location: Any) -> bool:
    """True for a PostgreSQL URL (also one that went through pathlib)."""
    if isinstance(location, LedgerURL):
        return True
    text = str(location)
    return bool(_URL_RE.match(text) or _MANGLED_RE.search(text))


def parse_location(location: Any) -> Path | LedgerURL:
    """A ledger file path, or a :class:`LedgerURL` for ``postgresql://`` (and ``postgres://``)."""
    if isinstance(location, LedgerURL):
        return location
    text = str(location)
    if _URL_RE.match(text):
        return LedgerURL(text)
    m = _MANGLED_RE.search(text)
    if m:
        return LedgerURL(f"{m.group(1)}://{m.group(2)}")
    return Path(location)


# --- SQL types per dialect ------------------------------------------------------

TYPES = {
    "sqlite": {"REAL": "REAL", "BIGINT": "INTEGER", "INT": "INTEGER", "TEXT": "TEXT"},
    "postgresql": {"REAL": "DOUBLE PRECISION", "BIGINT": "BIGINT", "INT": "INTEGER", "TEXT": "TEXT"},
}


class Result:
    """Rows of one statement as plain dicts."""

    def __init__(self, rows: list[dict[str, Any]], rowcount: int = -1):
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> dict[str, Any] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def __iter__(self):
        return iter(self._rows)


class Tx:
    """One open transaction on either backend."""

    dialect = "sqlite"

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:  # pragma: no cover - interface
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:  # pragma: no cover
        raise NotImplementedError

    def insert(self, table: str, values: dict[str, Any], *, conflict: str | None = None,
               key: Sequence[str] = ()) -> None:
        """INSERT ``values``; ``conflict``: None (fail), "ignore" (keep the old row) or
        "replace" (overwrite the old row's given columns; ``key`` names the unique key)."""
        cols = list(values)
        marks = ",".join("?" for _ in cols)
        names = ",".join(cols)
        if conflict is None:
            sql = f"INSERT INTO {table}({names}) VALUES ({marks})"
        elif conflict == "ignore":
            sql = f"INSERT INTO {table}({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        elif conflict == "replace":
            updates = ",".join(f"{c}=excluded.{c}" for c in cols if c not in key)
            sql = f"INSERT INTO {table}({names}) VALUES ({marks}) ON CONFLICT ({','.join(key)}) DO UPDATE SET {updates}"
        else:  # pragma: no cover
            raise ValueError(conflict)
        self.execute(sql, [values[c] for c in cols])

    def insert_many(self, table: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            marks = ",".join("?" for _ in cols)
            self.executemany(f"INSERT INTO {table}({','.join(cols)}) VALUES ({marks})", rows)

    def tables(self) -> set[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def columns(self, table: str) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def lock_for_migration(self) -> None:
        """Hold off every other process that would migrate the same ledger."""


class _SQLiteTx(Tx):
    dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:
        cur = self.db.execute(sql, tuple(args))
        rows = [dict(r) for r in cur.fetchall()] if cur.description else []
        return Result(rows, cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def tables(self) -> set[str]:
        return {r["name"] for r in self.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns(self, table: str) -> list[str]:
        return [r["name"] for r in self.execute(f"PRAGMA table_info({table})")]


class SQLiteBackend:
    """A ledger file: WAL mode, a 60 s busy timeout, BEGIN IMMEDIATE per transaction,
    so two processes writing at once queue instead of failing or losing a write."""

    dialect = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._checked = False

    def describe(self) -> str:
        return str(self.path)

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc}") from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=60000")
            if not self._checked:
                self._refuse_foreign(db)
                self._checked = True
            self._wal(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise LedgerError(f"cannot use ledger {self.path}: {exc}") from None
        return db

    def _refuse_foreign(self, db: sqlite3.Connection) -> None:
        """A SQLite file of another program (tables, none of them the ledger's) is refused before
        anything is written to it: not even the switch to WAL, let alone the ledger's tables."""
        tables = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                        if not r[0].startswith("sqlite_"))
        if tables and not {"runs", "meta", "schema_version"} & set(tables):
            db.close()
            raise LedgerError(
                f"{self.path} is not a crossreview ledger (it holds other tables: {', '.join(tables[:5])}"
                f"{', …' if len(tables) > 5 else ''}); it was left untouched: pass a ledger file, or a new path"
            )

    @staticmethod
    def _wal(db: sqlite3.Connection) -> None:
        """Switch the file to WAL once. The switch needs the file to itself and SQLite answers
        "locked" at once (no busy wait) while another process has it open: retry, up to 60 s."""
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        deadline = time.monotonic() + 60
        delay = 0.01
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        db = self._open()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SQLiteTx(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"ledger {self.path}: {exc}") from None
        finally:
            db.close()


class _PgTx(Tx):
    dialect = "postgresql"

    def __init__(self, conn: Any):
        self.conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        # Our statements hold no literal '?' or '%': placeholders translate one to one.
        return sql.replace("?", "%s")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:
        cur = self.conn.execute(self._sql(sql), tuple(args))
        rows = list(cur.fetchall()) if cur.description else []
        return Result(rows, cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    def tables(self) -> set[str]:
        rows = self.execute("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {r["name"] for r in rows}

    def columns(self, table: str) -> list[str]:
        rows = self.execute(
            "SELECT column_name AS name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [r["name"] for r in rows]

    def lock_for_migration(self) -> None:
        # Released at the end of the transaction: concurrent openers migrate one at a time.
        self.execute("SELECT pg_advisory_xact_lock(7236411702)")


class PostgresBackend:
    """A ledger in a PostgreSQL database (psycopg 3; ``pip install 'crossreview[postgres]'``)."""

    dialect = "postgresql"

    def __init__(self, url: LedgerURL):
        self.url = url
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise LedgerError(
                f"{url} is a PostgreSQL ledger, which needs psycopg: pip install 'crossreview[postgres]'"
            ) from None

    def describe(self) -> str:
        return self.url.redacted()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        import psycopg
        from psycopg.rows import dict_row

        try:
            conn = psycopg.connect(self.url.url, row_factory=dict_row, connect_timeout=30)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot connect to ledger {self.url}: {str(exc).strip()}") from None
        try:
            with conn.transaction():
                yield _PgTx(conn)
        except psycopg.Error as exc:
            raise LedgerError(f"ledger {self.url}: {str(exc).strip()}") from None
        finally:
            conn.close()


def open_backend(location: Any) -> SQLiteBackend | PostgresBackend:
    loc = parse_location(location)
    if isinstance(loc, LedgerURL):
        return PostgresBackend(loc)
    return SQLiteBackend(loc)
