"""Escalations: parked in one process, shown and decided from another."""

from __future__ import annotations

import os

import pytest

from conftest import (BROKEN_PLUGINS, REPO_ROOT, approve_all_reviewer, counting_agent, fake_installed_plugin, git_branches,
                      invocations, ledger_rows, make_task, watch_agents)


@pytest.fixture
def parked(cli, suite, tmp_path):
    """A run parked at an escalation: two counting agents that write nothing useful,
    one reviewer approving everything, the other going by the tests."""
    make_task(suite)
    counter = tmp_path / "counts"
    watch_agents(suite, counter)
    agent = counting_agent(tmp_path / "agent.py", solution="def add(a, b):\n    return a - b\n")
    approve = approve_all_reviewer(tmp_path / "approve.py")
    env = {"CROSSREVIEW_COUNT_DIR": str(counter)}
    args = ["run", str(suite),
            "--agent", f"x=command:{{python}} {agent}", "--agent", f"y=command:{{python}} {agent}",
            "--reviewer", f"x={approve}", "--reviewer", "y=tests", "--json"]
    res = cli(*args, env=env)
    assert res.returncode == 3, res.stderr
    [task] = res.json()["tasks"]
    assert task["decision"] == "escalated"
    return {"id": task["escalation"], "run": res.json()["run"], "counter": counter, "env": env,
            "state": tmp_path / ".crossreview", "args": args}


def test_decide_pick_in_a_new_process_finishes_the_run_without_resolving(cli, parked):
    assert invocations(parked["counter"], "x") == 1 and invocations(parked["counter"], "y") == 1
    shown = cli("show", parked["id"])
    assert shown.returncode == 0
    assert "x approves y, but y passes 0/2 tests" in shown.stdout
    assert "diff of x" in shown.stdout and "return a - b" in shown.stdout
    assert f"crossreview decide {parked['id']} --pick" in shown.stdout

    res = cli("decide", parked["id"], "--pick", "y", "--by", "tester", "--json", env=parked["env"])
    assert res.returncode == 0, res.stderr
    doc = res.json()
    assert (doc["decision"], doc["winner"], doc["escalation"]) == ("accepted", "y", parked["id"])
    # The agents were not run again: their finished work came from the checkpoint.
    assert invocations(parked["counter"], "x") == 1 and invocations(parked["counter"], "y") == 1

    [esc] = ledger_rows(parked["state"], "SELECT * FROM escalations")
    assert (esc["action"], esc["pick"], esc["decided_by"]) == ("pick", "y", "tester")
    assert esc["created"] <= esc["first_shown"] <= esc["decided"]
    [tr] = ledger_rows(parked["state"], "SELECT * FROM task_runs")
    assert (tr["status"], tr["decision"], tr["winner"]) == ("done", "accepted", "y")
    assert "a human picked y" in tr["reason"]
    [run] = ledger_rows(parked["state"], "SELECT status FROM runs")
    assert run["status"] == "finished"
    assert cli("inbox", "--json").json() == {"escalations": []}
    branches = git_branches(parked["state"] / "repos" / "add.git")
    assert f"crossreview/{parked['run']}/add" in branches
    assert not [b for b in branches if b.startswith("crossreview/work/")]


def test_decide_reject(cli, parked):
    res = cli("decide", parked["id"], "--reject", "--json")
    assert res.returncode == 1, res.stderr
    assert res.json()["decision"] == "rejected"
    [tr] = ledger_rows(parked["state"], "SELECT decision, winner FROM task_runs")
    assert (tr["decision"], tr["winner"]) == ("rejected", None)


@pytest.mark.parametrize("args", [["--pick", "y"], ["--reject"]])
def test_decide_pick_or_reject_prints_no_progress_for_a_run_that_does_not_happen(cli, parked, args):
    res = cli("decide", parked["id"], *args, env=parked["env"])
    assert res.returncode in (0, 1), res.stderr
    assert "add" in res.stdout  # the results table says how it ended
    # Nothing runs again: no "started" line, no progress at all on stderr.
    assert "started" not in res.stderr and "add " not in res.stderr, res.stderr
    assert invocations(parked["counter"], "x") == 1 and invocations(parked["counter"], "y") == 1


def test_decide_pick_does_not_announce_a_task_run_to_plugins(parked, monkeypatch):
    """In process, through the real plugin manager: a pick finishes the task run but starts none."""
    from crossreview import plugins
    from crossreview.hookspecs import hookimpl
    from crossreview.models import HumanDecision
    from crossreview.runner import decide_escalation

    seen: list[str] = []

    class Watcher:
        @hookimpl
        def crossreview_task_started(self, task, task_run):
            seen.append("started")

        @hookimpl
        def crossreview_task_finished(self, result):
            seen.append(f"finished {result.decision}")

    monkeypatch.chdir(parked["state"].parent)
    pm = plugins.new_plugin_manager(load_entrypoints=False)
    pm.register(Watcher(), name="watcher")
    result = decide_escalation(parked["id"], HumanDecision(action="pick", pick="y", by="tester"),
                               state_dir=parked["state"], pm=pm)
    assert (result.decision, result.winner) == ("accepted", "y")
    assert seen == ["finished accepted"]


def test_decide_guide_sends_the_agents_back_with_the_guidance(cli, parked, tmp_path):
    res = cli("decide", parked["id"], "--guide", "subtract less, add more", "--json", env=parked["env"])
    # Same agents, same behaviour: they disagree again, a new escalation is parked.
    assert res.returncode == 3, res.stderr
    doc = res.json()
    assert doc["decision"] == "escalated" and doc["escalation"] != parked["id"]
    assert invocations(parked["counter"], "x") == 2 and invocations(parked["counter"], "y") == 2
    escs = ledger_rows(parked["state"], "SELECT id, round, action, guide FROM escalations ORDER BY round")
    assert [(e["round"], e["action"]) for e in escs] == [(0, "guide"), (1, None)]
    assert escs[0]["guide"] == "subtract less, add more"
    inbox = cli("inbox", "--json").json()["escalations"]
    assert [e["id"] for e in inbox] == [doc["escalation"]]
    assert "1 escalation waiting" in cli("inbox").stdout
    # The guided round ran in view: progress lines, as `run` prints them.
    assert "started (" in res.stderr and "x solved in" in res.stderr and "y tests" in res.stderr
    # Its packet says which round it is and what the agents were told.
    shown = cli("show", doc["escalation"], "--json").json()
    assert (shown["packet"]["round"], shown["packet"]["guidance"]) == (1, ["subtract less, add more"])
    human = cli("show", doc["escalation"]).stdout
    assert "Round 2: the agents were given this guidance" in human and "→ subtract less, add more" in human
    # The second round is decided like the first.
    res = cli("decide", doc["escalation"], "--reject")
    assert res.returncode == 1
    [tr] = ledger_rows(parked["state"], "SELECT decision, rounds FROM task_runs")
    assert (tr["decision"], tr["rounds"]) == ("rejected", 2)


def test_show_of_a_guided_escalation_says_where_the_task_run_went_on(cli, parked):
    first = parked["id"]
    res = cli("decide", first, "--guide", "subtract less, add more", "--json", env=parked["env"])
    assert res.returncode == 3, res.stderr
    second = res.json()["escalation"]
    # The old id names the round that followed it, which still waits, and how to open it.
    text = " ".join(cli("show", first, "--no-diff").stdout.split())
    assert f"then: the guided round escalated again: {second}, still waiting" in text
    assert f"next: crossreview show {second}" in text
    later = cli("show", first, "--json").json()
    assert later["later_escalations"] == [{"id": second, "round": 1, "waiting": True, "action": None}]
    assert later["outcome"] is None
    # Deciding the old id again points the same way.
    again = cli("decide", first, "--pick", "y")
    assert again.returncode == 2 and f"escalated again: {second}, still waiting" in " ".join(again.stderr.split())

    assert cli("decide", second, "--pick", "y", env=parked["env"]).returncode == 0
    text = " ".join(cli("show", first, "--no-diff").stdout.split())
    assert f"then: the guided round escalated again: {second} (pick); the task run ended accepted, winner y" in text
    assert "next: crossreview show" not in text
    done = cli("show", first, "--json").json()
    assert done["later_escalations"][0]["waiting"] is False
    assert (done["outcome"]["decision"], done["outcome"]["winner"]) == ("accepted", "y")


def test_guidance_reaches_the_agents(cli, suite, tmp_path):
    make_task(suite)
    reader = tmp_path / "reader.py"
    reader.write_text(
        "import os, pathlib\n"
        "text = pathlib.Path(os.environ['CROSSREVIEW_INSTRUCTION_FILE']).read_text()\n"
        "pathlib.Path(os.environ['OUT'], os.environ['CROSSREVIEW_AGENT'] + '.txt').write_text(text)\n"
    )
    approve = approve_all_reviewer(tmp_path / "approve.py")
    watch_agents(suite, tmp_path / "out", env=("OUT",))
    env = {"OUT": str(tmp_path / "out")}
    res = cli("run", str(suite), "--agent", f"command:{{python}} {reader}", "--agent", "noop",
              "--reviewer", f"a={approve}", "--reviewer", "b=tests", "--json", env=env)
    esc = res.json()["tasks"][0]["escalation"]
    assert "Guidance" not in (tmp_path / "out" / "a.txt").read_text()
    cli("decide", esc, "--guide", "use the + operator", env=env)
    text = (tmp_path / "out" / "a.txt").read_text()
    assert "Implement add(a, b)" in text and "use the + operator" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["e-nothere", "--pick", "x"], "no escalation 'e-nothere'"),
        (["{id}", "--pick", "zz"], "has candidates x, y"),
        (["{id}"], "exactly one of"),
        (["{id}", "--pick", "x", "--reject"], "exactly one of"),
        (["{id}", "--guide", "  "], "--guide needs the guidance text"),
    ],
)
def test_decide_usage_errors(cli, parked, args, message):
    args = [a.format(id=parked["id"]) for a in args]
    res = cli("decide", *args)
    assert res.returncode == 2 and message in res.stderr
    assert cli("inbox", "--json").json()["escalations"][0]["id"] == parked["id"]  # still waiting


def test_decide_twice_is_refused(cli, parked):
    assert cli("decide", parked["id"], "--reject").returncode == 1
    res = cli("decide", parked["id"], "--pick", "x")
    assert res.returncode == 2 and "already decided" in res.stderr


def test_already_decided_says_when_to_the_second_not_in_raw_iso(cli, parked):
    import re

    assert cli("decide", parked["id"], "--reject", "--by", "tester").returncode == 1
    [esc] = ledger_rows(parked["state"], "SELECT decided FROM escalations")
    readable = re.compile(r"at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    refused = " ".join(cli("decide", parked["id"], "--pick", "x").stderr.split())
    shown = " ".join(cli("show", parked["id"], "--no-diff").stdout.split())
    for text in (refused, shown):
        assert "by tester" in text and readable.search(text), text
        assert esc["decided"] not in text and "+00:00" not in text
    # Machines keep the ledger's ISO time, microseconds and offset included.
    assert cli("show", parked["id"], "--json").json()["decided"] == esc["decided"]


def test_show_and_decide_take_a_unique_start_of_the_id(cli, parked):
    full = parked["id"]
    shown = cli("show", full[:5], "--no-diff")
    assert shown.returncode == 0, shown.stderr
    assert f"crossreview decide {full} --pick" in shown.stdout  # the hint names the whole id
    assert cli("show", full[2:6], "--json").json()["id"] == full  # the "e-" may be left off
    res = cli("decide", full[:6], "--reject", "--json")
    assert res.returncode == 1, res.stderr
    assert res.json()["escalation"] == full
    [esc] = ledger_rows(parked["state"], "SELECT action, first_shown FROM escalations")
    assert esc["action"] == "reject" and esc["first_shown"]  # show marked the whole id as seen


def test_an_id_that_starts_several_or_none_is_refused_with_the_nearest(cli, parked):
    # A second run of the same task parks a second escalation beside the fixture's.
    again = cli(*parked["args"], env=parked["env"])
    assert again.returncode == 3, again.stderr
    first, second = parked["id"], again.json()["tasks"][0]["escalation"]
    shared = os.path.commonprefix([first, second])
    for command in (["show", shared], ["decide", shared, "--reject"]):
        res = cli(*command)
        said = " ".join(res.stderr.split())
        assert res.returncode == 2 and "starts 2 escalation ids" in said, said
        assert first in said and second in said and "`crossreview inbox` lists" in said
    typo = first[:-1] + ("0" if first[-1] != "0" else "1")
    for command in (["show", typo], ["decide", typo, "--reject"]):
        res = cli(*command)
        said = " ".join(res.stderr.split())
        assert res.returncode == 2 and f"no escalation {typo!r}" in said, said
        assert f"closest: {first}" in said and "`crossreview inbox` lists" in said
    assert {e["id"] for e in cli("inbox", "--json").json()["escalations"]} == {first, second}  # both still wait


def test_show_unknown_without_ledger(cli, tmp_path):
    res = cli("show", "e-123456")
    assert res.returncode == 2 and "no ledger" in res.stderr


def test_inbox_before_any_run_is_empty_and_says_where_it_looked(cli, tmp_path):
    res = cli("inbox")
    assert res.returncode == 0, res.stderr
    said = " ".join(res.stdout.split())
    assert "inbox empty: nothing has run here yet" in said and "no ledger at .crossreview/ledger.db" in said
    res = cli("inbox", "--json")
    assert res.returncode == 0 and res.json() == {"escalations": []}
    elsewhere = cli("inbox", "--state-dir", "st")
    assert elsewhere.returncode == 0 and "no ledger at st/ledger.db" in " ".join(elsewhere.stdout.split())
    # Reading the inbox leaves nothing behind: the next `run` is still the first.
    assert not (tmp_path / ".crossreview").exists() and not (tmp_path / "st").exists()


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_inbox_of_a_ledger_path_that_is_not_there_is_a_usage_error(cli, tmp_path, json_flag):
    res = cli("inbox", "--ledger", "team/ledgr.db", *json_flag)
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and res.stdout == ""
    assert "no ledger at team/ledgr.db: check the --ledger path (a typo?)" in said


@pytest.mark.parametrize("args", [["decide", "e-123456", "--reject"], ["resume", "r-123456"]])
def test_decide_and_resume_of_a_ledger_that_is_not_there_make_none(cli, tmp_path, args):
    """As inbox, show and stats say it (ledger_cli.open_ledger): a --ledger the user typed that is
    not there is likely a typo; without --ledger, nothing has run here yet. Neither makes a ledger."""
    res = cli(*args, "--ledger", "team/ledgr.db")
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr
    assert "no ledger at team/ledgr.db: check the --ledger path (a typo?)" in said
    assert "`crossreview run --ledger team/ledgr.db` makes a ledger there" in said
    res = cli(*args)
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and "no ledger at .crossreview/ledger.db: run `crossreview run` first" in said
    # Nothing made: no ledger (nor its folder) at the mistyped path or in the state dir.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_broken_plugin_stops_what_runs_the_pipeline_but_not_what_reads_the_ledger(cli, parked, suite, tmp_path):
    """README, "Writing a plugin": a human still sees the escalation waiting, with one warning line
    naming the broken plugin and its package; what runs agents, reviewers, policies or hooks exits 2."""
    from crossreview.cli import NEEDS_PLUGINS, WORKS_WITHOUT_PLUGINS, main

    site = fake_installed_plugin(tmp_path, "boom", BROKEN_PLUGINS["boom"][0])
    env = {**parked["env"], "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
    esc, run = parked["id"], parked["run"]
    reads = {  # command: (arguments, exit code, what its output says)
        "inbox": (["inbox", "--json"], 0, esc),
        "show": (["show", esc, "--no-diff"], 0, f"crossreview decide {esc} --pick"),
        "runs": (["runs", "--json"], 0, run),
        "stats": (["stats", "--json"], 0, '"escalations"'),
        "report": (["report"], 0, "wrote crossreview-report.html"),
        "export": (["export"], 0, run),
        "merge": (["merge", ".crossreview/ledger.db", "--ledger", "team.db"], 0, "+1 escalation"),
        "calibrate": (["calibrate"], 1, "no threshold passes"),
        "gc": (["gc"], 0, "removed 0 worktrees"),
    }
    stops = {
        "run": ["run", str(suite)], "validate": ["validate", str(suite)], "decide": ["decide", esc, "--reject"],
        "resume": ["resume", run], "gate": ["gate", "--base", "HEAD"], "plugins": ["plugins"],
    }
    # One rule, every command: a new command must say which side it is on.
    assert (set(reads), set(stops)) == (set(WORKS_WITHOUT_PLUGINS), set(NEEDS_PLUGINS))
    assert set(main.commands) == set(reads) | set(stops)
    for name, (args, code, says) in reads.items():
        res = cli(*args, env=env)
        warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        assert res.returncode == code and says in res.stdout, (name, res.stdout + res.stderr)
        assert len(warnings) == 1 and "Traceback" not in res.stderr, (name, res.stderr)
        [warning] = warnings
        assert "plugin 'boom'" in warning and "of the package crossreview-boom" in warning, warning
        assert "pip uninstall crossreview-boom" in warning and f"{name} needs no plugin and goes on" in warning
    for name, args in stops.items():
        res = cli(*args, env=env)
        said = " ".join(res.stderr.split())
        assert res.returncode == 2 and "plugin 'boom'" in said and "crossreview-boom" in said, (name, res.stderr)
        assert "warning:" not in said and "Traceback" not in said, (name, said)
    # decide stopped before it recorded anything: the escalation still waits.
    assert [e["id"] for e in cli("inbox", "--json").json()["escalations"]] == [esc]


def test_one_of_a_kind_is_counted_in_the_singular(cli, parked, tmp_path):
    """A ledger with one run, one task run and one escalation: "1 escalation", never "1 escalations"."""
    res = cli("report")
    assert res.returncode == 0, res.stderr
    assert "wrote crossreview-report.html (1 task run, 1 escalation)" in res.stdout
    html = (tmp_path / "crossreview-report.html").read_text()
    assert "1 suite run, 1 task run ·" in html and "1 of 1 task run escalated" in html
    res = cli("export", "-o", "runs.jsonl")
    assert res.returncode == 0 and "wrote 1 task run to runs.jsonl" in res.stderr, res.stderr
    res = cli("merge", ".crossreview/ledger.db", "--ledger", "team.db")
    assert res.returncode == 0, res.stderr
    assert "+1 run, +1 task run, +1 escalation, 0 decisions filled in" in res.stdout
    assert "merged 1 ledger into team.db" in res.stdout


def test_two_deciders_at_once_exactly_one_wins(parked, monkeypatch):
    # The window: `decide` read the escalation as open, then another process
    # decided it before this one recorded anything. The stale read is replayed
    # here; the ledger itself is the real, already decided one.
    from crossreview.ledger import Ledger
    from crossreview.models import HumanDecision
    from crossreview.runner import UsageError, decide_escalation

    ledger = Ledger(parked["state"] / "ledger.db")
    stale = ledger.get_escalation(parked["id"])
    assert stale["decided"] is None
    assert ledger.decide_escalation(parked["id"], HumanDecision(action="reject", by="first")) is True
    assert ledger.decide_escalation(parked["id"], HumanDecision(action="pick", pick="y", by="second")) is False
    real_get = Ledger.get_escalation
    reads = []

    def first_read_is_stale(self, esc_id):
        reads.append(esc_id)
        return dict(stale) if len(reads) == 1 else real_get(self, esc_id)

    monkeypatch.setattr(Ledger, "get_escalation", first_read_is_stale)
    with pytest.raises(UsageError, match="already decided \\(reject by first"):
        decide_escalation(parked["id"], HumanDecision(action="pick", pick="y", by="late"), state_dir=parked["state"])
    monkeypatch.undo()
    [esc] = ledger_rows(parked["state"], "SELECT * FROM escalations")
    assert (esc["action"], esc["pick"], esc["decided_by"]) == ("reject", None, "first")
    # The loser resumed nothing: no task run was recorded as accepted, no branch was made.
    [tr] = ledger_rows(parked["state"], "SELECT * FROM task_runs")
    assert tr["decision"] != "accepted" and tr["winner"] is None
    assert not [b for b in git_branches(parked["state"] / "repos" / "add.git") if b.startswith("crossreview/r-")]


def test_hints_carry_the_ledger_and_state_dir_the_run_used(cli, suite, tmp_path):
    make_task(suite)
    watch_agents(suite, tmp_path / "counts")
    agent = counting_agent(tmp_path / "agent.py", solution="def add(a, b):\n    return a - b\n")
    approve = approve_all_reviewer(tmp_path / "approve.py")
    ledger = tmp_path / "elsewhere" / "team.db"
    res = cli("run", str(suite), "--state-dir", str(tmp_path / "st"), "--ledger", str(ledger),
              "--agent", f"x=command:{{python}} {agent}", "--agent", f"y=command:{{python}} {agent}",
              "--reviewer", f"x={approve}", "--reviewer", "y=tests",
              env={"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")})
    assert res.returncode == 3, res.stderr
    flags = f"--state-dir {tmp_path / 'st'} --ledger {ledger}"
    text = " ".join(res.stdout.split())
    assert f"`crossreview inbox {flags}`" in text and "--pick" not in text
    esc = text.split("`crossreview show ")[1].split()[0]
    # The hint, run as written, finds the escalation.
    shown = cli("show", esc, "--state-dir", str(tmp_path / "st"), "--ledger", str(ledger))
    assert shown.returncode == 0, shown.stderr
    inbox = cli("inbox", "--state-dir", str(tmp_path / "st"), "--ledger", str(ledger))
    assert "waiting since" in inbox.stdout and f"next: crossreview show {esc} {flags}" in " ".join(inbox.stdout.split())

    # Tables show times in UTC and say so, converting a stored offset (a ledger written elsewhere);
    # JSON keeps the stored ISO text.
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(ledger)) as db, db:
        db.execute("UPDATE escalations SET created = '2026-11-25T04:31:44.123456+02:00'")
        db.execute("UPDATE runs SET started = '2026-11-25T04:30:00.500000+02:00'")
    where = ("--state-dir", str(tmp_path / "st"), "--ledger", str(ledger))
    inbox = cli("inbox", *where)
    assert "2026-11-25 02:31:44 UTC" in inbox.stdout and "04:31" not in inbox.stdout
    assert cli("inbox", "--json", *where).json()["escalations"][0]["created"] == "2026-11-25T04:31:44.123456+02:00"
    runs = cli("runs", *where)
    assert runs.returncode == 0, runs.stderr
    assert "2026-11-25 02:30:00 UTC" in runs.stdout and "04:30" not in runs.stdout
    assert cli("runs", "--json", *where).json()["runs"][0]["started"] == "2026-11-25T04:30:00.500000+02:00"


def test_show_never_passes_terminal_escapes_from_a_packet_through():
    import io

    from rich.console import Console

    from crossreview.packet import render_packet

    evil = "\x1b[2K\x1b[1A\x1b[32mAll checks passed\x1b]8;;http://x\x07link\x1b]8;;\x07\r"
    esc = {"id": "e-1", "run": "r-1", "decided": None, "packet": {
        "task": "t", "reason": "split " + evil, "policy": "unanimous", "disagreements": [evil],
        "candidates": [{"agent": "a", "status": "ok", "tests_passed": 1, "tests_total": 2, "failing_tests": [evil],
                        "files": ["x.py"], "lines_added": 1, "lines_removed": 0, "seconds": 1.0, "tampering": [],
                        "diff": f"+++ b/x.py\n+print('{evil}')\n"}],
        "verdicts": [{"reviewer": "b", "candidate": "a", "verdict": "approve", "confidence": 0.9,
                      "concerns": [evil, "\x1b[2J\x1b[H\x1b]52;c;Y3VybA==\x07"], "error": None}]}}
    buf = io.StringIO()
    render_packet(Console(file=buf, width=200, force_terminal=False), esc)
    out = buf.getvalue()
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\\x1b[2K" in out and "All checks passed" in out  # shown, harmlessly


def test_an_escalation_still_waiting_is_scored_against_holdout(cli, suite, tmp_path):
    # Holdout that a - b happens to pass: the pick x's reviewer made (y) passes it.
    make_task(suite, holdout={"test_more.py": "from calc import add\n\n\ndef test_zero():\n    assert add(5, 0) == 5\n"})
    watch_agents(suite, tmp_path / "counts")
    wrong = counting_agent(tmp_path / "agent.py", solution="def add(a, b):\n    return a - b\n")
    approve = approve_all_reviewer(tmp_path / "approve.py")
    res = cli("run", str(suite), "--agent", f"x=command:{{python}} {wrong}", "--agent", f"y=command:{{python}} {wrong}",
              "--reviewer", f"x={approve}", "--reviewer", "y=tests", "--json",
              env={"CROSSREVIEW_COUNT_DIR": str(tmp_path / "counts")})
    assert res.returncode == 3, res.stderr
    # Nobody has decided yet, and the figure is there already.
    q = cli("stats", "--json").json()["quality"]
    assert q["task_runs_with_holdout"] == 1
    assert (q["needless_escalations"]["count"], q["needless_escalations"]["of"]) == (1, 1)


def test_a_decision_made_without_show_has_unknown_minutes_not_zero(cli, parked):
    res = cli("decide", parked["id"], "--pick", "y", env=parked["env"])
    assert res.returncode == 0, res.stderr
    [esc] = ledger_rows(parked["state"], "SELECT first_shown, decided FROM escalations")
    assert esc["first_shown"] is None and esc["decided"]
    human = cli("stats", "--json").json()["human_time"]
    assert (human["decided"], human["unseen"], human["median_minutes"]) == (0, 1, None)
    assert (human["total_minutes"], human["minutes_per_100_task_runs"]) == (None, None)
    assert "1 decided unseen: time unknown" in " ".join(cli("stats").stdout.split())


def test_show_says_why_a_candidate_errored(cli, suite, tmp_path):
    """The packet's table says `error`; the human deciding needs the error itself (an agent CLI that
    is missing, a plugin that is no longer installed) to know whether that agent deserved a second try."""
    make_task(suite)
    (tmp_path / "crash.py").write_text("import sys\nprint(\"mycli: no model named 'small'\", file=sys.stderr)\n"
                                       "sys.exit(3)\n")
    (tmp_path / "reject.py").write_text('import json\nprint(json.dumps({"verdict": "reject", "concerns": ["no"]}))\n')
    res = cli("run", str(suite), "--agent", f"x=command:{{python}} {tmp_path / 'crash.py'}", "--agent", "y=oracle",
              "--reviewer", f"x=command:{{python}} {tmp_path / 'reject.py'}", "--reviewer", "y=tests", "--json")
    assert res.returncode == 3, res.stderr
    [task] = res.json()["tasks"]
    text = " ".join(cli("show", task["escalation"], "--no-diff").stdout.split())
    assert "x error: exited 3: mycli: no model named 'small'" in text, text


def test_show_hint_for_more_concerns_names_the_escalation(cli, suite, tmp_path):
    """`show` prints five concerns per verdict and points at the rest; the command it points at must run
    as printed (without the id, `crossreview show --json` is a usage error)."""
    make_task(suite)
    (tmp_path / "many.py").write_text(
        'import json\nprint(json.dumps({"verdict": "approve", "concerns": [f"concern {i}" for i in range(8)]}))\n')
    # An approval of a candidate that fails its tests: the tests and the reviewer disagree.
    res = cli("run", str(suite), "--agent", "x=noop", "--agent", "y=noop",
              "--reviewer", f"x=command:{{python}} {tmp_path / 'many.py'}", "--reviewer", "y=tests", "--json")
    assert res.returncode == 3, res.stderr
    [task] = res.json()["tasks"]
    eid = task["escalation"]
    text = " ".join(cli("show", eid, "--no-diff").stdout.split())
    assert f"... and 3 more concerns (crossreview show {eid} --json)" in text, text
    assert cli("show", eid, "--json").returncode == 0
