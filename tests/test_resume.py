"""Crash safety: a run killed with SIGKILL mid-solve is finished by `resume`, keeping finished work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from pathlib import Path

from conftest import (cli_env, counting_agent, git_branches, invocations, ledger_rows, make_task, wait_for, watch_agents,
                      write)


def _ctrl_c_once(proc: subprocess.Popen, ready, what: str) -> str:
    """Once ``ready()`` holds, Ctrl-C ``proc`` (bounded waits); its stderr. It is killed if it hangs."""
    try:
        wait_for(ready, what=what)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err


def _solve_writes(state: Path) -> int:
    """Finished solve branches saved in the checkpoint (each writes one 'events' entry)."""
    db = state / "checkpoints.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM writes WHERE channel='events'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _slow_first_time(path: Path) -> Path:
    """An agent that hangs on its first run (recording its pid) and solves at once on the next."""
    return write(path, """
import os, pathlib, time
count_dir = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"])
count_dir.mkdir(parents=True, exist_ok=True)
agent = os.environ["CROSSREVIEW_AGENT"]
with open(count_dir / (agent + ".count"), "a") as fh:
    fh.write("run\\n")
flag = count_dir / (agent + ".hung")
if not flag.exists():
    flag.write_text(str(os.getpid()))
    time.sleep(120)
pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a + b\\n")
""")


def test_sigkill_mid_solve_then_resume_keeps_finished_agents(cli, suite, tmp_path):
    make_task(suite)
    counts = tmp_path / "counts"
    fast = counting_agent(tmp_path / "fast.py")
    slow = _slow_first_time(tmp_path / "slow.py")
    env = cli_env({"CROSSREVIEW_COUNT_DIR": str(counts)})
    state = tmp_path / ".crossreview"
    proc = subprocess.Popen(
        # --sandbox off: the test kills the hung agent by its host pid (a sandbox's pids are its own;
        # tests/test_crash_points.py kills runs inside the sandbox).
        [sys.executable, "-m", "crossreview", "run", str(suite), "--json", "--sandbox", "off",
         "--agent", f"fast=command:{{python}} {fast}", "--agent", f"slow=command:{{python}} {slow}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    hung_pid = None
    try:
        wait_for(lambda: (counts / "slow.hung").exists(), what="the slow agent to start")
        hung_pid = int((counts / "slow.hung").read_text())
        # prepare wrote one events entry; the fast agent's finished solve writes the second.
        wait_for(lambda: _solve_writes(state) >= 2, what="the fast agent's solve to be checkpointed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if hung_pid:
            try:
                os.kill(hung_pid, signal.SIGKILL)  # it died with the killed run; if not, do not leave it running
            except ProcessLookupError:
                pass
    assert invocations(counts, "fast") == 1 and invocations(counts, "slow") == 1
    [run] = ledger_rows(state, "SELECT id, status FROM runs")
    assert run["status"] == "running"
    assert any(state.joinpath("worktrees").glob("r-*/add/*")), "the killed run left its worktrees"

    gc = cli("gc")
    assert gc.returncode == 0 and "removed 2 worktrees and 0 branches" in gc.stdout, gc.stdout + gc.stderr
    git_dir = state / "repos" / "add.git"
    assert not [b for b in git_branches(git_dir) if b.startswith("crossreview/work/")]

    res = cli("resume", run["id"], "--json", "--sandbox", "off", env={"CROSSREVIEW_COUNT_DIR": str(counts)})
    assert res.returncode == 0, res.stderr
    [task] = res.json()["tasks"]
    assert task["decision"] == "accepted"
    # The fast agent's work came from the checkpoint; only the slow one ran again.
    assert invocations(counts, "fast") == 1
    assert invocations(counts, "slow") == 2
    [run] = ledger_rows(state, "SELECT status FROM runs")
    assert run["status"] == "finished"
    assert len(ledger_rows(state, "SELECT * FROM candidates")) == 2
    assert not any(state.joinpath("worktrees").glob("r-*"))
    assert [b for b in git_branches(git_dir) if b.startswith("crossreview/")] == [f"crossreview/{task['task_run']}"]


def test_resume_skips_finished_tasks_and_unknown_run_is_an_error(cli, suite, tmp_path):
    make_task(suite, "one")
    res = cli("run", str(suite), "--agent", "oracle", "--json")
    run = res.json()["run"]
    again = cli("resume", run, "--json")
    assert again.returncode == 0
    assert [t["decision"] for t in again.json()["tasks"]] == ["accepted"]
    assert len(ledger_rows(tmp_path / ".crossreview", "SELECT * FROM task_runs")) == 1
    res = cli("resume", "r-doesnotexist")
    assert res.returncode == 2 and "no run 'r-doesnotexist'" in res.stderr


def test_agents_really_run_concurrently(cli, suite, tmp_path):
    make_task(suite)
    sleeper = counting_agent(tmp_path / "sleep.py", sleep=2.0)
    watch_agents(suite, tmp_path / "counts")
    spec = f"command:{{python}} {sleeper}"
    res = cli("run", str(suite), "--agent", spec, "--agent", spec, "--agent", spec, "--json",
              env={"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")})
    assert res.returncode == 0, res.stderr
    rows = ledger_rows(tmp_path / ".crossreview", "SELECT started, finished FROM events WHERE node='solve'")
    assert len(rows) == 3
    # All three 2-second solves overlap: the last to start began before the first finished.
    assert max(r["started"] for r in rows) < min(r["finished"] for r in rows)
    from datetime import datetime

    span = datetime.fromisoformat(max(r["finished"] for r in rows)) - datetime.fromisoformat(min(r["started"] for r in rows))
    assert span.total_seconds() < 5.0  # sequential would be at least 6 s


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return True


def test_ctrl_c_stops_agents_cleans_up_and_resume_finishes(cli, suite, tmp_path):
    make_task(suite)
    counts = tmp_path / "counts"
    slow = _slow_first_time(tmp_path / "slow.py")
    state = tmp_path / ".crossreview"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossreview", "run", str(suite), "--agent", "oracle", "--sandbox", "off",
         "--agent", f"slow=command:{{python}} {slow}"],
        cwd=tmp_path, env=cli_env({"CROSSREVIEW_COUNT_DIR": str(counts)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    err = _ctrl_c_once(proc, lambda: (counts / "slow.hung").exists(), what="the slow agent to start")
    hung_pid = int((counts / "slow.hung").read_text())
    assert proc.returncode == 130, err
    assert "interrupted" in err and "crossreview resume r-" in err
    wait_for(lambda: _gone(hung_pid), timeout=10, what="the agent to be killed")
    assert not any(state.joinpath("worktrees").glob("r-*/add/*"))
    git_dir = state / "repos" / "add.git"
    assert not [b for b in git_branches(git_dir) if b.startswith("crossreview/work/")]
    [run] = ledger_rows(state, "SELECT id, status FROM runs")
    assert run["status"] == "interrupted"
    # Unfinished, not failed: the agent killed by Ctrl-C is no error of the task's.
    [tr] = ledger_rows(state, "SELECT status, error FROM task_runs")
    assert (tr["status"], tr["error"]) == ("running", None)
    assert "error" not in err
    res = cli("resume", run["id"], "--json", "--sandbox", "off", env={"CROSSREVIEW_COUNT_DIR": str(counts)})
    assert res.returncode == 0, res.stderr
    assert res.json()["tasks"][0]["decision"] == "accepted"
    assert invocations(counts, "slow") == 2


def _ctrl_c_during_a_model_call(args: list[str], cwd: Path, env: dict, call_started) -> None:
    """Start `crossreview ARGS`, press Ctrl-C once ``call_started()`` says its model call is under way,
    and check it left at once (exit 130, no traceback), not when the model answered."""
    proc = subprocess.Popen([sys.executable, "-m", "crossreview", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        wait_for(call_started, timeout=60, what="the model call to start")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert waited < 20, f"exit took {waited:.1f}s: it waited for the model's reply"
    assert "interrupted" in err and "Traceback" not in err


def test_ctrl_c_during_a_slow_model_call_exits_at_once(suite, tmp_path):
    from fake_openai import FakeOpenAI, llm_env, text

    make_task(suite)
    server = FakeOpenAI().start()
    try:
        server.on("slow", [text("never mind", delay=60.0)])
        _ctrl_c_during_a_model_call(
            ["run", str(suite), "--agent", "x=llm:openai/slow", "--agent", "noop", "--reviewer", "tests"],
            tmp_path, cli_env(llm_env(server)), lambda: server.requests_for("slow"))
    finally:
        server.stop()
    [run] = ledger_rows(tmp_path / ".crossreview", "SELECT id, status FROM runs")
    assert run["status"] == "interrupted"
    # The task run under way had its worktrees removed although its thread never came back.
    assert not any((tmp_path / ".crossreview" / "worktrees").glob("r-*/add/*"))


def test_resume_reports_kept_task_runs_as_their_run_did(cli, suite, tmp_path):
    make_task(suite)
    make_task(suite, "add2")
    # A command agent's money is unknown: it must stay unknown, never become $0.
    agent = counting_agent(tmp_path / "agent.py")
    first = cli("run", str(suite), "--agent", "oracle", "--agent", f"c=command:{{python}} {agent}", "--json",
                env={"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")})
    assert first.returncode in (0, 1), first.stderr
    again = cli("resume", first.json()["run"], "--json")
    assert again.returncode == first.returncode, again.stderr
    before = {t["task"]: t for t in first.json()["tasks"]}
    after = {t["task"]: t for t in again.json()["tasks"]}
    assert before.keys() == after.keys() == {"add", "add2"}
    for name in before:
        assert after[name]["candidates"] == before[name]["candidates"], name
        assert [c["cost"] for c in after[name]["candidates"]] == [0.0, None]
    human = cli("resume", first.json()["run"])
    assert "unknown" in human.stdout
    # Its wall-clock is this resume's, not the run's: the summary says whose.
    assert "(this resume)" in human.stdout


def test_resume_says_what_it_keeps_and_counts_on_from_there(cli, suite, tmp_path):
    """`run` counts its task runs ("[1/2] accepted"); `resume` printed no counter and nothing before
    its first task started (seconds in), so a resumed overnight suite gave no idea how far it was."""
    make_task(suite)
    make_task(suite, "add2")
    paid = write(tmp_path / "paid.py", """
import json, os, pathlib
pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a + b\\n")
pathlib.Path(os.environ["CROSSREVIEW_USAGE_FILE"]).write_text(
    json.dumps({"tokens_in": 100, "tokens_out": 50, "cost": 0.01, "calls": 1}))
""")
    # The first task spends past the cap, so the second is not started: an error a resume runs again.
    first = cli("run", str(suite), "--agent", f"p=command:{{python}} {paid}", "--jobs", "1", "--max-cost", "0.005",
                "--json")
    assert [t["decision"] for t in first.json()["tasks"]] == ["accepted", "error"], first.stderr
    again = cli("resume", first.json()["run"])
    lines = again.stderr.splitlines()
    assert lines[0] == f"resuming {first.json()['run']}: 1 task run kept (finished or waiting for a human), 1 to run"
    assert any(line.startswith("add2") and "[2/2] error: not started: budget exhausted" in line for line in lines), lines


def test_a_run_is_worked_on_by_one_process_at_a_time(cli, suite, tmp_path):
    make_task(suite)
    make_task(suite, "add2")
    # The first run is killed before its reviews; resuming it then takes a few seconds (a slow reviewer).
    slow = write(tmp_path / "slow_review.py", "import json, time\ntime.sleep(4)\n"
                 "print(json.dumps({'verdict': 'approve', 'confidence': 0.9}))\n")
    args = ["--agent", "oracle", "--agent", "b=oracle", "--reviewer", f"command:{{python}} {slow}"]
    killed = cli("run", str(suite), *args, "--jobs", "1", env={"CROSSREVIEW_TEST_CRASH_AT": "review:a:before"})
    assert killed.returncode == -signal.SIGKILL
    [run] = ledger_rows(tmp_path / ".crossreview", "SELECT id, status FROM runs")
    assert run["status"] == "running"
    # No process holds it: `runs` says what happened to it.
    assert cli("runs", "--json").json()["runs"][0]["status"] == "interrupted"
    first = subprocess.Popen([sys.executable, "-m", "crossreview", "resume", run["id"], "--json"], cwd=tmp_path,
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: cli("runs", "--json").json()["runs"][0]["status"] == "running", timeout=60,
                  what="the first resume to take the run")
        second = cli("resume", run["id"])
        assert second.returncode == 2 and f"run {run['id']} is being worked on right now by process" in \
            " ".join(second.stderr.split())
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert {t["decision"] for t in json.loads(out)["tasks"]} == {"accepted"}
    rows = ledger_rows(tmp_path / ".crossreview", "SELECT task, status, decision FROM task_runs ORDER BY task")
    assert [(r["task"], r["status"], r["decision"]) for r in rows] == [("add", "done", "accepted"),
                                                                       ("add2", "done", "accepted")]


def test_checkpoints_of_recorded_task_runs_are_forgotten_parked_ones_kept(cli, suite, tmp_path):
    from conftest import approve_all_reviewer

    make_task(suite, "done1")
    make_task(suite, "split")
    watch_agents(suite, tmp_path / "counts")
    wrong = counting_agent(tmp_path / "agent.py", solution="def add(a, b):\n    return a - b\n")
    approve = approve_all_reviewer(tmp_path / "approve.py")
    # done1 is accepted (oracle + oracle); split escalates (two wrong agents, one approving everything).
    first = cli("run", str(suite / "done1"), "--agent", "oracle", "--agent", "b=oracle", "--json")
    assert first.returncode == 0, first.stderr
    env = {"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")}
    second = cli("run", str(suite / "split"), "--agent", f"x=command:{{python}} {wrong}",
                 "--agent", f"y=command:{{python}} {wrong}", "--reviewer", f"x={approve}", "--reviewer", "y=tests",
                 "--json", env=env)
    assert second.returncode == 3, second.stderr

    def threads() -> set[str]:
        db = sqlite3.connect(tmp_path / ".crossreview" / "checkpoints.db")
        try:
            return {r[0] for r in db.execute("SELECT DISTINCT thread_id FROM checkpoints")}
        finally:
            db.close()

    done_tr = first.json()["tasks"][0]["task_run"]
    parked = second.json()["tasks"][0]
    assert threads() == {parked["task_run"]}  # the parked one must stay: decide continues it
    assert cli("resume", first.json()["run"], "--json").json()["tasks"][0]["task_run"] == done_tr  # from the ledger
    # A parked task run, kept by a resume, reports the seconds its run did (until it parked), not 0.
    kept = cli("resume", second.json()["run"], "--json", env=env).json()["tasks"][0]
    assert kept["decision"] == "escalated" and kept["seconds"] == pytest.approx(parked["seconds"], abs=0.5)
    assert kept["seconds"] > 0
    decided = cli("decide", parked["escalation"], "--reject", env=env)
    assert decided.returncode == 1, decided.stderr
    assert threads() == set()


# --- a human's decision cut short is carried out by resume, never lost ---------------


def _parked(cli, suite, tmp_path, reviewer_x: str, env: dict | None = None) -> dict:
    """A run parked at an escalation: x approves y, whose tests fail; y goes by the tests."""
    make_task(suite)
    counter = tmp_path / "counts"
    watch_agents(suite, counter)
    agent = counting_agent(tmp_path / "agent.py", solution="def add(a, b):\n    return a - b\n")
    env = {"CROSSREVIEW_COUNT_DIR": str(counter), **(env or {})}
    res = cli("run", str(suite), "--agent", f"x=command:{{python}} {agent}", "--agent", f"y=command:{{python}} {agent}",
              "--reviewer", f"x={reviewer_x}", "--reviewer", "y=tests", "--json", env=env)
    assert res.returncode == 3, res.stderr
    [task] = res.json()["tasks"]
    return {"esc": task["escalation"], "run": res.json()["run"], "env": env, "counter": counter,
            "state": tmp_path / ".crossreview"}


def test_a_guided_round_cut_short_is_finished_by_resume(cli, suite, tmp_path):
    from conftest import approve_all_reviewer

    p = _parked(cli, suite, tmp_path, approve_all_reviewer(tmp_path / "approve.py"))
    killed = cli("decide", p["esc"], "--guide", "add, do not subtract",
                 env={**p["env"], "CROSSREVIEW_TEST_CRASH_AT": "review:x:before"})
    assert killed.returncode == -signal.SIGKILL
    assert invocations(p["counter"], "x") == 2  # the guided round's agents ran before the kill
    # The decision is recorded, so nobody is asked again; `runs` and `decide` say how to go on.
    assert cli("inbox", "--json").json() == {"escalations": []}
    assert cli("runs", "--json").json()["runs"][0]["status"] == "interrupted"
    again = cli("decide", p["esc"], "--reject")
    assert again.returncode == 2
    assert f"stopped before it finished; `crossreview resume {p['run']}` finishes it" in " ".join(again.stderr.split())

    res = cli("resume", p["run"], "--json", env=p["env"])
    assert res.returncode == 3, res.stderr
    [task] = res.json()["tasks"]
    # The guided round ran to its end (same agents, same behaviour: a new escalation)...
    assert task["decision"] == "escalated" and task["escalation"] not in (None, p["esc"])
    # ... keeping the round's finished solves.
    assert invocations(p["counter"], "x") == 2 and invocations(p["counter"], "y") == 2
    escs = ledger_rows(p["state"], "SELECT id, round, action, guide FROM escalations ORDER BY round")
    assert [(e["round"], e["action"], e["guide"]) for e in escs] == [(0, "guide", "add, do not subtract"),
                                                                     (1, None, None)]
    assert [e["id"] for e in cli("inbox", "--json").json()["escalations"]] == [task["escalation"]]
    assert cli("runs", "--json").json()["runs"][0]["status"] == "waiting"


def test_a_pick_cut_short_is_kept_by_resume(cli, suite, tmp_path):
    from conftest import approve_all_reviewer

    p = _parked(cli, suite, tmp_path, approve_all_reviewer(tmp_path / "approve.py"))
    killed = cli("decide", p["esc"], "--pick", "y", "--by", "ann",
                 env={**p["env"], "CROSSREVIEW_TEST_CRASH_AT": "record:before-ledger"})
    assert killed.returncode == -signal.SIGKILL
    res = cli("resume", p["run"], "--json", env=p["env"])
    assert res.returncode == 0, res.stderr
    [task] = res.json()["tasks"]
    assert (task["decision"], task["winner"], task["escalation"]) == ("accepted", "y", p["esc"])
    [tr] = ledger_rows(p["state"], "SELECT status, decision, winner, reason FROM task_runs")
    assert (tr["status"], tr["decision"], tr["winner"]) == ("done", "accepted", "y")
    assert "a human picked y" in tr["reason"]
    [esc] = ledger_rows(p["state"], "SELECT action, pick, decided_by FROM escalations")
    assert (esc["action"], esc["pick"], esc["decided_by"]) == ("pick", "y", "ann")
    assert f"crossreview/{p['run']}/add" in git_branches(p["state"] / "repos" / "add.git")
    assert invocations(p["counter"], "x") == 1  # nothing ran again
    assert cli("runs", "--json").json()["runs"][0]["status"] == "finished"


def test_ctrl_c_during_a_guided_rounds_model_call_exits_at_once(cli, suite, tmp_path):
    from fake_openai import FakeOpenAI, llm_env, verdict

    server = FakeOpenAI().start()
    try:
        calls = {"n": 0}

        def reviewer(req):
            calls["n"] += 1
            # Round 1 approves (y fails its tests: an escalation); round 2's first call hangs.
            return verdict("approve", delay=60.0 if calls["n"] == 2 else 0.0)

        server.on("rev", reviewer)
        p = _parked(cli, suite, tmp_path, "llm:openai/rev", env=llm_env(server))
        _ctrl_c_during_a_model_call(["decide", p["esc"], "--guide", "add"], tmp_path, cli_env(p["env"]),
                                    lambda: len(server.requests_for("rev")) >= 2)  # round 2's call
        assert cli("runs", "--json").json()["runs"][0]["status"] == "interrupted"
        assert not any((p["state"] / "worktrees").glob("r-*/add/*"))
        # The decision stands; resume carries it out (the model answers at once now).
        res = cli("resume", p["run"], "--json", env=p["env"])
        assert res.returncode == 3, res.stderr
        assert res.json()["tasks"][0]["escalation"] != p["esc"]
        rounds = ledger_rows(p["state"], "SELECT rounds FROM task_runs")
        assert rounds[0]["rounds"] == 2
    finally:
        server.stop()


def test_one_process_drives_a_task_run_at_a_time(cli, suite, tmp_path):
    from conftest import approve_all_reviewer

    from crossreview import locks

    p = _parked(cli, suite, tmp_path, approve_all_reviewer(tmp_path / "approve.py"))
    [tr] = ledger_rows(p["state"], "SELECT id FROM task_runs")
    with locks.hold(locks.task_run_lock_path(p["state"], tr["id"])):
        # As if another `decide` were carrying out a decision on it right now.
        busy = cli("decide", p["esc"], "--pick", "y")
        assert busy.returncode == 2
        assert f"is being worked on right now by process {os.getpid()}" in " ".join(busy.stderr.split())
        with pytest.raises(locks.Busy) as held:
            with locks.hold(locks.task_run_lock_path(p["state"], tr["id"])):
                pass
        assert held.value.holder == f"process {os.getpid()}"
        assert locks.run_is_live(p["state"], p["run"])
    assert not locks.run_is_live(p["state"], p["run"])
    # Free again: nothing was decided meanwhile.
    res = cli("decide", p["esc"], "--pick", "y", "--json")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("point, action", [
    ("human:recorded", ("--pick", "x")),      # the graph still waits at the interrupt
    ("solve:x:before", ("--guide", "add, do not subtract")),  # killed inside the guided round
])
def test_decide_killed_after_recording_the_decision_is_finished_by_resume(cli, suite, tmp_path, point, action):
    """`decide` records the human's answer, then resumes the graph. Killed in between, the task run
    stayed parked with its escalation decided — out of the inbox, `decide` refusing it, `resume`
    keeping it as a wait — so it never finished and stats counted it waiting forever."""
    from conftest import approve_all_reviewer

    make_task(suite, "split")
    watch_agents(suite, tmp_path / "counts")
    wrong = counting_agent(tmp_path / "agent.py", solution="def add(a, b):\n    return a - b\n")
    approve = approve_all_reviewer(tmp_path / "approve.py")
    env = {"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")}
    first = cli("run", str(suite), "--agent", f"x=command:{{python}} {wrong}", "--agent", f"y=command:{{python}} {wrong}",
                "--reviewer", f"x={approve}", "--reviewer", "y=tests", "--json", env=env)
    assert first.returncode == 3, first.stderr
    parked = first.json()["tasks"][0]
    killed = cli("decide", parked["escalation"], *action, env={**env, "CROSSREVIEW_TEST_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    resumed = cli("resume", first.json()["run"], "--json", env=env)
    [t] = resumed.json()["tasks"]
    state = tmp_path / ".crossreview"
    [row] = ledger_rows(state, "SELECT status, decision, winner, rounds FROM task_runs")
    if action[0] == "--pick":
        assert (t["decision"], t["winner"]) == ("accepted", "x"), resumed.stderr
        assert tuple(row) == ("done", "accepted", "x", 1)
    else:  # the guided round's agents are as wrong as before, and y's reviewer still rejects: a new escalation
        assert t["decision"] == "escalated" and t["escalation"] != parked["escalation"], resumed.stderr
        assert row["rounds"] == 2 and row["status"] == "parked"
    stats = cli("stats", "--json").json()
    assert stats["counts"]["escalations_decided"] == 1 and stats["counts"]["guided"] == (action[0] == "--guide")


def _paid_solve_killed_then_resumed(cli, suite, tmp_path) -> tuple[str, object]:
    """A run whose one paid solve (150 tokens, $0.01) finished and was killed before it was
    checkpointed, then resumed (the solve runs again): returns the run id and the resume's result."""
    make_task(suite)
    watch_agents(suite, tmp_path / "counts")
    paid = write(tmp_path / "paid.py", """
import json, os, pathlib
count = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"]) / "paid.count"
count.parent.mkdir(parents=True, exist_ok=True)
with open(count, "a") as fh:
    fh.write("run\\n")
pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a + b\\n")
pathlib.Path(os.environ["CROSSREVIEW_USAGE_FILE"]).write_text(
    json.dumps({"tokens_in": 100, "tokens_out": 50, "cost": 0.01, "calls": 1}))
""")
    env = {"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")}
    args = ["--agent", f"paid=command:{{python}} {paid}", "--agent", "noop", "--json"]
    killed = cli("run", str(suite), *args, env={**env, "CROSSREVIEW_TEST_CRASH_AT": "solve:paid:after"})
    assert killed.returncode == -signal.SIGKILL
    [run] = ledger_rows(tmp_path / ".crossreview", "SELECT id FROM runs")
    res = cli("resume", run["id"], "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert invocations(tmp_path / "counts", "paid") == 2
    return run["id"], res


def test_spend_of_work_a_kill_cut_short_is_counted_and_seeds_the_resumed_budget(cli, suite, tmp_path):
    """A solve that finished and spent, killed before it was checkpointed, is run again by resume: its
    first spend never becomes a candidate, so only the spend journal still knows it."""
    run_id, res = _paid_solve_killed_then_resumed(cli, suite, tmp_path)
    run = {"id": run_id}
    # The task run records the solve that finished (150 tokens, $0.01); the journal both.
    [task] = res.json()["tasks"]
    assert (task["tokens"], task["cost"]) == (150, 0.01)
    spend = ledger_rows(tmp_path / ".crossreview", "SELECT tokens, cost FROM spend")
    assert [(r["tokens"], r["cost"]) for r in spend] == [(150, 0.01), (150, 0.01)]
    figures = cli("stats", "--json").json()["cost"]
    assert figures["cut_short"] == {"task_runs": 1, "tokens": 150, "cost": 0.01, "cost_known": 0.01,
                                    "calls_in_flight": 0}
    assert "spent on work cut short" in cli("stats").stdout

    # A later resume starts its budget from the journal: both solves count against --max-cost.
    from crossreview.runner import _seed_budget, open_session

    from crossreview.ledger import Ledger

    state = tmp_path / ".crossreview"
    with open_session(state, state / "ledger.db") as session:
        _seed_budget(session, run["id"], {"limits": {"max_cost": 1.0}})
        budget = session.context.budgets.suite(run["id"], {"max_cost": 1.0})
        assert (budget.tokens, round(budget.cost, 6)) == (300, 0.02)
    assert len(Ledger(state / "ledger.db").spend_by_task_run()) == 1  # seeding journaled nothing


def test_the_report_shows_the_spend_of_work_cut_short_as_stats_does(cli, suite, tmp_path):
    """`stats` showed what a kill cut short (spend the task runs' rows no longer hold); the report,
    "the same figures with plots", left it out, so its total cost silently dropped the killed work."""
    _paid_solve_killed_then_resumed(cli, suite, tmp_path)
    res = cli("report", "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "r.html").read_text()
    assert "spent on work cut short" in html
    assert "tokens 150, money $0.0100 in 1 task run" in html


def _hangs_when_guided(path: Path) -> Path:
    """An agent that writes a wrong add(), except in a guided round, where it records its pid and hangs."""
    return write(path, """
import os, pathlib, time
count_dir = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"])
if "Guidance from the human" in pathlib.Path(os.environ["CROSSREVIEW_INSTRUCTION_FILE"]).read_text():
    (count_dir / (os.environ["CROSSREVIEW_AGENT"] + ".hung")).write_text(str(os.getpid()))
    time.sleep(120)
pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a - b\\n")
""")


def test_ctrl_c_in_a_guided_round_leaves_the_decision_to_resume(cli, suite, tmp_path):
    """Ctrl-C kills the round's agents, and the killed command raised Stopping in the task's
    thread, which recorded it as the task run's error ("Stopping: crossreview is stopping:
    killed"): `runs` showed an error, a second `decide` said only "already decided" with no
    word of `resume`, and the hint printed was `crossreview resume RUN`, not the run's id."""
    from conftest import approve_all_reviewer

    make_task(suite)
    counter = tmp_path / "counts"
    watch_agents(suite, counter)
    agent = _hangs_when_guided(tmp_path / "agent.py")
    env = {"CROSSREVIEW_COUNT_DIR": str(counter)}
    first = cli("run", str(suite), "--agent", f"x=command:{{python}} {agent}", "--agent", f"y=command:{{python}} {agent}",
                "--reviewer", f"x={approve_all_reviewer(tmp_path / 'approve.py')}", "--reviewer", "y=tests", "--json",
                env=env)
    assert first.returncode == 3, first.stderr
    run, esc = first.json()["run"], first.json()["tasks"][0]["escalation"]
    proc = subprocess.Popen([sys.executable, "-m", "crossreview", "decide", esc, "--guide", "add, do not subtract"],
                            cwd=tmp_path, env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    err = _ctrl_c_once(proc, lambda: (counter / "x.hung").exists() and (counter / "y.hung").exists(),
                       what="the guided round's agents to start")
    assert proc.returncode == 130, err
    assert f"crossreview resume {run}" in err
    assert "Stopping" not in err
    [tr] = ledger_rows(tmp_path / ".crossreview", "SELECT status, decision, error FROM task_runs")
    assert tr["status"] == "parked" and tr["error"] is None, dict(tr)
    again = cli("decide", esc, "--pick", "x")
    assert again.returncode == 2
    assert f"`crossreview resume {run}` finishes it" in " ".join(again.stderr.split())
    shown = cli("show", esc, "--no-diff")
    assert shown.returncode == 0
    assert f"stopped before it finished; `crossreview resume {run}` finishes it" in " ".join(shown.stdout.split())


def test_a_decision_made_while_the_run_goes_on_is_in_its_results(cli, suite, tmp_path):
    """A human decides the first task's escalation from another terminal while the run is busy
    with the next task. The run reported its own stale view: the task 'escalated', '1 waiting for
    a human', exit 3, and left the run 'waiting' in the ledger although nothing waited."""
    from conftest import approve_all_reviewer

    make_task(suite, "a_split")
    make_task(suite, "b_later")
    counter = tmp_path / "counts"
    watch_agents(suite, counter)
    agent = write(tmp_path / "agent.py", """
import os, pathlib, time
go = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"]) / "go"
if os.environ["CROSSREVIEW_TASK_ID"] == "b_later":
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a + b\\n")
else:
    pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a - b\\n")
""")
    env = {"CROSSREVIEW_COUNT_DIR": str(counter)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossreview", "run", str(suite), "--json",
         "--agent", f"x=command:{{python}} {agent}", "--agent", f"y=command:{{python}} {agent}",
         "--reviewer", f"x={approve_all_reviewer(tmp_path / 'approve.py')}", "--reviewer", "y=tests"],
        cwd=tmp_path, env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True)
    try:
        def inbox() -> list:
            res = cli("inbox", "--json")
            return res.json()["escalations"] if res.returncode == 0 else []  # 2 until the ledger exists

        wait_for(inbox, what="a_split to escalate")
        [esc] = inbox()
        decided = cli("decide", esc["id"], "--pick", "x", env=env)
        assert decided.returncode == 0, decided.stderr
        (counter / "go").write_text("")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    by_task = {t["task"]: t for t in json.loads(out)["tasks"]}
    assert (by_task["a_split"]["decision"], by_task["a_split"]["winner"]) == ("accepted", "x")
    assert by_task["b_later"]["decision"] == "accepted"
    assert cli("runs", "--json").json()["runs"][0]["status"] == "finished"


def test_a_guided_round_that_outlives_its_run_sets_the_runs_status(cli, suite, tmp_path):
    """`decide --guide` began while the run still held the run, so it left the run's status to
    the run; the run ended first (the round still going), and the status stayed 'waiting'
    after the round was accepted."""
    from conftest import approve_all_reviewer

    make_task(suite, "a_split")
    make_task(suite, "b_later")
    counter = tmp_path / "counts"
    watch_agents(suite, counter)
    agent = write(tmp_path / "agent.py", """
import os, pathlib, time
count_dir = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"])
def wait_for(name):
    deadline = time.monotonic() + 60
    while not (count_dir / name).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
right = "def add(a, b):\\n    return a + b\\n"
if os.environ["CROSSREVIEW_TASK_ID"] == "b_later":
    wait_for("run may end")
    pathlib.Path("calc.py").write_text(right)
elif "Guidance from the human" in pathlib.Path(os.environ["CROSSREVIEW_INSTRUCTION_FILE"]).read_text():
    (count_dir / (os.environ["CROSSREVIEW_AGENT"] + ".guided")).write_text("")
    wait_for("round may end")
    pathlib.Path("calc.py").write_text(right)
else:
    pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a - b\\n")
""")
    env = {"CROSSREVIEW_COUNT_DIR": str(counter)}

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "crossreview", *args], cwd=tmp_path, env=cli_env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def inbox() -> list:
        res = cli("inbox", "--json")
        return res.json()["escalations"] if res.returncode == 0 else []  # 2 until the ledger exists

    run = start("run", str(suite), "--json", "--agent", f"x=command:{{python}} {agent}",
                "--agent", f"y=command:{{python}} {agent}",
                "--reviewer", f"x={approve_all_reviewer(tmp_path / 'approve.py')}", "--reviewer", "y=tests")
    decide = None
    try:
        wait_for(inbox, what="a_split to escalate")
        [esc] = inbox()
        decide = start("decide", esc["id"], "--guide", "add, do not subtract")
        wait_for(lambda: (counter / "x.guided").exists() and (counter / "y.guided").exists(),
                  what="the guided round's agents to start")
        (counter / "run may end").write_text("")
        run.communicate(timeout=120)
        (counter / "round may end").write_text("")
        _, err = decide.communicate(timeout=120)
    finally:
        for proc in (run, decide):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert decide.returncode == 0, err
    [row] = cli("runs", "--json").json()["runs"]
    assert (row["status"], row["decisions"]) == ("finished", {"accepted": 2})


def test_resume_with_a_task_folder_broken_since_says_why_and_leaves_the_run_unfinished(cli, suite, tmp_path):
    """A task folder edited between a crash and `resume` so that it no longer loads: resume
    printed '1 broken' without saying what, marked the run 'finished' with its task run still
    'running', and called a kept task broken too when its folder had changed."""
    make_task(suite, "a_done")
    make_task(suite, "b_hangs")
    counts = tmp_path / "counts"
    agent = write(tmp_path / "agent.py", """
import os, pathlib, time
count_dir = pathlib.Path(os.environ["CROSSREVIEW_COUNT_DIR"])
count_dir.mkdir(parents=True, exist_ok=True)
flag = count_dir / "hung"
if os.environ["CROSSREVIEW_TASK_ID"] == "b_hangs" and not flag.exists():
    flag.write_text(str(os.getpid()))
    time.sleep(120)
pathlib.Path("calc.py").write_text("def add(a, b):\\n    return a + b\\n")
""")
    env = {"CROSSREVIEW_COUNT_DIR": str(counts)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossreview", "run", str(suite), "--sandbox", "off", "--agent", "oracle",
         "--agent", f"slow=command:{{python}} {agent}"],
        cwd=tmp_path, env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True)
    err = _ctrl_c_once(proc, lambda: (counts / "hung").exists(), what="b_hangs's agent to start")
    assert proc.returncode == 130, err
    [run] = cli("runs", "--json").json()["runs"]
    for name in ("a_done", "b_hangs"):
        (suite / name / "task.toml").write_text('[verifier]\ntimeout = 5\n')

    res = cli("resume", run["id"], "--sandbox", "off", env=env)
    assert res.returncode == 1, res.stderr  # a_done is kept and accepted; b_hangs cannot run
    said = " ".join(res.stderr.split())
    assert "b_hangs/task.toml" in said and "unknown key 'timeout'" in said
    assert "a_done" not in said  # kept from before: its folder is not read again
    assert cli("runs", "--json").json()["runs"][0]["status"] == "interrupted"
    as_json = cli("resume", run["id"], "--sandbox", "off", "--json", env=env)
    assert [e["field"] for e in as_json.json()["errors"]] == ["verifier.timeout"]

    (suite / "b_hangs" / "task.toml").write_text('version = "1.0"\n')
    fixed = cli("resume", run["id"], "--sandbox", "off", "--json", env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert {t["task"]: t["decision"] for t in fixed.json()["tasks"]} == {"a_done": "accepted", "b_hangs": "accepted"}
    assert cli("runs", "--json").json()["runs"][0]["status"] == "finished"
