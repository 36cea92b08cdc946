"""The PostgreSQL ledger: same schema, same figures, against a real server started here.

The server is Debian's (postgresql package: .ci/run installs it), started from
/usr/lib/postgresql/*/bin in a temporary directory, listening only on a unix
socket there; as root it runs as ``nobody`` (PostgreSQL refuses to run as
root). Each test gets a database of its own. Where no server can be started,
the tests are skipped and say why.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import make_task
from test_ledger_concurrency import check_nothing_lost, run_writers
from test_ledger_figures import build_known, check_known_figures

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'crossreview[postgres]'")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of our own: yields a function making a fresh database URL."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) found: apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="crpg-", dir="/tmp"))  # short: unix socket paths are limited
    data, log = base / "data", base / "log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root and no runuser to start PostgreSQL as another user")
        shutil.chown(base, user="nobody")
        as_user = [runuser, "-u", "nobody", "--"]
    os.chmod(base, 0o700)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120, cwd=base)

    init = run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
               "--no-sync", "--no-instructions")
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot initialise a PostgreSQL cluster: {(init.stderr or init.stdout).strip()[-500:]}")
    opts = (f"-k {base} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections=200")
    start = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start")
    if start.returncode != 0:
        tail = log.read_text()[-800:] if log.exists() else start.stderr
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL: {tail.strip()}")
    admin_url = f"postgresql://postgres@/postgres?host={base}"

    def new_database() -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@/{name}?host={base}"

    try:
        yield new_database
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server()


def test_same_schema_and_migration_bookkeeping(pg_url):
    from crossreview.ledger import SCHEMA_VERSION, Ledger, LedgerURL

    led = Ledger(pg_url)
    assert isinstance(led.path, LedgerURL) and led.dialect == "postgresql"
    assert (led.upgraded_from, led.version) == (0, SCHEMA_VERSION)
    with led.connect(write=False) as db:
        tables = db.tables()
        versions = [r["version"] for r in db.execute("SELECT version FROM schema_version ORDER BY version")]
        pg_cols = {t: db.columns(t) for t in tables}
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    # The same tables and columns, in the same order, as a SQLite ledger.
    with tempfile.TemporaryDirectory() as d:
        lite = Ledger(Path(d) / "l.db")
        with lite.connect(write=False) as db:
            lite_cols = {t: db.columns(t) for t in db.tables()}
    assert pg_cols == lite_cols
    assert Ledger(pg_url).upgraded_from == SCHEMA_VERSION  # reopening migrates nothing


def test_known_answers_and_identical_figures(pg_url, tmp_path):
    from crossreview.ledger.figures import compute

    pg = compute(build_known(pg_url))
    check_known_figures(pg)
    lite = compute(build_known(tmp_path / "ledger.db"))
    for f in (pg, lite):
        f.pop("ledger")
    assert json.dumps(pg, sort_keys=True) == json.dumps(lite, sort_keys=True)


def test_public_api_round_trip(pg_url):
    from crossreview.ledger import Ledger
    from crossreview.models import HumanDecision

    led = build_known(pg_url)
    assert [e["id"] for e in led.inbox()] == ["e-t6"]
    esc = led.get_escalation("e-t6")
    assert esc["packet"]["task"] == "T6" and esc["decided"] is None
    led.mark_shown("e-t6")
    led.decide_escalation("e-t6", HumanDecision(action="reject", by="pg"))
    assert led.inbox() == []
    assert [e["action"] for e in led.escalations_of("r-beta/T6")] == ["reject"]
    assert led.get_run("r-alpha")["config"]["suite_dir"] == "/suites/alpha"
    assert [r["id"] for r in led.runs()] == ["r-beta", "r-alpha"]
    assert [t["task"] for t in led.task_runs("r-alpha")] == ["T1", "T2", "T3"]
    assert len(led.candidate_rows("r-alpha/T1")) == 3 and len(led.verdict_rows("r-alpha/T1")) == 6
    led.start_task_run("r-alpha/T1", "r-alpha", "T1", "/x", [], {})  # a resume keeps the row
    assert led.get_task_run("r-alpha/T1")["status"] == "done"
    led.set_task_run_status("r-alpha/T3", "error", "error", "boom")
    assert Ledger(led.path).get_task_run("r-alpha/T3")["error"] == "boom"


def test_a_newer_postgres_ledger_is_refused(pg_url):
    from crossreview.ledger import SCHEMA_VERSION, Ledger, LedgerError

    Ledger(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 'later', 'from the future')", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer crossreview"):
        Ledger(pg_url)


def test_concurrent_writers_lose_nothing(pg_url):
    from crossreview.ledger import Ledger

    run_writers(pg_url, writers=4, per_writer=20)
    check_nothing_lost(Ledger(pg_url), 4, 20)


def test_password_is_not_printed(pg_server):
    from crossreview.ledger import LedgerURL

    url = LedgerURL("postgresql://me:s3cret@db.example/ledger")
    assert "s3cret" not in str(url) and "me:***@db.example" in str(url)


@pytest.mark.slow
def test_the_command_line_runs_on_a_postgres_ledger(cli, suite, tmp_path, pg_url):
    make_task(suite, "good")
    make_task(suite, "bad", solution={"calc.py": "def add(a, b):\n    return a - b\n"})
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--ledger", pg_url, "--json")
    assert res.returncode == 1, res.stderr  # 'bad' is rejected by consensus
    doc = res.json()
    assert sorted(t["decision"] for t in doc["tasks"]) == ["accepted", "rejected"]
    assert not (tmp_path / ".crossreview" / "ledger.db").exists()  # nothing went to the default file
    stats = cli("stats", "--ledger", pg_url, "--json")
    assert stats.returncode == 0, stats.stderr
    f = stats.json()
    assert f["counts"]["task_runs"] == 2 and f["counts"]["accepted"] == 1 and f["ledger"].startswith("postgresql://")
    assert cli("inbox", "--ledger", pg_url, "--json").json() == {"escalations": []}
    rep = cli("report", "--ledger", pg_url, "-o", "pg.html")
    assert rep.returncode == 0 and (tmp_path / "pg.html").exists()
    exp = cli("export", "--ledger", pg_url)
    assert len(exp.stdout.splitlines()) == 2


def test_gate_and_record_human_share_one_postgresql_ledger(pg_url, tmp_path, cli):
    """The team's alternative to artifacts + merge: every CI job writes to one ledger by URL."""
    import json as _json
    import threading
    from http.server import ThreadingHTTPServer

    from fake_github import FakeGitHub, _handler
    from test_gate import SPLIT, gh_env, make_repo, outputs, pr_branch, review_event

    from crossreview.ledger import Ledger

    state = FakeGitHub()  # the fake_github fixture's server, started by hand beside the session-scoped pg_server
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_port}/api/v3"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        repo = make_repo(tmp_path)
        head = pr_branch(repo, "feature", SPLIT)
        r = cli("gate", "--base", "main", "--head", head, "--ledger", pg_url, cwd=repo, env=gh_env(tmp_path, api=state.url))
        assert r.returncode == 3, r.stdout + r.stderr
        esc = outputs(tmp_path)["escalation"]
        job = tmp_path / "human"
        job.mkdir()
        r = cli("gate", "--record-human", "--ledger", pg_url, "--json", cwd=job, env=review_event(job, state.url))
        assert r.returncode == 0 and _json.loads(r.stdout)["recorded"], r.stdout + r.stderr
    finally:
        server.shutdown()
        server.server_close()
    row = Ledger(pg_url).get_escalation(esc)
    assert (row["action"], row["pick"], row["decided_by"]) == ("pick", "pr", "github:lead")
    [tr] = Ledger(pg_url).task_runs(row["run"])
    assert (tr["status"], tr["decision"]) == ("done", "accepted")
