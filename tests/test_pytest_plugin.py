"""The pytest plugin in real pytest sessions (pytester subprocesses): collection,
outcomes, exit codes, -k/-m/-x, --junitxml, xdist, the fixture, and staying inert."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from contextlib import contextmanager

import pytest

from conftest import read_until, EXAMPLE_TASKS, approve_all_reviewer, cli_env, ledger_rows, make_task, write

pytest_plugins = ["pytester"]

EXAMPLE_DECISIONS = {
    "fizzbuzz": "accepted",
    "parse_duration": "rejected",
    "roman_numerals": "escalated",
    "version_compare": "accepted",
    "weekday_name": "accepted",
}


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester project whose child sessions run as CI would: no prompts, no inherited xdist state."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("COLUMNS", "200")
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(var, raising=False)
    return pytester


def examples(pytester: pytest.Pytester) -> None:
    shutil.copytree(EXAMPLE_TASKS, pytester.path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))


def run(pytester: pytest.Pytester, *args: str, timeout: float = 240) -> pytest.RunResult:
    """A real `pytest` child session (langsmith's plugin only slows it down)."""
    return pytester.runpytest_subprocess("-p", "no:langsmith_plugin", *args, timeout=timeout)


def outcomes(res: pytest.RunResult) -> dict[str, int]:
    found = res.parseoutcomes()
    found.pop("warnings", None)
    found.pop("warning", None)
    return found


def crossreview_cli(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crossreview", *args], cwd=pytester.path, env=cli_env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


# --- the example suite, serially: outcomes, the report, exit code, JUnit ----


def test_example_suite_outcomes_report_and_junit(project):
    examples(project)
    res = run(project, "--crossreview", "tasks/", "-v", "--junitxml=junit.xml")
    out = res.stdout.str()
    assert res.ret == 1, out  # a rejection outranks the escalation
    assert outcomes(res) == {"failed": 1, "passed": 3, "escalated": 1}
    res.stdout.re_match_lines([r"=+ 1 failed, 3 passed, 1 escalated in [\d.]+s"])
    res.stdout.fnmatch_lines([
        "tasks/fizzbuzz::crossreview PASSED*",
        "tasks/parse_duration::crossreview FAILED*",
        "tasks/roman_numerals::crossreview ESCALATED*",
        "tasks/version_compare::crossreview PASSED*",
        "tasks/weekday_name::crossreview PASSED*",
    ])
    # The task's own acceptance tests are the verifier's, not collected here.
    assert "test_fizzbuzz.py" not in out

    # The rejection reads as a report per candidate, not a traceback of ours.
    res.stdout.fnmatch_lines([
        "crossreview: parse_duration rejected (task run r-*/parse_duration)",
        "reason: no candidate passes its tests and no reviewer approves any*",
        "candidate alice (command:*replay.py alice): tests 0/18 passed; diff: no changes;*",
        "    failed test_durations::test_parses*NotImplementedError*",
        "  review by shortcut: reject (confidence 0.70)",
        "    - no change",
        "candidate shortcut (command:*shortcut.py): tests 1/18 passed; diff: 1 file +*",
        "  review by alice: reject (confidence 1.00)",
        "    - 1/18 tests pass",
    ])
    assert "Traceback" not in out and "crossreview/runner.py" not in out and "pytest_plugin.py" not in out
    # Escalations are listed with what to run next; costs stand beside the counts.
    res.stdout.fnmatch_lines([
        "*1 waiting for a human*",
        "tasks/roman_numerals::crossreview: e-* *",
        "decide with `crossreview show e-*",
        "crossreview: 5 task runs: 3 accepted, 1 rejected, 1 escalated · tokens 0 · cost * · run r-* · ledger *",
    ])

    suite = ET.parse(project.path / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("5", "1", "1", "0")
    cases = {c.get("classname"): c for c in suite.iter("testcase")}
    assert set(cases) == {f"tasks.{t}" for t in EXAMPLE_DECISIONS}
    props = {k: {p.get("name"): p.get("value") for p in c.iter("property")} for k, c in cases.items()}
    runs = set()
    for task, decision in EXAMPLE_DECISIONS.items():
        p = props[f"tasks.{task}"]
        assert cases[f"tasks.{task}"].get("name") == "crossreview"
        assert p["crossreview.decision"] == decision
        assert p["crossreview.tokens"] == "0"
        assert re.fullmatch(r"\d+\.\d{6}|unknown", p["crossreview.cost"]), p
        assert p["crossreview.task_run"] == f"{p['crossreview.run']}/{task}"
        runs.add(p["crossreview.run"])
    assert len(runs) == 1  # one session, one run
    assert props["tasks.fizzbuzz"]["crossreview.winner"] == "alice"
    assert props["tasks.parse_duration"]["crossreview.winner"] == ""
    esc = props["tasks.roman_numerals"]["crossreview.escalation"]
    assert esc.startswith("e-") and props["tasks.fizzbuzz"]["crossreview.escalation"] == ""
    # escalated: neither a pass nor a failure to JUnit readers.
    roman = cases["tasks.roman_numerals"]
    assert roman.find("failure") is None and esc in roman.find("skipped").get("message")
    assert cases["tasks.parse_duration"].find("failure") is not None

    # One run in the ledger, parked for the human, with the session's five task runs.
    [row] = ledger_rows(project.path / ".crossreview", "SELECT id, status, config FROM runs")
    assert row["id"] == runs.pop() and row["status"] == "waiting"
    assert len(json.loads(row["config"])["tasks"]) == 5
    decided = {r["task"]: r["decision"] for r in ledger_rows(project.path / ".crossreview", "SELECT * FROM task_runs")}
    assert decided == EXAMPLE_DECISIONS


# --- xdist --------------------------------------------------------------------


def test_xdist_spreads_tasks_over_workers_sharing_one_run_and_ledger(project):
    examples(project)
    res = run(project, "--crossreview", "tasks/", "-n", "2", "-v", "--junitxml=junit.xml")
    out = res.stdout.str()
    assert res.ret == 1, out
    assert outcomes(res) == {"failed": 1, "passed": 3, "escalated": 1}
    junit = ET.parse(project.path / "junit.xml").getroot().find("testsuite")
    assert (junit.get("failures"), junit.get("skipped")) == ("1", "1")
    assert {c.get("classname").removeprefix("tasks."): {p.get("name"): p.get("value") for p in c.iter("property")}
            ["crossreview.decision"] for c in junit.iter("testcase")} == EXAMPLE_DECISIONS
    assert set(re.findall(r"^\[(gw\d+)\] \[ *\d+%\] (?:PASSED|FAILED|ESCALATED) tasks/", out, re.M)) == {"gw0", "gw1"}
    res.stdout.fnmatch_lines(["*ESCALATED tasks/roman_numerals::crossreview*"])

    state = project.path / ".crossreview"
    [row] = ledger_rows(state, "SELECT id, status FROM runs")
    assert row["status"] == "waiting"
    task_runs = ledger_rows(state, "SELECT id, run, task, decision, status FROM task_runs")
    assert {r["task"]: r["decision"] for r in task_runs} == EXAMPLE_DECISIONS
    assert {r["run"] for r in task_runs} == {row["id"]} and len({r["id"] for r in task_runs}) == 5
    # Every worktree was removed: no worker left one behind or took another's.
    assert not any((state / "worktrees").glob("r-*"))

    # The parked run is a real crossreview run: the CLI decides it in another process.
    inbox = json.loads(crossreview_cli(project, "inbox", "--json").stdout)["escalations"]
    assert [e["task"] for e in inbox] == ["roman_numerals"] and inbox[0]["run"] == row["id"]
    decided = crossreview_cli(project, "decide", inbox[0]["id"], "--pick", "alice")
    assert decided.returncode == 0, decided.stderr
    assert ledger_rows(state, "SELECT status FROM runs")[0]["status"] == "finished"


# --- selection: -k, -m, -x, node ids ------------------------------------------


def test_k_selects_by_task_id_and_escalation_alone_exits_3(project):
    examples(project)
    res = run(project, "--crossreview", "tasks/", "-k", "roman_numerals or fizzbuzz")
    assert res.ret == 3, res.stdout.str()
    assert outcomes(res) == {"passed": 1, "escalated": 1, "deselected": 3}
    res.stdout.re_match_lines([r"^tasks/fizzbuzz \. +\[ 50%\]$", r"^tasks/roman_numerals H +\[100%\]$"])  # a letter of its own
    res.stdout.fnmatch_lines(["*1 waiting for a human*", "tasks/roman_numerals::crossreview: e-*"])


def test_m_selects_by_tag_with_strict_markers(project):
    examples(project)
    res = run(project, "--crossreview", "tasks/", "-m", "easy and not stub", "--strict-markers", "--collect-only", "-q")
    assert res.ret == 0, res.stdout.str()
    assert [line for line in res.outlines if "::" in line] == ["tasks/weekday_name::crossreview"]
    assert "1/5 tests collected (4 deselected)" in res.stdout.str()
    res = run(project, "--crossreview", "tasks/", "-m", "stub", "--collect-only", "-q")
    assert res.ret == 0
    assert [line for line in res.outlines if "::" in line] == [
        "tasks/fizzbuzz::crossreview", "tasks/parse_duration::crossreview", "tasks/roman_numerals::crossreview",
    ]
    # "crossreview" marks every task item, so a mixed run can leave them out.
    res = run(project, "--crossreview", "tasks/", "-m", "not crossreview", "--collect-only", "-q")
    assert res.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_x_stops_at_the_first_rejection_and_the_run_can_be_resumed(project):
    examples(project)
    res = run(project, "--crossreview", "tasks/", "-x")
    assert res.ret == 1
    assert outcomes(res) == {"failed": 1, "passed": 1}
    assert "stopping after 1 failures" in res.stdout.str()
    state = project.path / ".crossreview"
    [row] = ledger_rows(state, "SELECT id, status FROM runs")
    assert row["status"] == "interrupted"  # three tasks never ran: `crossreview resume` runs them
    assert sorted(r["task"] for r in ledger_rows(state, "SELECT task FROM task_runs")) == ["fizzbuzz", "parse_duration"]


# --- configuration: ini keys, broken tasks, ids, usage errors -----------------


def test_ini_turns_it_on_and_sets_agents_broken_task_fails_readably(project):
    suite = project.path / "suite"
    make_task(suite, "good")
    make_task(suite, "folder_x", toml='version = "1.0"\n[task]\nid = "add_numbers"\ntags = ["quick"]\n')
    bad = make_task(suite, "bad")
    (bad / "task.toml").write_text('[verifier]\ncomand = "pytest"\n')
    write(project.path / "pytest.ini", "[pytest]\ncrossreview = true\ncrossreview_agents =\n    good=oracle\n    lazy=noop\n")

    res = run(project, "suite", "-v")
    out = res.stdout.str()
    assert res.ret == 1, out
    assert outcomes(res) == {"failed": 1, "passed": 2}
    res.stdout.fnmatch_lines([
        "suite/bad::crossreview FAILED*",
        "suite/folder_x::crossreview PASSED*",
        "suite/good::crossreview PASSED*",
    ])
    res.stdout.fnmatch_lines([
        "crossreview: the task folder */suite/bad cannot be loaded:",
        "  */suite/bad/task.toml: verifier.comand: unknown key 'comand'; expected one of: command, timeout_sec, tests_visible",
    ])
    # pytest counts the broken folder as a failure; crossreview's own line counts it as the CLI does.
    res.stdout.fnmatch_lines(["crossreview: 2 task runs: 2 accepted, 0 rejected, 0 escalated, 1 broken · tokens 0 · *"])
    cli_run = crossreview_cli(project, "run", "suite", "--agent", "good=oracle", "--agent", "lazy=noop",
                              "--state-dir", str(project.path / "cli-state"))  # not the session's ledger
    assert "2 task runs: 2 accepted, 0 rejected, 0 escalated, 1 broken ·" in cli_run.stdout, cli_run.stdout + cli_run.stderr
    state = project.path / ".crossreview"
    assert {r["agent"] for r in ledger_rows(state, "SELECT agent FROM candidates")} == {"good", "lazy"}
    assert {r["task"]: r["winner"] for r in ledger_rows(state, "SELECT task, winner FROM task_runs")} == {
        "good": "good", "add_numbers": "good",
    }

    # -k knows the task id even when the folder is named otherwise.
    res = run(project, "suite", "-k", "add_numbers", "--collect-only", "-q")
    assert [line for line in res.outlines if "::" in line] == ["suite/folder_x::crossreview"]

    # The node id a report prints can be passed back to rerun that one task.
    res = run(project, "suite/good::crossreview", "--crossreview-agent", "noop")
    assert res.ret == 1 and outcomes(res) == {"failed": 1}  # the flag wins over the ini
    res.stdout.fnmatch_lines(["crossreview: good rejected*", "candidate a (noop): tests 0/2 passed*"])
    res.stdout.fnmatch_lines(["crossreview: 1 task run: 0 accepted, 1 rejected, 0 escalated · tokens 0 · *"])


def test_bad_agent_is_a_usage_error_and_nothing_runs(project):
    make_task(project.path / "suite")
    res = run(project, "--crossreview", "suite", "--crossreview-agent", "bogus")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "crossreview: unknown agent 'bogus'" in res.stderr.str()
    assert not (project.path / ".crossreview" / "ledger.db").exists()


# --- inert unless asked for -----------------------------------------------------


def test_plain_run_collects_nothing_extra_and_imports_nothing_heavy(project):
    make_task(project.path / "suite", tests={"test_add.py": "def test_trivial():\n    assert True\n"})
    write(project.path / "test_plain.py", (
        "import sys\n\n"
        "def test_plugin_loaded_but_nothing_heavy():\n"
        "    assert 'crossreview.pytest_plugin' in sys.modules\n"
        "    heavy = ['litellm', 'langgraph', 'crossreview.runner', 'crossreview.tasks', 'git']\n"
        "    assert [m for m in heavy if m in sys.modules] == []\n"
    ))
    res = run(project, "-v")
    assert res.ret == 0, res.stdout.str()
    assert outcomes(res) == {"passed": 2}  # this file and the task folder's tests, as pytest always did
    assert "::crossreview" not in res.stdout.str()
    assert not (project.path / ".crossreview").exists()
    # Collection is exactly what it is with the plugin blocked.
    with_plugin = run(project, "--collect-only", "-q").outlines
    without = run(project, "--collect-only", "-q", "-p", "no:crossreview").outlines
    strip = [re.sub(r" in [\d.]+s", "", line) for line in with_plugin]
    assert strip == [re.sub(r" in [\d.]+s", "", line) for line in without]


# --- the fixture ----------------------------------------------------------------


def test_fixture_runs_an_example_task_and_returns_the_typed_result(project):
    examples(project)
    write(project.path / "test_with_fixture.py", '''
from crossreview.runner import TaskOutcome


def test_fizzbuzz_is_solvable(crossreview):
    result = crossreview.run("tasks/fizzbuzz", agents=["oracle", "noop"])
    assert isinstance(result, TaskOutcome)
    assert result.decision == "accepted" and result.winner == "a"
    assert result.escalation is None and result.branch == f"crossreview/{result.run}/fizzbuzz"
    assert [c.agent for c in result.candidates] == ["a", "b"]
    assert result.candidate("a").tests.all_passed and result.candidate("a").tests.total == 16
    assert result.candidate("b").tests.passed == 0 and result.candidate("b").diff == ""
    [on_b] = result.verdicts_on("b")
    assert (on_b.reviewer, on_b.verdict) == ("a", "reject") and "0/16 tests pass" in on_b.concerns
    assert [v.verdict for v in result.verdicts_on("a")] == ["approve"]
    assert result.tokens == 0 and result.cost == 0.0
    assert crossreview.ledger.is_file()


def test_suite_config_agents_and_an_escalation(crossreview):
    result = crossreview.run("tasks/roman_numerals")
    assert result.decision == "escalated" and result.escalation.startswith("e-")
    assert [c.agent for c in result.candidates] == ["alice", "shortcut"]
    assert result.candidate("alice").tests.passed == 11
''')
    res = run(project, "test_with_fixture.py", "-v")
    assert res.ret == 0, res.stdout.str()
    assert outcomes(res) == {"passed": 2}
    assert not (project.path / ".crossreview").exists()  # each test's ledger lives under its tmp dir


# --- a human at the terminal ----------------------------------------------------


def test_with_s_in_a_terminal_the_escalation_is_asked_on_the_spot(project):
    suite = project.path / "suite"
    make_task(suite)
    approve = approve_all_reviewer(project.path / "approve.py")
    env = cli_env()
    env.pop("CI")
    env["TERM"] = "dumb"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:langsmith_plugin", "-s", "--crossreview", "suite",
         "--crossreview-agent", "noop", "--crossreview-agent", "noop",
         "--crossreview-reviewer", f"a={approve}", "--crossreview-reviewer", "b=tests"],
        cwd=project.path, env=env, stdin=slave, stdout=slave, stderr=slave,
    )
    os.close(slave)
    buf = bytearray()
    try:
        read_until(master, b"decision", buf)  # a split: the terminal channel shows the packet and asks
        assert b"pick a | pick b | reject | guide | skip" in buf
        os.write(master, b"pick b\n")
        read_until(master, b"passed in", buf)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, buf.decode(errors="replace")[-2000:]
    [tr] = ledger_rows(project.path / ".crossreview", "SELECT decision, winner FROM task_runs")
    assert (tr["decision"], tr["winner"]) == ("accepted", "b")


def test_lf_reruns_the_failed_task_and_the_run_is_finished_not_interrupted(project):
    """--lf deselects in a hook wrapper after every modifyitems: the run is the one task rerun."""
    examples(project)
    res = project.runpytest_subprocess("-p", "no:langsmith_plugin", "--crossreview", "tasks/", "-k",
                                       "parse_duration or fizzbuzz", timeout=240)
    assert res.ret == 1 and outcomes(res) == {"failed": 1, "passed": 1, "deselected": 3}
    res = project.runpytest_subprocess("-p", "no:langsmith_plugin", "--crossreview", "tasks/", "--lf", timeout=240)
    assert res.ret == 1 and outcomes(res) == {"failed": 1, "deselected": 4}, res.stdout.str()
    state = project.path / ".crossreview"
    rows = ledger_rows(state, "SELECT id, status, config FROM runs ORDER BY started")
    assert len(rows) == 2
    last = rows[-1]
    assert json.loads(last["config"])["tasks"] == [str(project.path / "tasks" / "parse_duration")]
    assert last["status"] == "finished"  # not "interrupted": nothing is left to resume


def test_x_under_xdist_exits_1_not_2(project):
    """xdist stops at --maxfail by raising an interrupt (pytest's 2, crossreview's "usage error"): it is a failure."""
    suite = project.path / "suite"
    make_task(suite, "one")
    make_task(suite, "two")
    res = run(project, "--crossreview", "suite", "--crossreview-agent", "noop", "-n", "2", "-x")
    assert "stopping after 1 failures" in res.stdout.str()
    assert res.ret == 1, res.stdout.str()
    [row] = ledger_rows(project.path / ".crossreview", "SELECT status FROM runs")
    assert row["status"] == "interrupted"


@contextmanager
def spender_server(monkeypatch):
    """A model server whose agent never finishes: it lists files, 1100 tokens a call, until a cap stops it."""
    from fake_openai import FakeOpenAI, llm_env, tools

    server = FakeOpenAI().start()
    try:
        server.on("spender", [tools(("list_files", {}), prompt_tokens=1000, completion_tokens=100)])
        for key, value in llm_env(server).items():
            monkeypatch.setenv(key, value)
        yield server
    finally:
        server.stop()


def test_a_task_run_a_budget_cap_cut_short_fails_naming_the_cap(project, monkeypatch):
    # x runs into the suite config's --max-task-tokens; y's candidate is accepted without x's attempt.
    # `crossreview run` exits 1 for that (runner.exit_code_for); under pytest it passed, a green test for
    # a task run that did not do its work. It fails now, and the report says which cap stopped it.
    with spender_server(monkeypatch):
        suite = project.path / "suite"
        make_task(suite, "capped")
        write(suite / "crossreview.toml", 'agents = ["x=llm:openai/spender", "y=oracle"]\nreviewers = ["tests"]\n'
                                          "max_task_tokens = 3000\n")
        res = run(project, "--crossreview", "suite", "--junitxml=junit.xml")
    out = res.stdout.str()
    assert res.ret == 1, out
    assert outcomes(res) == {"failed": 1}, out
    flat = " ".join(out.split())
    assert "crossreview: capped accepted, stopped by --max-task-tokens 3000 (task run" in flat, out
    assert "stopped: budget exhausted: --max-task-tokens 3000 for the task run reached (3300 tokens spent)" in flat, out
    assert "crossreview: 1 task run: 1 accepted, 0 rejected, 0 escalated, 1 stopped by a budget cap" in flat, out
    props = {p.get("name"): p.get("value") for p in ET.parse(project.path / "junit.xml").iter("property")}
    assert props["crossreview.decision"] == "accepted"
    assert props["crossreview.stopped"].startswith("budget exhausted: --max-task-tokens 3000"), props


def test_an_escalated_task_run_a_budget_cap_cut_short_fails_not_escalated(project, monkeypatch):
    # Escalated and cut short: `crossreview run` exits 1 (a stop outranks a wait, as a rejection does),
    # so pytest shows it as FAILED, not H, and exits 1; it still waits in the inbox for a human.
    with spender_server(monkeypatch):
        suite = project.path / "suite"
        make_task(suite, "capped")
        # y solves and adds a conftest.py: never accepted automatically, so the task run escalates.
        writer = write(suite / "_agents" / "with_conftest.py",
                       "import pathlib\npathlib.Path('calc.py').write_text('def add(a, b):\\n    return a + b\\n')\n"
                       "pathlib.Path('conftest.py').write_text('# collected before the tests\\n')\n")
        write(suite / "crossreview.toml", f'agents = ["x=llm:openai/spender", "y=command:{{python}} {writer}"]\n'
                                          'reviewers = ["tests"]\nmax_task_tokens = 3000\n')
        res = run(project, "--crossreview", "suite")
    out = res.stdout.str()
    assert res.ret == 1, out
    assert outcomes(res) == {"failed": 1}, out
    flat = " ".join(out.split())
    assert "crossreview: capped escalated, stopped by --max-task-tokens 3000 (task run" in flat, out
    assert "1 waiting for a human" in flat, out  # still in the inbox: a human can decide it


def test_the_fixture_says_when_a_budget_cap_cut_the_task_run_short(project, monkeypatch):
    # The fixture's TaskOutcome had no word for it: `decision == "accepted"` was all a test could check.
    with spender_server(monkeypatch):
        make_task(project.path / "suite", "capped")
        write(project.path / "suite" / "crossreview.toml",
              'agents = ["x=llm:openai/spender", "y=oracle"]\nreviewers = ["tests"]\nmax_task_tokens = 3000\n')
        write(project.path / "test_capped.py", '''
def test_capped(crossreview):
    result = crossreview.run("suite/capped")
    assert (result.decision, result.winner) == ("accepted", "y")
    assert result.stopped.startswith("budget exhausted: --max-task-tokens 3000 for the task run reached")


def test_uncapped(crossreview):
    assert crossreview.run("suite/capped", agents=["oracle", "noop"]).stopped is None
''')
        res = run(project, "test_capped.py", "-v")
    assert res.ret == 0, res.stdout.str()
    assert outcomes(res) == {"passed": 2}
