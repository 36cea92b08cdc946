"""Crash safety: SIGKILL at many points of a run, then `crossreview resume`.

The test hook CROSSREVIEW_TEST_CRASH_AT (crossreview/crashpoints.py) kills the
run with SIGKILL at a named point. Before resuming, the checkpoint says which
nodes had finished; after resuming, none of them ran again (their agents,
reviewers and test runs were not started a second time), the ledger holds
exactly one run with every row it should have, and no worktree or work
branch is left behind. Everything runs inside the sandbox (the counting
scripts write through `sandbox_writable`).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (KILL_MOMENTS, cli_env, git_branches, killing_bwrap, live_processes_naming, make_task,
                      wait_until_none_left, write)

from crossreview import sandbox
from crossreview.worktrees import find_orphans

POINTS = [
    "prepare:after",
    "solve:a:before",
    "solve:b:after-agent",
    "verify:a:after",
    "review:a:after",
    "decide:after",
    "holdout:after",
    "record:before-ledger",
    "record:after-ledger",
    "task:before-cleanup",
]


def _counter(counts: Path, key: str) -> str:
    return (f"import pathlib\n"
            f"with open(pathlib.Path({str(counts)!r}) / ({key} + '.count'), 'a') as fh:\n"
            f"    fh.write('run\\n')\n")


def _suite(tmp_path: Path, b_args: str = "") -> dict:
    counts = tmp_path / "counts"
    counts.mkdir()
    suite = tmp_path / "suite"
    tests = _counter(counts, "'verify-' + pathlib.Path.cwd().name") + (
        "from calc import add\n\n"
        "def test_small():\n    assert add(1, 2) == 3\n\n"
        "def test_negative():\n    assert add(-1, -1) == -2\n")
    holdout = _counter(counts, "'holdout-' + pathlib.Path.cwd().name") + (
        "from calc import add\n\ndef test_big():\n    assert add(10**6, 1) == 10**6 + 1\n")
    make_task(suite, tests={"test_add.py": tests}, holdout={"test_holdout.py": holdout})
    agent = write(tmp_path / "agent.py", _counter(counts, "__import__('os').environ['CROSSREVIEW_AGENT']") + (
        "import os, sys\n"
        "good = 'def add(a, b):\\n    return a + b\\n'\n"
        "bad = 'def add(a, b):\\n    return a * b\\n'\n"
        "pathlib.Path('calc.py').write_text(good if os.environ['CROSSREVIEW_AGENT'] == 'a' else bad)\n"
        "if os.environ.get('CROSSREVIEW_TEST_LINGER'):\n"  # set by tests that show what was left running
        "    __import__('time').sleep(300)\n"))
    reviewer = write(tmp_path / "reviewer.py", _counter(counts, "'review-' + pathlib.Path.cwd().name.split('-')[1]") + (
        "import json, os\n"
        "tests = json.load(open(os.environ['CROSSREVIEW_TESTS_FILE']))\n"
        "ok = bool(tests and tests['all_passed'])\n"
        "print(json.dumps({'verdict': 'approve' if ok else 'reject', 'confidence': 0.9, 'concerns': [],"
        " 'usage': {'tokens_in': 0, 'tokens_out': 0, 'cost': 0.0}}))\n"))
    write(suite / "crossreview.toml", (
        f'agents = ["a=command:{{python}} {agent}", "b=command:{{python}} {agent} {b_args}"]\n'
        f'reviewers = ["command:{{python}} {reviewer}"]\n'
        f'sandbox_writable = ["{counts}"]\n'))
    return {"suite": suite, "counts": counts, "state": tmp_path / ".crossreview", "tmp": tmp_path}


def _counts(counts: Path) -> dict[str, int]:
    return {f.stem: len(f.read_text().splitlines()) for f in counts.glob("*.count")}


def _finished(state: Path, task_run: str) -> set[tuple[str, str | None]]:
    """(node, agent) of every node whose result the checkpoint holds (a finished superstep or a saved write)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    db = state / "checkpoints.db"
    if not db.exists():
        return set()
    with SqliteSaver.from_conn_string(str(db)) as saver:
        tup = saver.get_tuple({"configurable": {"thread_id": task_run}})
    if tup is None:
        return set()
    events = list(tup.checkpoint.get("channel_values", {}).get("events") or [])
    events += [e for (_task, channel, value) in (tup.pending_writes or []) if channel == "events" for e in value]
    return {(e["node"], e["agent"]) for e in events}


def _rows(state: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(state / "ledger.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _crossreview(s: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossreview", *args], cwd=s["tmp"], env=cli_env(env),
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)


@pytest.fixture
def restore_sandbox_settings():
    from crossreview import sandbox

    old = sandbox.current_settings()
    yield
    sandbox.configure(old)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_a_point_then_resume_loses_nothing(point, tmp_path, restore_sandbox_settings):
    s = _suite(tmp_path)
    crashed = _crossreview(s, "run", str(s["suite"]), "--json", env={"CROSSREVIEW_TEST_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-2000:])
    # whatever was running in the sandbox died with the run (bwrap --die-with-parent)
    deadline = time.monotonic() + 10
    while live_processes_naming(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(live_processes_naming(str(tmp_path)).values()) == []
    [(run,)] = _rows(s["state"], "SELECT id FROM runs")
    task_run = f"{run}/add"
    done = _finished(s["state"], task_run)
    before = _counts(s["counts"])

    # `crossreview resume RUN`, in this process (the command line is a thin face over this call;
    # tests/test_resume.py drives it as a command)
    from crossreview.runner import resume_run

    outcome = resume_run(run, state_dir=s["state"])
    assert outcome.exit_code == 0, outcome
    [task] = outcome.results
    assert (task.decision, task.winner) == ("accepted", "a"), task
    after = _counts(s["counts"])

    # 0 finished results lost: nothing the checkpoint held ran again.
    keys = {"solve": "{agent}", "verify": "verify-{agent}", "review": "review-{agent}"}
    for node, agent in done:
        if node in keys:
            key = keys[node].format(agent=agent)
            assert after.get(key) == before.get(key), f"{node} of {agent} finished before the kill but ran again"
        if node == "holdout":
            assert all(after.get(f"holdout-{x}") == before.get(f"holdout-{x}") for x in "ab")
    # and everything ran exactly as often as a run that never crashed, but for the one step that was cut
    assert all(after.get(k, 0) >= 1 for k in ("a", "b", "verify-a", "verify-b", "review-a", "review-b"))

    # The ledger: one run, one task run, every row once.
    assert _rows(s["state"], "SELECT status FROM runs") == [("finished",)]
    assert _rows(s["state"], "SELECT status, decision, winner FROM task_runs") == [("done", "accepted", "a")]
    assert _rows(s["state"], "SELECT count(*) FROM candidates") == [(2,)]
    assert _rows(s["state"], "SELECT count(*) FROM verdicts") == [(2,)]
    assert _rows(s["state"], "SELECT count(*) FROM decisions") == [(1,)]
    assert _rows(s["state"], "SELECT suite, count(*) FROM test_outcomes GROUP BY suite ORDER BY suite") == [
        ("holdout", 2), ("tests", 4)]
    events = _rows(s["state"], "SELECT node, agent FROM events ORDER BY node, agent")
    assert len(events) == len(set(events)) == 10, events  # prepare, 2 solve, 2 verify, 2 review, decide, holdout, record

    # Nothing left behind: no worktree, no work branch; the accepted branch kept.
    assert find_orphans(s["state"]) == []
    assert not any((s["state"] / "worktrees").glob("r-*"))
    branches = git_branches(s["state"] / "repos" / "add.git")
    assert not [b for b in branches if b.startswith("crossreview/work/")]
    assert f"crossreview/{task_run}" in branches


@pytest.mark.parametrize("moment", KILL_MOMENTS)
def test_sigkill_while_a_sandbox_starts_leaves_nothing_running(moment, tmp_path, restore_sandbox_settings):
    """The kill lands while agent b's sandbox starts, in each window bwrap's --die-with-parent
    leaves open (conftest.killing_bwrap holds it open): nothing of b goes on running or stays
    blocked, and resume finishes the run."""
    if not sandbox.availability()[0]:
        pytest.skip(f"bubblewrap cannot run here: {sandbox.availability()[1]}")
    marker = "crb" + os.urandom(4).hex()
    s = _suite(tmp_path, b_args=marker)
    crossreview_itself = f"crossreview run {s['suite']}"
    bwrap = killing_bwrap(tmp_path / "bwrap", marker, crossreview_itself, moment)
    crashed = _crossreview(s, "run", str(s["suite"]), "--json", env={"CROSSREVIEW_BWRAP": str(bwrap)})
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-2000:])
    assert wait_until_none_left(str(tmp_path)) == []

    from crossreview.runner import resume_run

    [(run,)] = _rows(s["state"], "SELECT id FROM runs")
    outcome = resume_run(run, state_dir=s["state"])
    assert outcome.exit_code == 0, outcome
    [task] = outcome.results
    assert (task.decision, task.winner) == ("accepted", "a"), task
    assert find_orphans(s["state"]) == []


_DAEMON_AGENT = """
import os, pathlib, signal, subprocess, sys, time


def ppid(pid):
    return int(open(f'/proc/{{pid}}/stat').read().rsplit(')', 1)[1].split()[1])


def cmdline(pid):
    return open(f'/proc/{{pid}}/cmdline', 'rb').read().replace(b'\\0', b' ').decode(errors='replace')


flag = pathlib.Path({flag!r})
if flag.exists():  # the resumed run: an honest, wrong answer
    pathlib.Path('calc.py').write_text('def add(a, b):\\n    return a * b\\n')
    sys.exit(0)
flag.write_text('')
# a daemon: its own session, out of reach of a kill of the agent's process group
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {marker!r}], start_new_session=True)
crossreview = os.getppid()
while {target!r} not in cmdline(crossreview):
    crossreview = ppid(crossreview)
# then crossreview and its undertaker die at once, as the OOM killer or a power cut takes them
for entry in os.listdir('/proc'):
    try:
        if entry.isdigit() and ppid(entry) == crossreview and 'undertaker.py' in cmdline(entry):
            os.kill(int(entry), signal.SIGKILL)
    except OSError:
        pass
os.kill(crossreview, signal.SIGKILL)
time.sleep(300)
"""


@pytest.mark.parametrize("cleaner", ["gc", "resume"])
def test_what_a_killed_run_left_running_is_stopped_by_gc_and_resume(cleaner, tmp_path, restore_sandbox_settings):
    """When crossreview and its undertaker are killed together, what the commands started is
    left running (here an unsandboxed agent's daemon, in a session of its own): `gc` and
    `resume` stop it (it carries CROSSREVIEW_OWNER, and its owner is dead)."""
    marker = "crdaemon" + os.urandom(4).hex()
    s = _suite(tmp_path)
    agent = write(tmp_path / "daemon_agent.py", _DAEMON_AGENT.format(
        flag=str(tmp_path / "first-run-done"), marker=marker, target=f"crossreview run {s['suite']}"))
    cfg = s["suite"] / "crossreview.toml"
    cfg.write_text(cfg.read_text().replace(
        '"b=command:{python} ' + str(tmp_path / "agent.py") + ' "', f'"b=command:{{python}} {agent}"'))
    assert str(agent) in cfg.read_text()
    crashed = _crossreview(s, "run", str(s["suite"]), "--json", "--sandbox", "off")
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-2000:])
    assert live_processes_naming(marker), "the daemon should have outlived crossreview"
    try:
        if cleaner == "gc":
            res = _crossreview(s, "gc")
            assert res.returncode == 0 and "; stopped " in res.stdout, res.stdout + res.stderr  # the agent, its daemon
        else:
            from crossreview.runner import resume_run

            [(run,)] = _rows(s["state"], "SELECT id FROM runs")
            outcome = resume_run(run, state_dir=s["state"], sandbox="off")
            assert outcome.exit_code == 0 and outcome.results[0].winner == "a", outcome
    finally:
        left = wait_until_none_left(marker) + wait_until_none_left(str(tmp_path / "daemon_agent.py"))
    assert left == []
