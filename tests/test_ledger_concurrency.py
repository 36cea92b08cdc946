"""Several processes writing one ledger at once lose nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import EXAMPLE_TASKS, cli_env, ledger_rows

WRITER = textwrap.dedent("""
    # One process of the stress test: start a run and write N task runs, each whole,
    # every third one parked at an escalation first (as a real run does).
    import sys, time
    from datetime import timedelta
    from crossreview.ledger import Ledger
    from crossreview.models import (Candidate, Decision, Escalation, HumanDecision, TaskResult, TestOutcome,
                                    TestReport, Usage, Verdict, utcnow)

    location, who, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    led = Ledger(location)
    time.sleep(max(0.0, start - time.time()))
    run = f"r-{who}"
    led.start_run(run, {"suite_dir": "/stress/" + who})
    for i in range(n):
        tr = f"{run}/t{i:03d}"
        led.start_task_run(tr, run, f"t{i:03d}", "/stress", ["stress"], {})
        now = utcnow()
        rep = TestReport(outcomes=[TestOutcome(name="t", outcome="passed")], exit_code=0)
        cands = [Candidate(agent=a, spec="oracle", diff="+x\\n" * 50, tests=rep, holdout=rep,
                           usage=Usage(tokens_in=10, tokens_out=5, cost=0.001, calls=1)) for a in ("a", "b")]
        verdicts = [Verdict(reviewer="a", candidate="b", verdict="approve", confidence=0.9),
                    Verdict(reviewer="b", candidate="a", verdict="reject", confidence=0.4)]
        kind = "escalated" if i % 3 == 0 else "accepted"
        if kind == "escalated":
            esc = Escalation(id=f"e-{who}-{i}", run=run, task_run=tr, task=f"t{i:03d}", reason="split",
                             packet={"task": f"t{i:03d}", "candidates": [], "verdicts": []})
            led.open_escalation(esc)
            led.mark_shown(esc.id)
            led.decide_escalation(esc.id, HumanDecision(action="pick", pick="a", by=who))
        events = [{"node": "solve", "agent": a, "round": 0, "started": now.isoformat(),
                   "finished": (now + timedelta(seconds=1)).isoformat()} for a in ("a", "b")]
        led.record_task_run(
            TaskResult(task=f"t{i:03d}", task_run=tr, run=run, decision="accepted", winner="a", seconds=1.0),
            cands, verdicts, [(0, Decision(kind=kind, winner=None if kind == "escalated" else "a", reason="r"))],
            events, rounds=1)
    led.set_run_status(run, "finished")
    print("done", who)
""")


def run_writers(location: str, writers: int, per_writer: int) -> None:
    """Start ``writers`` processes at the same instant, each writing ``per_writer`` task runs."""
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, location, f"w{k}", str(per_writer), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
             for k in range(writers)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]


def check_nothing_lost(led, writers: int, per_writer: int) -> None:
    from crossreview.ledger.figures import compute

    n = writers * per_writer
    with led.connect(write=False) as db:
        count = lambda table: db.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()["n"]  # noqa: E731
        assert count("runs") == writers
        assert count("task_runs") == n
        assert count("candidates") == 2 * n
        assert count("verdicts") == 2 * n
        assert count("test_outcomes") == 4 * n
        assert count("events") == 2 * n
        escalated = writers * len(range(0, per_writer, 3))
        assert count("escalations") == escalated
        assert db.execute("SELECT COUNT(*) AS n FROM task_runs WHERE status='done' AND agreement IS NOT NULL"
                          ).fetchone()["n"] == n
        assert db.execute("SELECT COUNT(*) AS n FROM escalations WHERE decided IS NOT NULL").fetchone()["n"] == escalated
    f = compute(led)
    assert f["counts"]["task_runs"] == n and f["interventions"]["escalated"] == escalated
    assert f["cost"]["tokens"] == n * 2 * 15 and f["cost"]["cost"]["unknown"] == 0


def test_concurrent_writers_on_one_sqlite_ledger_lose_nothing(tmp_path):
    from crossreview.ledger import Ledger

    path = tmp_path / "shared.db"
    run_writers(str(path), writers=4, per_writer=30)
    check_nothing_lost(Ledger(path), 4, 30)


@pytest.mark.slow
def test_two_concurrent_runs_on_one_sqlite_ledger_lose_nothing(tmp_path):
    """Two real `crossreview run`s of the example suite, side by side, one ledger."""
    shutil.copytree(EXAMPLE_TASKS, tmp_path / "tasks")
    ledger = tmp_path / "shared" / "ledger.db"
    procs = []
    for k in (1, 2):
        (tmp_path / f"w{k}").mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "crossreview", "run", str(tmp_path / "tasks"), "--ledger", str(ledger),
             "--state-dir", str(tmp_path / f"w{k}" / ".crossreview"), "--json", "--no-input"],
            cwd=tmp_path / f"w{k}", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
            stdin=subprocess.DEVNULL))
    outs = [p.communicate(timeout=300) for p in procs]
    docs = [json.loads(o[0]) for o in outs]
    assert all(p.returncode in (1, 3) for p in procs), [o[1][-3000:] for o in outs]
    assert docs[0]["run"] != docs[1]["run"]

    state = ledger.parent
    runs = ledger_rows(state, "SELECT id, status FROM runs ORDER BY id")
    assert sorted(r["id"] for r in runs) == sorted(d["run"] for d in docs)
    for doc in docs:
        trs = ledger_rows(state, "SELECT * FROM task_runs WHERE run=?", (doc["run"],))
        assert {t["task"] for t in trs} == {t["task"] for t in doc["tasks"]}
        by_task = {t["task"]: t for t in trs}
        for t in doc["tasks"]:
            row = by_task[t["task"]]
            assert row["decision"] == t["decision"]
            cands = ledger_rows(state, "SELECT * FROM candidates WHERE task_run=?", (row["id"],))
            verdicts = ledger_rows(state, "SELECT * FROM verdicts WHERE task_run=?", (row["id"],))
            if t["decision"] == "escalated":
                assert row["status"] == "parked"  # parked runs are written as far as they got
                [esc] = ledger_rows(state, "SELECT * FROM escalations WHERE task_run=?", (row["id"],))
                assert esc["id"] == t["escalation"]
            else:
                assert row["status"] == "done"
            assert len(cands) == len(t["candidates"])
            assert len(verdicts) == sum(c["reviews"] for c in t["candidates"])
    from crossreview.ledger import Ledger
    from crossreview.ledger.figures import compute

    f = compute(Ledger(ledger))
    all_tasks = [t for d in docs for t in d["tasks"]]
    assert f["counts"]["task_runs"] == len(all_tasks) == 10
    assert f["interventions"]["escalated"] == sum(t["decision"] == "escalated" for t in all_tasks)
